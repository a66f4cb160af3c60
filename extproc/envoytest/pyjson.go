package envoytest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"math/big"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// A model of Python's json.loads(bytes) (CPython 3.12, Lib/json/__init__.py
// and Modules/_json.c, https://docs.python.org/3/library/json.html), the
// way inference servers built on Starlette read request bodies
// (Request.json() is json.loads(await request.body())). It is the lenient
// reader distillguard's strict one is tested against: every body the
// strict reader accepts must read the same here, and every body a test
// forwards is judged by what this reading makes of it. pyjson_test.go
// checks the model against the real python3 where one is installed.
//
// Values: PyObject (a dict: members in insertion order, a repeated name
// keeping its first position and its last value), []any (a list), PyStr (a
// str: code points, surrogates included, in generalized UTF-8), PyInt
// (*big.Int), float64 (float, inf included), bool, nil (None).

// PyStr is a Python str: its code points encoded as UTF-8, surrogates
// included (ED A0 80 ... ED BF BF), so that two strs are equal exactly when
// their code points are.
type PyStr string

// PyInt is a Python int.
type PyInt struct{ *big.Int }

// PyObject is a Python dict read from a JSON object.
type PyObject struct {
	Keys   []PyStr
	Values map[PyStr]any
}

// Get returns the value of key and whether it is present.
func (o *PyObject) Get(key string) (any, bool) {
	v, ok := o.Values[PyStr(key)]
	return v, ok
}

// PyError is why json.loads raised (JSONDecodeError, UnicodeDecodeError,
// ValueError for an integer of more than 4300 digits, RecursionError).
type PyError struct{ Msg string }

func (e *PyError) Error() string { return "python: " + e.Msg }

// pyMaxDepth is where CPython's C scanner raises RecursionError: the
// default recursion limit is 1000, less the frames below json.loads.
const pyMaxDepth = 990

// pyMaxIntDigits is sys.get_int_max_str_digits() (CPython 3.11+): int()
// of a longer decimal string raises ValueError.
const pyMaxIntDigits = 4300

// PyLoads reads b as json.loads(b) does.
func PyLoads(b []byte) (any, error) {
	s, err := pyDecodeBytes(b)
	if err != nil {
		return nil, err
	}
	p := pyParser{s: s}
	p.ws()
	v, err := p.value(0)
	if err != nil {
		return nil, err
	}
	p.ws()
	if p.i != len(p.s) {
		return nil, &PyError{"Extra data"}
	}
	return v, nil
}

// pyDecodeBytes is json.detect_encoding followed by
// bytes.decode(encoding, 'surrogatepass'): the result is the text as code
// points (a []rune, surrogates kept).
func pyDecodeBytes(b []byte) ([]rune, error) {
	enc := "utf-8"
	switch {
	case bytes.HasPrefix(b, []byte{0, 0, 0xfe, 0xff}) || bytes.HasPrefix(b, []byte{0xff, 0xfe, 0, 0}):
		enc = "utf-32"
	case bytes.HasPrefix(b, []byte{0xfe, 0xff}) || bytes.HasPrefix(b, []byte{0xff, 0xfe}):
		enc = "utf-16"
	case bytes.HasPrefix(b, []byte{0xef, 0xbb, 0xbf}):
		enc = "utf-8-sig"
	case len(b) >= 4:
		if b[0] == 0 {
			if b[1] != 0 {
				enc = "utf-16-be"
			} else {
				enc = "utf-32-be"
			}
		} else if b[1] == 0 {
			if b[2] != 0 || b[3] != 0 {
				enc = "utf-16-le"
			} else {
				enc = "utf-32-le"
			}
		}
	case len(b) == 2:
		if b[0] == 0 {
			enc = "utf-16-be"
		} else if b[1] == 0 {
			enc = "utf-16-le"
		}
	}
	switch enc {
	case "utf-8-sig":
		return decodeUTF8Pass(b[3:])
	case "utf-8":
		return decodeUTF8Pass(b)
	case "utf-16", "utf-16-be", "utf-16-le":
		order := binary.ByteOrder(binary.BigEndian)
		if enc == "utf-16-le" || enc == "utf-16" && b[0] == 0xff {
			order = binary.LittleEndian
		}
		if enc == "utf-16" {
			b = b[2:]
		}
		if len(b)%2 != 0 {
			return nil, &PyError{"UnicodeDecodeError: truncated data"}
		}
		u := make([]uint16, len(b)/2)
		for i := range u {
			u[i] = order.Uint16(b[2*i:])
		}
		// surrogatepass keeps lone surrogates; pairs combine.
		var out []rune
		for i := 0; i < len(u); i++ {
			r := rune(u[i])
			if utf16.IsSurrogate(r) && r < 0xdc00 && i+1 < len(u) && u[i+1] >= 0xdc00 && u[i+1] <= 0xdfff {
				out = append(out, utf16.DecodeRune(r, rune(u[i+1])))
				i++
				continue
			}
			out = append(out, r)
		}
		return out, nil
	default: // utf-32
		order := binary.ByteOrder(binary.BigEndian)
		if enc == "utf-32-le" || enc == "utf-32" && b[0] == 0xff {
			order = binary.LittleEndian
		}
		if enc == "utf-32" {
			b = b[4:]
		}
		if len(b)%4 != 0 {
			return nil, &PyError{"UnicodeDecodeError: truncated data"}
		}
		out := make([]rune, len(b)/4)
		for i := range out {
			v := order.Uint32(b[4*i:])
			if v > 0x10ffff {
				return nil, &PyError{"UnicodeDecodeError: code point not in range"}
			}
			out[i] = rune(v)
		}
		return out, nil
	}
}

