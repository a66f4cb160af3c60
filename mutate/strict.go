package mutate

import (
	"bytes"
	"cmp"
	"hash/maphash"
	"slices"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// The strict request reader's first half: a validator that accepts exactly
// the request bodies a lenient upstream reads the same way distillguard
// does, and names the problem in every other one.
//
// Inference servers written in Python read bodies with json.loads(bytes)
// (Starlette's Request.json()), which is more permissive than RFC 8259 in
// ways that matter here (https://docs.python.org/3/library/json.html):
// it detects UTF-16 and UTF-32 and strips a UTF-8 BOM (json.detect_encoding),
// accepts NaN, Infinity and -Infinity, keeps the last of duplicate member
// names, reads integers of any size and floats beyond float64 as inf, keeps
// lone surrogate escapes, and nests as deep as the interpreter's recursion
// limit. A body that leans on any of these is refused here, so that for
// every body that is accepted Python's reading and distillguard's are the
// same tree: UTF-8 only (RFC 8259 section 8.1), no BOM, RFC 8259 grammar
// only, no duplicate member names at any depth (compared decoded, the way
// Python compares them), no lone surrogate in a member name, at most
// MaxDepth levels of nesting.

// RequestError is a request body distillguard refuses to forward. Status is
// the HTTP status the client gets (400, 413 or 415), Reason a short code for
// metrics, Param the member at fault ("" when the body as a whole is) and
// Message what the client is told.
type RequestError struct {
	Status  int
	Reason  string
	Param   string
	Message string
}

func (e *RequestError) Error() string { return e.Message }

// Refusal reasons (RequestError.Reason).
const (
	RefuseEncoding   = "encoding"         // BOM, UTF-16/32, invalid UTF-8
	RefuseSyntax     = "invalid_json"     // not RFC 8259 JSON, or not an object
	RefuseNonFinite  = "non_finite"       // NaN, Infinity, -Infinity
	RefuseDuplicate  = "duplicate_member" // a member name twice in one object
	RefuseDepth      = "depth"            // nested deeper than the bound
	RefuseSurrogate  = "lone_surrogate"   // a member name with a lone surrogate escape
	RefuseFieldType  = "field_type"       // a guarded field of the wrong type
	RefuseFieldSize  = "field_size"       // a guarded field beyond its bound (logit_bias entries)
	RefuseTooLarge   = "too_large"        // beyond max_body_bytes (413)
	RefuseMediaType  = "media_type"       // content-type or charset (415)
	RefuseContentEnc = "content_encoding" // content-encoding (415), or a body that does not decode
)

func badBody(reason, msg string) *RequestError {
	return &RequestError{Status: 400, Reason: reason, Message: "request body: " + msg}
}

// DefaultMaxDepth bounds the nesting a request body may have: chat and tool
// schemas nest about ten levels; the bound keeps the recursion small.
const DefaultMaxDepth = 128

// utf8BOM is the byte order mark RFC 8259 section 8.1 forbids in
// network-transmitted JSON ("MUST NOT add a byte order mark").
const utf8BOM = "\xef\xbb\xbf"

// checkEncoding refuses what json.detect_encoding would decode as
// something other than plain UTF-8, and invalid UTF-8.
func checkEncoding(b []byte) *RequestError {
	switch {
	case bytes.HasPrefix(b, []byte(utf8BOM)):
		return badBody(RefuseEncoding, "a byte order mark before the JSON is not accepted; send UTF-8 without a BOM")
	case bytes.HasPrefix(b, []byte{0xfe, 0xff}), bytes.HasPrefix(b, []byte{0xff, 0xfe}),
		len(b) >= 2 && (b[0] == 0 || b[1] == 0):
		// The BOMs of UTF-16/32 and the NUL patterns json.detect_encoding
		// reads as UTF-16/32 without a BOM.
		e := badBody(RefuseEncoding, "UTF-16 and UTF-32 are not accepted; send UTF-8")
		e.Status = 415
		return e
	}
	if !utf8.Valid(b) {
		i := 0
		for i < len(b) {
			r, n := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && n <= 1 {
				break
			}
			i += n
		}
		return badBody(RefuseEncoding, "invalid UTF-8 at byte "+strconv.Itoa(i))
	}
	return nil
}

// member spans one member of a recorded object: s is its name's opening
// quote, ks:ke the name without quotes (escaped), vs:e the value. name is
// the decoded name, keep what a rewrite does with it.
type member struct {
	s, ks, ke int
	vs, e     int
	name      string
	keep      bool
}

// object is a recorded object: its braces and members.
type object struct {
	open, close int
	members     []member
}

// nameRef is a member name of an object being validated: the hash of its
// decoded form and its raw span.
type nameRef struct {
	h      uint64
	ks, ke int
}

// validator checks one request body (see the package comment above) and
// records its top-level object and the objects nested under the member
// names in nested.
type validator struct {
	b        []byte
	i        int
	maxDepth int
	seed     maphash.Seed
	names    []nameRef // names of the open objects, innermost last
	scratch  []byte
	nested   func(name string) bool
	top      object
	inner    []object // recorded nested objects
	innerOf  []string // the top-level name each one is under
	// limited names the fields whose value's entries are bounded (the
	// logit_bias family), maxEntries the bound; childLimit and childName
	// are the bound and name for the container about to be read.
	limited    func(name string) bool
	maxEntries int
	childLimit int
	childName  string
}

// maxMembers bounds the members of any one object: a JSON schema or a
// metadata map has tens; the bound keeps duplicate detection small for a
// body that is one huge object.
const maxMembers = 1 << 16

// entryLimit takes the bound set for the container at the cursor.
func (v *validator) entryLimit(def int) (int, string) {
	n, name := v.childLimit, v.childName
	v.childLimit, v.childName = 0, ""
	if n == 0 {
		return def, ""
	}
	return n, name
}

func (v *validator) tooMany(name string, limit int) *RequestError {
	if name == "" {
		return badBody(RefuseFieldSize, "an object with more than "+strconv.Itoa(limit)+" members")
	}
	return &RequestError{Status: 400, Reason: RefuseFieldSize, Param: name,
		Message: name + " has more than " + strconv.Itoa(limit) + " entries"}
}

func (v *validator) errAt(msg string) *RequestError {
	return badBody(RefuseSyntax, msg+" at byte "+strconv.Itoa(v.i))
}

func (v *validator) ws() { v.i = skipSpace(v.b, v.i) }

func (v *validator) peek() byte {
	if v.i < len(v.b) {
		return v.b[v.i]
	}
	return 0
}

// validate checks the whole body.
func (v *validator) validate() *RequestError {
	if err := checkEncoding(v.b); err != nil {
		return err
	}
	v.ws()
	if v.peek() != '{' {
		if v.i == len(v.b) {
			return badBody(RefuseSyntax, "empty")
		}
		return badBody(RefuseSyntax, "must be a JSON object")
	}
	if err := v.object(1, &v.top); err != nil {
		return err
	}
	v.ws()
	if v.i != len(v.b) {
		return v.errAt("data after the JSON object")
	}
	return nil
}

// value checks the value at the cursor; depth is its container's level.
func (v *validator) value(depth int) *RequestError {
	switch c := v.peek(); {
	case c == '{':
		return v.object(depth+1, nil)
	case c == '[':
		return v.array(depth + 1)
	case c == '"':
		return v.str()
	case c == 't':
		return v.literal("true")
	case c == 'f':
		return v.literal("false")
	case c == 'n':
		return v.literal("null")
	case c == 'N':
		if bytes.HasPrefix(v.b[v.i:], []byte("NaN")) {
			return badBody(RefuseNonFinite, "NaN is not valid JSON (at byte "+strconv.Itoa(v.i)+")")
		}
	case c == 'I':
		if bytes.HasPrefix(v.b[v.i:], []byte("Infinity")) {
			return badBody(RefuseNonFinite, "Infinity is not valid JSON (at byte "+strconv.Itoa(v.i)+")")
		}
	case c == '-' && bytes.HasPrefix(v.b[v.i:], []byte("-Infinity")):
		return badBody(RefuseNonFinite, "-Infinity is not valid JSON (at byte "+strconv.Itoa(v.i)+")")
	case c == '-' || isDigit(c):
		s := scanner{b: v.b, i: v.i}
		if s.skipNumber() != nil {
			return v.errAt("invalid number")
		}
		v.i = s.i
		return nil
	}
	if v.i >= len(v.b) {
		return v.errAt("unexpected end")
	}
	return v.errAt("invalid value")
}

func (v *validator) literal(w string) *RequestError {
	if !bytes.HasPrefix(v.b[v.i:], []byte(w)) {
		return v.errAt("invalid literal")
	}
	v.i += len(w)
	return nil
}

// str checks the string at the cursor (escapes and control characters;
// UTF-8 was checked for the whole body).
func (v *validator) str() *RequestError {
	s := scanner{b: v.b, i: v.i}
	if s.skipString() != nil {
		// Find what is wrong, for the message.
		for j := v.i + 1; j < len(v.b); j++ {
			switch c := v.b[j]; {
			case c == '"':
				return v.errAt("invalid string")
			case c == '\\':
				j++
				if j < len(v.b) && !bytes.ContainsRune([]byte(`"\/bfnrtu`), rune(v.b[j])) {
					v.i = j - 1
					return v.errAt("invalid escape")
				}
			case c < 0x20:
				v.i = j
				return v.errAt("unescaped control character in a string")
			}
		}
		return v.errAt("unterminated string")
	}
	v.i = s.i
	return nil
}

func (v *validator) array(depth int) *RequestError {
	if depth > v.maxDepth {
		return badBody(RefuseDepth, "nested deeper than "+strconv.Itoa(v.maxDepth)+" levels")
	}
	limit, lname := v.entryLimit(-1)
	v.i++
	v.ws()
	if v.peek() == ']' {
		v.i++
		return nil
	}
	for n := 1; ; n++ {
		if limit >= 0 && n > limit {
			return v.tooMany(lname, limit)
		}
		if err := v.value(depth); err != nil {
			return err
		}
		v.ws()
		switch v.peek() {
		case ',':
			v.i++
			v.ws()
		case ']':
			v.i++
			return nil
		default:
			return v.errAt("expected ',' or ']'")
		}
	}
}

// object checks the object at the cursor. rec, when not nil, receives its
// members (the top-level object, and the objects nested under the
// top-level names v.nested selects).
func (v *validator) object(depth int, rec *object) *RequestError {
	if depth > v.maxDepth {
		return badBody(RefuseDepth, "nested deeper than "+strconv.Itoa(v.maxDepth)+" levels")
	}
	limit, lname := v.entryLimit(maxMembers)
	open := v.i
	mark := len(v.names)
	v.i++
	v.ws()
	if v.peek() == '}' {
		v.i++
		if rec != nil {
			rec.open, rec.close = open, v.i-1
		}
		return nil
	}
	for {
		if v.peek() != '"' {
			return v.errAt("expected a member name")
		}
		s := v.i
		if err := v.str(); err != nil {
			return err
		}
		ks, ke := s+1, v.i-1
		h, name, err := v.hashName(ks, ke, rec != nil)
		if err != nil {
			return err
		}
		if len(v.names)-mark >= limit {
			return v.tooMany(lname, limit)
		}
		v.names = append(v.names, nameRef{h: h, ks: ks, ke: ke})
		v.ws()
		if v.peek() != ':' {
			return v.errAt("expected ':'")
		}
		v.i++
		v.ws()
		vs := v.i
		if rec == &v.top && v.peek() == '{' && v.nested != nil && v.nested(name) {
			v.inner = append(v.inner, object{})
			v.innerOf = append(v.innerOf, name)
			k := len(v.inner) - 1
			var child object
			if err := v.object(depth+1, &child); err != nil {
				return err
			}
			v.inner[k] = child
		} else {
			if rec == &v.top && v.limited != nil && v.limited(name) {
				v.childLimit, v.childName = v.maxEntries, name
			}
			if err := v.value(depth); err != nil {
				return err
			}
			v.childLimit, v.childName = 0, "" // a scalar took none
		}
		if rec != nil {
			rec.members = append(rec.members, member{s: s, ks: ks, ke: ke, vs: vs, e: v.i, name: name})
		}
		v.ws()
		switch v.peek() {
		case ',':
			v.i++
			v.ws()
			continue
		case '}':
			v.i++
		default:
			return v.errAt("expected ',' or '}'")
		}
		break
	}
	if rec != nil {
		rec.open, rec.close = open, v.i-1
	}
	err := v.duplicates(v.names[mark:])
	v.names = v.names[:mark]
	return err
}

// hashName hashes the decoded member name at ks:ke; with want it also
// returns the name decoded.
func (v *validator) hashName(ks, ke int, want bool) (uint64, string, *RequestError) {
	raw := v.b[ks:ke]
	if bytes.IndexByte(raw, '\\') < 0 {
		name := ""
		if want {
			name = string(raw)
		}
		return maphash.Bytes(v.seed, raw), name, nil
	}
	dec, lone := appendUnescaped(v.scratch[:0], raw)
	v.scratch = dec
	if lone {
		return 0, "", &RequestError{Status: 400, Reason: RefuseSurrogate,
			Message: "request body: member name " + strconv.Quote(string(raw)) + " has a lone surrogate escape"}
	}
	name := ""
	if want {
		name = string(dec)
	}
	return maphash.Bytes(v.seed, dec), name, nil
}

// duplicates reports a member name that occurs twice among ns (the members
// of one object): Python keeps the last, encoding/json-style readers the
// last or the first, so such a body has no single reading.
func (v *validator) duplicates(ns []nameRef) *RequestError {
	if len(ns) < 2 {
		return nil
	}
	same := func(a, b nameRef) bool {
		if a.h != b.h {
			return false
		}
		da, _ := appendUnescaped(nil, v.b[a.ks:a.ke])
		db, _ := appendUnescaped(nil, v.b[b.ks:b.ke])
		return bytes.Equal(da, db)
	}
	if len(ns) <= 8 {
		for i := 1; i < len(ns); i++ {
			for j := range i {
				if same(ns[i], ns[j]) {
					return v.duplicate(ns[i])
				}
			}
		}
		return nil
	}
	slices.SortFunc(ns, func(a, b nameRef) int { return cmp.Compare(a.h, b.h) })
	for i := 1; i < len(ns); i++ {
		// Equal hashes sit together; compare each with the others of its
		// run (a run longer than one is a collision or a duplicate).
		for j := i - 1; j >= 0 && ns[j].h == ns[i].h; j-- {
			if same(ns[i], ns[j]) {
				return v.duplicate(ns[i])
			}
		}
	}
	return nil
}

func (v *validator) duplicate(n nameRef) *RequestError {
	dec, _ := appendUnescaped(nil, v.b[n.ks:n.ke])
	name := string(dec)
	if len(name) > 64 {
		name = name[:64] + "..."
	}
	return &RequestError{Status: 400, Reason: RefuseDuplicate, Param: string(dec),
		Message: "request body: duplicate member " + strconv.Quote(name)}
}

// appendUnescaped appends the JSON string content raw (between its quotes,
// validated) to dst decoded to UTF-8, and reports whether it has a lone
// surrogate escape (written as U+FFFD).
func appendUnescaped(dst, raw []byte) ([]byte, bool) {
	lone := false
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			j := i + 1
			for j < len(raw) && raw[j] != '\\' {
				j++
			}
			dst = append(dst, raw[i:j]...)
			i = j
			continue
		}
		e := raw[i+1]
		i += 2
		switch e {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r := rune(hex4(raw[i:]))
			i += 4
			if utf16.IsSurrogate(r) {
				if r < 0xdc00 && i+6 <= len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
					if r2 := rune(hex4(raw[i+2:])); r2 >= 0xdc00 && r2 <= 0xdfff {
						dst = utf8.AppendRune(dst, utf16.DecodeRune(r, r2))
						i += 6
						continue
					}
				}
				lone = true
				r = utf8.RuneError
			}
			dst = utf8.AppendRune(dst, r)
		default: // '"', '\\', '/'
			dst = append(dst, e)
		}
	}
	return dst, lone
}

func hex4(b []byte) uint32 {
	var v uint32
	for _, c := range b[:4] {
		v <<= 4
		switch {
		case c >= '0' && c <= '9':
			v |= uint32(c - '0')
		case c >= 'a' && c <= 'f':
			v |= uint32(c - 'a' + 10)
		default:
			v |= uint32(c - 'A' + 10)
		}
	}
	return v
}
