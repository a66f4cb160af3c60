package mutate

import (
	"encoding/binary"
	"errors"
	"math"
	"strconv"
	"unsafe"
)

// maxDepth bounds the nesting of arrays and objects the scanner accepts.
// OpenAI-compatible bodies nest at most ~8 levels; the bound keeps recursion
// (and the stack) small for hostile input.
const maxDepth = 128

// ErrNotJSON reports a document that is not a JSON object; it was passed
// through untouched.
var ErrNotJSON = errors.New("mutate: not a JSON object")

// Scanner errors. They are wrapped in ErrNotJSON by the exported functions.
var (
	errSyntax    = errors.New("invalid JSON")
	errDepth     = errors.New("JSON nested deeper than 128")
	errNotObject = errors.New("top-level value is not an object")
	errTrailing  = errors.New("data after the top-level value")
)

// scanner is a validating, allocation-free JSON scanner over one document.
// It never decodes strings: callers work with byte offsets into b, so that
// every byte they do not replace is copied through exactly (RFC 8259
// grammar; invalid UTF-8 inside strings is accepted and left alone, as
// encoding/json's validator does).
type scanner struct {
	b []byte
	i int
}

func (s *scanner) reset(b []byte) { s.b, s.i = b, 0 }

// peek returns the byte at the cursor, or 0 at the end.
func (s *scanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *scanner) ws() {
	b, i := s.b, s.i
	// Compact JSON (what servers send) has no whitespace: one compare.
	for i < len(b) && b[i] <= ' ' && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	s.i = i
}

// strStop marks the bytes that end the fast path inside a string: the quote,
// the backslash and the control characters that JSON forbids unescaped.
var strStop = func() (t [256]bool) {
	for c := 0; c < 0x20; c++ {
		t[c] = true
	}
	t['"'] = true
	t['\\'] = true
	return t
}()

const (
	lo8 = 0x0101010101010101
	hi8 = 0x8080808080808080
)

// special8 reports whether any of the 8 bytes in x is a quote, a backslash
// or a control character (SWAR; exact for "any", not for "which").
func special8(x uint64) bool {
	q := x ^ (lo8 * '"')
	bs := x ^ (lo8 * '\\')
	return ((x-lo8*0x20)&^x|(q-lo8)&^q|(bs-lo8)&^bs)&hi8 != 0
}