// decodeUTF8Pass decodes UTF-8 with Python's 'surrogatepass' handler:
// well-formed UTF-8 plus the encoded surrogates ED A0 80 to ED BF BF.
func decodeUTF8Pass(b []byte) ([]rune, error) {
	out := make([]rune, 0, len(b))
	for i := 0; i < len(b); {
		if b[i] < utf8.RuneSelf {
			out = append(out, rune(b[i]))
			i++
			continue
		}
		if b[i] == 0xed && i+2 < len(b) && b[i+1] >= 0xa0 && b[i+1] <= 0xbf && b[i+2]&0xc0 == 0x80 {
			out = append(out, rune(0xd000|rune(b[i+1]&0x3f)<<6|rune(b[i+2]&0x3f)))
			i += 3
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return nil, &PyError{"UnicodeDecodeError: invalid utf-8 at " + strconv.Itoa(i)}
		}
		out = append(out, r)
		i += n
	}
	return out, nil
}

// encodeStr is a code point sequence as a PyStr (surrogates encoded like
// any other code point).
func encodeStr(rs []rune) PyStr {
	var b []byte
	for _, r := range rs {
		if utf16.IsSurrogate(r) {
			b = append(b, 0xed, byte(0x80|(r>>6)&0x3f), byte(0x80|r&0x3f))
			continue
		}
		b = utf8.AppendRune(b, r)
	}
	return PyStr(b)
}

type pyParser struct {
	s []rune
	i int
}

func (p *pyParser) ws() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t' || p.s[p.i] == '\n' || p.s[p.i] == '\r') {
		p.i++
	}
}

func (p *pyParser) has(w string) bool {
	if len(p.s)-p.i < len(w) {
		return false
	}
	for k, c := range []byte(w) {
		if p.s[p.i+k] != rune(c) {
			return false
		}
	}
	return true
}

func errExpecting() error { return &PyError{"Expecting value"} }

func (p *pyParser) value(depth int) (any, error) {
	if p.i >= len(p.s) {
		return nil, errExpecting()
	}
	switch c := p.s[p.i]; {
	case c == '"':
		p.i++
		return p.str()
	case c == '{':
		if depth >= pyMaxDepth {
			return nil, &PyError{"RecursionError"}
		}
		return p.object(depth + 1)
	case c == '[':
		if depth >= pyMaxDepth {
			return nil, &PyError{"RecursionError"}
		}
		return p.array(depth + 1)
	case c == 'n' && p.has("null"):
		p.i += 4
		return nil, nil
	case c == 't' && p.has("true"):
		p.i += 4
		return true, nil
	case c == 'f' && p.has("false"):
		p.i += 5
		return false, nil
	case c == 'N' && p.has("NaN"):
		p.i += 3
		return math.NaN(), nil
	case c == 'I' && p.has("Infinity"):
		p.i += 8
		return math.Inf(1), nil
	case c == '-' && p.has("-Infinity"):
		p.i += 9
		return math.Inf(-1), nil
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	}
	return nil, errExpecting()
}