// skipString moves past the string starting at the cursor (which is '"').
func (s *scanner) skipString() error {
	b := s.b
	i := s.i + 1
	for {
		for i+8 <= len(b) && !special8(binary.LittleEndian.Uint64(b[i:])) {
			i += 8
		}
		for i < len(b) && !strStop[b[i]] {
			i++
		}
		if i >= len(b) {
			return errSyntax
		}
		switch b[i] {
		case '"':
			s.i = i + 1
			return nil
		case '\\':
			i++
			if i >= len(b) {
				return errSyntax
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				if i+4 >= len(b) {
					return errSyntax
				}
				for _, c := range b[i+1 : i+5] {
					if !isHex(c) {
						return errSyntax
					}
				}
				i += 5
			default:
				return errSyntax
			}
		default:
			return errSyntax // unescaped control character
		}
	}
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// skipNumber moves past the number at the cursor (RFC 8259 section 6).
func (s *scanner) skipNumber() error {
	b, i := s.b, s.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	j := i
	for j < len(b) && b[j]-'0' < 10 {
		j++
	}
	if j == i || b[i] == '0' && j-i > 1 {
		return errSyntax // no digits, or a leading zero
	}
	if j < len(b) && (b[j] == '.' || b[j] == 'e' || b[j] == 'E') {
		return s.skipNumberTail(j)
	}
	s.i = j
	return nil
}

// skipNumberTail moves past the fraction and exponent starting at i.
func (s *scanner) skipNumberTail(i int) error {
	b := s.b
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || !isDigit(b[i]) {
			return errSyntax
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || !isDigit(b[i]) {
			return errSyntax
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	s.i = i
	return nil
}

func (s *scanner) literal(w string) error {
	if len(s.b)-s.i < len(w) || string(s.b[s.i:s.i+len(w)]) != w {
		return errSyntax
	}
	s.i += len(w)
	return nil
}

// skipValue validates and moves past the value at the cursor. depth is the
// nesting level of the value's container.
func (s *scanner) skipValue(depth int) error {
	switch c := s.peek(); c {
	case '"':
		return s.skipString()
	case '{':
		if depth >= maxDepth {
			return errDepth
		}
		empty, err := s.objectBegin()
		if err != nil || empty {
			return err
		}
		for {
			if _, _, err := s.key(); err != nil {
				return err
			}
			if err := s.skipValue(depth + 1); err != nil {
				return err
			}
			more, err := s.objectNext()
			if err != nil || !more {
				return err
			}
		}
	case '[':
		if depth >= maxDepth {
			return errDepth
		}
		empty, err := s.arrayBegin()
		if err != nil || empty {
			return err
		}
		for {
			// Arrays of numbers (token bytes, embeddings, offsets) are
			// common: skip those without the general dispatch. The
			// commonest element of all, a token byte value (an integer
			// without sign, fraction or exponent, followed directly by
			// ',' or ']'), is consumed right here.
			if b, i := s.b, s.i; i < len(b) && b[i]-'1' < 9 {
				j := i + 1
				for j < len(b) && b[j]-'0' < 10 {
					j++
				}
				if j < len(b) && b[j] == ',' {
					s.i = j + 1
					s.ws()
					continue
				}
				if j < len(b) && b[j] == ']' {
					s.i = j + 1
					return nil
				}
				// Anything else ('.', 'e', whitespace, the end): the
				// general path below, from the same element.
			}
			if c := s.peek(); c == '-' || isDigit(c) {
				err = s.skipNumber()
			} else {
				err = s.skipValue(depth + 1)
			}
			if err != nil {
				return err
			}
			if s.i < len(s.b) && s.b[s.i] == ',' {
				s.i++
				s.ws()
				continue
			}
			more, err := s.arrayNext()
			if err != nil || !more {
				return err
			}
		}
	case 't':
		return s.literal("true")
	case 'f':
		return s.literal("false")
	case 'n':
		return s.literal("null")
	default:
		if c == '-' || isDigit(c) {
			return s.skipNumber()
		}
		return errSyntax
	}
}

// objectBegin consumes '{' and the whitespace after it. When the object is
// empty it also consumes '}' and reports empty; otherwise the cursor is at
// the first key.
func (s *scanner) objectBegin() (empty bool, err error) {
	s.i++
	s.ws()
	switch s.peek() {
	case '}':
		s.i++
		return true, nil
	case '"':
		return false, nil
	}
	return false, errSyntax
}

// key reads a member name and the colon after it; the cursor ends at the
// value. ks:ke spans the name without its quotes, still escaped.
func (s *scanner) key() (ks, ke int, err error) {
	if s.peek() != '"' {
		return 0, 0, errSyntax
	}
	ks = s.i + 1
	if err := s.skipString(); err != nil {
		return 0, 0, err
	}
	ke = s.i - 1
	s.ws()
	if s.peek() != ':' {
		return 0, 0, errSyntax
	}
	s.i++
	s.ws()
	return ks, ke, nil
}

// objectNext is called after a member's value: it consumes ',' (cursor at
// the next key, more=true) or '}' (more=false).
func (s *scanner) objectNext() (more bool, err error) { return s.next('}') }

// next consumes the separator after a member or element: ',' (cursor at
// the next one, more=true) or the container's closing byte (more=false).
func (s *scanner) next(closing byte) (more bool, err error) {
	s.ws()
	switch s.peek() {
	case ',':
		s.i++
		s.ws()
		return true, nil
	case closing:
		s.i++
		return false, nil
	}
	return false, errSyntax
}

// arrayBegin consumes '[' and whitespace; for an empty array also ']'.
func (s *scanner) arrayBegin() (empty bool, err error) {
	s.i++
	s.ws()
	if s.peek() == ']' {
		s.i++
		return true, nil
	}
	return false, nil
}

// arrayNext is called after an element: ',' (more) or ']' (done).
func (s *scanner) arrayNext() (more bool, err error) { return s.next(']') }

// eachMember walks the object at the cursor (which is '{'): for each
// member it reads the name and calls fn with the name's span (ks:ke, without
// quotes, still escaped) and the cursor at the value, which fn must consume.
// It stops at the first error. fn does not escape, so a func literal passed
// here stays on the stack.
func (s *scanner) eachMember(fn func(ks, ke int) error) error {
	empty, err := s.objectBegin()
	if err != nil || empty {
		return err
	}
	for {
		// key, written out: a call per member is measurable on the
		// logprob paths.
		if s.peek() != '"' {
			return errSyntax
		}
		ks := s.i + 1
		if err := s.skipString(); err != nil {
			return err
		}
		ke := s.i - 1
		s.ws()
		if s.peek() != ':' {
			return errSyntax
		}
		s.i++
		s.ws()
		if err := fn(ks, ke); err != nil {
			return err
		}
		// Compact JSON: ',' then the next name's quote, no whitespace.
		if i := s.i; i+1 < len(s.b) && s.b[i] == ',' && s.b[i+1] == '"' {
			s.i = i + 1
			continue
		}
		more, err := s.objectNext()
		if err != nil || !more {
			return err
		}
	}
}

// eachElem walks the array at the cursor (which is '['): for each element
// it calls fn with the element's index and the cursor at the element, which
// fn must consume. It stops at the first error.
func (s *scanner) eachElem(fn func(n int) error) error {
	empty, err := s.arrayBegin()
	if err != nil || empty {
		return err
	}
	for n := 0; ; n++ {
		if err := fn(n); err != nil {
			return err
		}
		if s.i < len(s.b) && s.b[s.i] == ',' {
			s.i++
			s.ws()
			continue
		}
		more, err := s.arrayNext()
		if err != nil || !more {
			return err
		}
	}
}

// validTop validates a whole document whose top-level value must be an
// object, with nothing but whitespace after it.
func validTop(b []byte) error {
	var s scanner
	s.reset(b)
	s.ws()
	if s.peek() != '{' {
		return errNotObject
	}
	if err := s.skipValue(0); err != nil {
		return err
	}
	s.ws()
	if s.i != len(s.b) {
		return errTrailing
	}
	return nil
}

// firstNonSpace returns the first byte that is not JSON whitespace, or 0.
func firstNonSpace(b []byte) byte {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		}
		return c
	}
	return 0
}

// parseNumber parses a JSON number already validated by the scanner.
func parseNumber(b []byte) (float64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	// Fast path: up to 15 significant digits with a plain fraction is exact
	// as integer / 10^k, the same trick strconv uses before Eisel-Lemire.
	neg := false
	i := 0
	if b[0] == '-' {
		neg = true
		i = 1
	}
	var m uint64
	digits, frac := 0, -1
	for ; i < len(b); i++ {
		c := b[i]
		if isDigit(c) {
			if digits >= 15 {
				return parseNumberSlow(b)
			}
			m = m*10 + uint64(c-'0')
			if m != 0 || frac >= 0 {
				digits++
			}
			if frac >= 0 {
				frac++
			}
			continue
		}
		if c == '.' && frac < 0 {
			frac = 0
			continue
		}
		return parseNumberSlow(b)
	}
	if frac < 0 {
		frac = 0
	}
	if frac > 22 {
		return parseNumberSlow(b)
	}
	v := float64(m) / pow10[frac]
	if neg {
		v = -v
	}
	return v, true
}

func parseNumberSlow(b []byte) (float64, bool) {
	v, err := strconv.ParseFloat(unsafe.String(unsafe.SliceData(b), len(b)), 64)
	if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, false
	}
	return v, true
}

// pow10 holds the powers of ten that float64 represents exactly.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
	1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// roundTo rounds x to k decimals (k in [0, 22]) and returns the scaled
// integer m with x ~= m / 10^k; ok is false when x*10^k is too large to be
// rounded exactly (then x is left as it is).
func roundTo(x float64, k int) (m int64, ok bool) {
	y := x * pow10[k]
	if math.Abs(y) >= 1<<52 || math.IsNaN(y) {
		return 0, false
	}
	return int64(math.Round(y)), true
}

// appendScaled appends m / 10^k in the shortest plain decimal form:
// trailing fractional zeros dropped, never "-0". For |m| < 10^15 this is
// exactly what strconv.AppendFloat(float64(m)/10^k, 'f', -1, 64) prints,
// without its cost.
func appendScaled(dst []byte, m int64, k int) []byte {
	if m == 0 {
		return append(dst, '0')
	}
	if m >= 1e15 || m <= -1e15 {
		return strconv.AppendFloat(dst, float64(m)/pow10[k], 'f', -1, 64)
	}
	if m < 0 {
		dst = append(dst, '-')
		m = -m
	}
	u := uint64(m)
	for k > 0 && u%10 == 0 {
		u /= 10
		k--
	}
	var buf [24]byte
	n := len(buf)
	for i := 0; i < k; i++ {
		n--
		buf[n] = byte('0' + u%10)
		u /= 10
	}
	if k > 0 {
		n--
		buf[n] = '.'
	}
	if u == 0 {
		n--
		buf[n] = '0'
	}
	for u > 0 {
		n--
		buf[n] = byte('0' + u%10)
		u /= 10
	}
	return append(dst, buf[n:]...)
}