// number matches (-?(?:0|[1-9]\d*))(\.\d+)?([eE][-+]?\d+)? (NUMBER_RE):
// an int when there is no fraction or exponent, else float(text).
func (p *pyParser) number() (any, error) {
	start := p.i
	digits := func() int {
		n := 0
		for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	if p.s[p.i] == '-' {
		p.i++
	}
	if p.i >= len(p.s) || p.s[p.i] < '0' || p.s[p.i] > '9' {
		p.i = start
		return nil, errExpecting()
	}
	if p.s[p.i] == '0' {
		p.i++
	} else {
		digits()
	}
	intEnd := p.i
	isFloat := false
	if p.i+1 < len(p.s) && p.s[p.i] == '.' && p.s[p.i+1] >= '0' && p.s[p.i+1] <= '9' {
		p.i++
		digits()
		isFloat = true
	}
	if p.i < len(p.s) && (p.s[p.i] == 'e' || p.s[p.i] == 'E') {
		save := p.i
		p.i++
		if p.i < len(p.s) && (p.s[p.i] == '+' || p.s[p.i] == '-') {
			p.i++
		}
		if digits() == 0 {
			p.i = save
		} else {
			isFloat = true
		}
	}
	text := string(p.s[start:p.i])
	if !isFloat {
		_ = intEnd
		if len(text) > pyMaxIntDigits {
			return nil, &PyError{"ValueError: Exceeds the limit (4300 digits) for integer string conversion"}
		}
		n, _ := new(big.Int).SetString(text, 10)
		return PyInt{n}, nil
	}
	// float(): correctly rounded, overflow to inf, underflow to 0.
	f, err := strconv.ParseFloat(text, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return nil, &PyError{"float: " + err.Error()}
	}
	return f, nil
}

func isHexRune(r rune) bool {
	return r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F'
}

func (p *pyParser) hex4() (rune, bool) {
	if len(p.s)-p.i < 4 {
		return 0, false
	}
	var v rune
	for k := range 4 {
		c := p.s[p.i+k]
		if !isHexRune(c) {
			return 0, false
		}
		d, _ := strconv.ParseUint(string(c), 16, 8)
		v = v<<4 | rune(d)
	}
	p.i += 4
	return v, true
}

// str is scanstring with strict=True, after the opening quote.
func (p *pyParser) str() (PyStr, error) {
	var out []rune
	for {
		if p.i >= len(p.s) {
			return "", &PyError{"Unterminated string"}
		}
		c := p.s[p.i]
		p.i++
		switch {
		case c == '"':
			return encodeStr(out), nil
		case c < 0x20:
			return "", &PyError{"Invalid control character"}
		case c != '\\':
			out = append(out, c)
			continue
		}
		if p.i >= len(p.s) {
			return "", &PyError{"Unterminated string"}
		}
		e := p.s[p.i]
		p.i++
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := p.hex4()
			if !ok {
				return "", &PyError{"Invalid \\uXXXX escape"}
			}
			if r >= 0xd800 && r <= 0xdbff && p.i+1 < len(p.s) && p.s[p.i] == '\\' && p.s[p.i+1] == 'u' {
				save := p.i
				p.i += 2
				if r2, ok := p.hex4(); ok && r2 >= 0xdc00 && r2 <= 0xdfff {
					out = append(out, utf16.DecodeRune(r, r2))
					continue
				}
				p.i = save
			}
			out = append(out, r)
		default:
			return "", &PyError{"Invalid \\escape"}
		}
	}
}

func (p *pyParser) object(depth int) (any, error) {
	p.i++ // '{'
	o := &PyObject{Values: map[PyStr]any{}}
	p.ws()
	if p.i < len(p.s) && p.s[p.i] == '}' {
		p.i++
		return o, nil
	}
	for {
		if p.i >= len(p.s) || p.s[p.i] != '"' {
			return nil, &PyError{"Expecting property name enclosed in double quotes"}
		}
		p.i++
		k, err := p.str()
		if err != nil {
			return nil, err
		}
		p.ws()
		if p.i >= len(p.s) || p.s[p.i] != ':' {
			return nil, &PyError{"Expecting ':' delimiter"}
		}
		p.i++
		p.ws()
		v, err := p.value(depth)
		if err != nil {
			return nil, err
		}
		if _, seen := o.Values[k]; !seen {
			o.Keys = append(o.Keys, k)
		}
		o.Values[k] = v // the last one wins, in the first one's place
		p.ws()
		if p.i < len(p.s) && p.s[p.i] == '}' {
			p.i++
			return o, nil
		}
		if p.i >= len(p.s) || p.s[p.i] != ',' {
			return nil, &PyError{"Expecting ',' delimiter"}
		}
		p.i++
		p.ws()
	}
}

func (p *pyParser) array(depth int) (any, error) {
	p.i++ // '['
	out := []any{}
	p.ws()
	if p.i < len(p.s) && p.s[p.i] == ']' {
		p.i++
		return out, nil
	}
	for {
		v, err := p.value(depth)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
		p.ws()
		if p.i < len(p.s) && p.s[p.i] == ']' {
			p.i++
			return out, nil
		}
		if p.i >= len(p.s) || p.s[p.i] != ',' {
			return nil, &PyError{"Expecting ',' delimiter"}
		}
		p.i++
		p.ws()
	}
}