// appendRounded appends x rounded to k decimals (k < 0: unrounded,
// shortest form). Never prints "-0".
func appendRounded(dst []byte, x float64, k int) []byte {
	if k >= 0 {
		if m, ok := roundTo(x, k); ok {
			return appendScaled(dst, m, k)
		}
	}
	if x == 0 {
		x = 0 // drop the sign of -0
	}
	return strconv.AppendFloat(dst, x, 'f', -1, 64)
}

// parseUint parses a JSON number that is a non-negative integer (possibly
// written with a zero fraction or an exponent, e.g. 2.0 or 1e1).
func parseUint(b []byte) (uint64, bool) {
	v, ok := parseNumber(b)
	if !ok || v < 0 || v != math.Trunc(v) || v > 1<<53 {
		return 0, false
	}
	return uint64(v), true
}

// roundText rounds the plain decimal number b (no exponent) to k decimals
// on its digits, half away from zero, and returns the scaled integer m
// (value ~= m / 10^k) and whether rounding changed the value. Working on
// the text is exact (no binary representation error at the midpoints) and
// avoids parsing. ok is false for exponent forms or more than 18 digits;
// the caller then goes through float64.
func roundText(b []byte, k int) (m int64, changed, ok bool) {
	i := 0
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		i = 1
	}
	var u uint64
	nd := 0 // significant digits in u; at most 18 fit
	for ; i < len(b) && isDigit(b[i]); i++ {
		u = u*10 + uint64(b[i]-'0')
		if u != 0 {
			nd++
		}
	}
	fd := 0
	up := false
	if i < len(b) && b[i] == '.' {
		for i++; i < len(b) && isDigit(b[i]); i++ {
			d := b[i]
			switch {
			case fd < k:
				u = u*10 + uint64(d-'0')
				if u != 0 {
					nd++
				}
			case fd == k:
				up = d >= '5'
				changed = changed || d != '0'
			default:
				changed = changed || d != '0'
			}
			fd++
		}
	}
	if i != len(b) {
		return 0, false, false // exponent
	}
	for ; fd < k; fd++ {
		u *= 10
		if u != 0 {
			nd++
		}
	}
	if nd > 18 {
		return 0, false, false
	}
	if up {
		u++
	}
	m = int64(u)
	if neg {
		m = -m
	}
	return m, changed, true
}
