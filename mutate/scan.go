package mutate

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/bits"
)

// The validating JSON scanner all walks share, and the errors it reports.

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

// notJSONError wraps a scanner error in ErrNotJSON.
type notJSONError struct{ cause error }

func (e *notJSONError) Error() string   { return ErrNotJSON.Error() + ": " + e.cause.Error() }
func (e *notJSONError) Unwrap() []error { return []error{ErrNotJSON, e.cause} }

// Preallocated so that an invalid document costs no allocation.
var (
	errNJSyntax    = &notJSONError{errSyntax}
	errNJDepth     = &notJSONError{errDepth}
	errNJNotObject = &notJSONError{errNotObject}
	errNJTrailing  = &notJSONError{errTrailing}
)

// notJSON wraps a scanner error in ErrNotJSON, without allocating for the
// scanner's own errors.
func notJSON(err error) error {
	switch err {
	case errSyntax:
		return errNJSyntax
	case errDepth:
		return errNJDepth
	case errNotObject:
		return errNJNotObject
	case errTrailing:
		return errNJTrailing
	}
	return &notJSONError{err}
}

// scanner is a validating, allocation-free JSON scanner over one document.
// It never decodes strings: callers work with byte offsets into b, so that
// every byte they do not replace is copied through exactly (RFC 8259
// grammar; invalid UTF-8 inside strings is accepted and left alone, as
// encoding/json's validator does).
type scanner struct {
	b []byte
	i int
	// valid: the value the walk is in was validated whole (the document,
	// or every member of its top-level object), so skipValue takes
	// skipFast. Cleared by reset.
	valid bool
}

func (s *scanner) reset(b []byte) { s.b, s.i, s.valid = b, 0, false }

// peek returns the byte at the cursor, or 0 at the end.
func (s *scanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// ws moves the cursor past JSON whitespace.
func (s *scanner) ws() { s.i = skipSpace(s.b, s.i) }

// end finishes a document walk: err if the walk failed, errTrailing when
// anything but whitespace follows the top-level value, else nil.
func (s *scanner) end(err error) error {
	if err != nil {
		return err
	}
	s.ws()
	if s.i != len(s.b) {
		return errTrailing
	}
	return nil
}

// skipSpace returns the offset of the first byte at or after i that is not
// JSON whitespace (RFC 8259 section 2: space, tab, LF, CR), or len(b).
func skipSpace(b []byte, i int) int {
	// Compact JSON (what servers send) has no whitespace: one compare.
	for i < len(b) && b[i] <= ' ' && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// firstNonSpace returns the first byte that is not JSON whitespace, or 0.
func firstNonSpace(b []byte) byte {
	if i := skipSpace(b, 0); i < len(b) {
		return b[i]
	}
	return 0
}

// StartsLikeObject reports whether b's first byte other than JSON
// whitespace is '{': the cheap check that precedes a parse, and all that
// Rewrite checks before its fast path.
func StartsLikeObject(b []byte) bool { return firstNonSpace(b) == '{' }

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

// special8Mask has the top bit of each byte of x (little-endian) that may
// be a quote, a backslash or a control character set. The lowest one set
// is exact, the first such byte: a false one only appears above a true
// one, where the borrow of the subtraction carries into the next byte.
func special8Mask(x uint64) uint64 {
	q := x ^ (lo8 * '"')
	bs := x ^ (lo8 * '\\')
	return ((x-lo8*0x20)&^x | (q-lo8)&^q | (bs-lo8)&^bs) & hi8
}

// skipString moves past the string starting at the cursor (which is '"').
func (s *scanner) skipString() error {
	b := s.b
	i := s.i + 1
	for {
		for i+8 <= len(b) {
			if m := special8Mask(binary.LittleEndian.Uint64(b[i:])); m != 0 {
				i += bits.TrailingZeros64(m) >> 3 // the first special byte
				break
			}
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
// nesting level of the value's container. Inside a value already validated
// (s.valid) it only moves past it (skipFast).
func (s *scanner) skipValue(depth int) error {
	if s.valid {
		return s.skipFast()
	}
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
		if s.i < len(s.b) && s.b[s.i]-'0' < 10 {
			// A token's bytes: checked whole, 8 bytes at a time.
			if e, ok := uintArrayEnd(s.b, s.i); ok {
				s.i = e
				return nil
			}
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

// skipFast moves past the value at the cursor without validating it, for
// values already validated (s.valid): a string to its closing quote, a
// container to the bracket that closes it (brackets inside strings do not
// count), a number or literal to the byte that ends it. On bytes that are
// not valid JSON it stops somewhere inside them; it reports errSyntax only
// when it runs off the end, and never reads out of bounds.
func (s *scanner) skipFast() error {
	b, i := s.b, s.i
	if i >= len(b) {
		return errSyntax
	}
	switch b[i] {
	case '"':
		j := stringEnd(b, i)
		if j < 0 {
			return errSyntax
		}
		s.i = j
		return nil
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch fastClass[b[i]] {
			case fcQuote:
				j := stringEnd(b, i)
				if j < 0 {
					return errSyntax
				}
				i = j - 1
			case fcOpen:
				depth++
			case fcClose:
				if depth--; depth == 0 {
					s.i = i + 1
					return nil
				}
			}
		}
		return errSyntax
	}
	for i < len(b) && fastClass[b[i]] < fcClose {
		i++
	}
	s.i = i
	return nil
}

// Byte classes of skipFast.
const (
	fcOther = iota
	fcQuote // '"'
	fcOpen  // '{' '['
	fcClose // '}' ']'
	fcEnd   // ',' ':' and JSON whitespace, which end a number or literal as a closing bracket does
)

// fastClass maps a byte to its skipFast class.
var fastClass = func() (t [256]uint8) {
	t['"'] = fcQuote
	t['{'], t['['] = fcOpen, fcOpen
	t['}'], t[']'] = fcClose, fcClose
	for _, c := range []byte{',', ':', ' ', '\t', '\n', '\r'} {
		t[c] = fcEnd
	}
	return t
}()

// stringEnd returns the offset just past the string that opens at b[q]
// (a quote), or -1 when it does not close: the first quote that is not
// escaped, i.e. not preceded by an odd run of backslashes.
func stringEnd(b []byte, q int) int {
	for i := q + 1; ; {
		k := bytes.IndexByte(b[i:], '"')
		if k < 0 {
			return -1
		}
		j := i + k
		n := 0
		for p := j - 1; p > q && b[p] == '\\'; p-- {
			n++
		}
		if n%2 == 0 {
			return j + 1
		}
		i = j + 1
	}
}

// uintArrayEnd checks the array whose first element starts at b[i] (after
// its '[') when it is what a logprob entry's "bytes" holds, compact
// non-negative integers ("[32,116,104,101]"), 8 bytes at a time, and
// returns the offset after its ']'. ok is false, nothing consumed, for
// anything else (whitespace, signs, fractions, leading zeros, a comma out
// of place) and for an array that does not close within the whole words
// left: the general path then reads it. The masks are exact per byte (no
// carry crosses a byte), so every byte is classified, not guessed.
func uintArrayEnd(b []byte, i int) (end int, ok bool) {
	carryD := uint64(0)        // the byte before the word is a digit (as bit 7)
	carryStart := uint64(0x80) // the word's first byte starts an element
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		d := digitMask(x)
		c := eqMask(x, ',')
		r := eqMask(x, ']')
		hb := uint64(hi8) // the bytes before the first ']'
		if r != 0 {
			p := bits.TrailingZeros64(r)
			r = 1 << p
			hb &= 1<<(p-7) - 1
		}
		if (d|c)&hb != hb {
			return 0, false // a byte that is neither digit nor comma
		}
		d, c = d&hb, c&hb
		if (c|r)&^(d<<8|carryD) != 0 {
			return 0, false // a comma or the ']' not after a digit
		}
		next := d >> 8 // the byte after is a digit
		if r == 0 && i+8 < len(b) && isDigit(b[i+8]) {
			next |= 1 << 63
		}
		if eqMask(x, '0')&hb&(c<<8|carryStart)&next != 0 {
			return 0, false // a leading zero
		}
		if r != 0 {
			return i + bits.TrailingZeros64(r)>>3 + 1, true
		}
		carryD, carryStart = d>>56, c>>56
	}
	return 0, false
}

// digitMask has bit 7 of each byte of x that is an ASCII digit set.
func digitMask(x uint64) uint64 {
	t := x &^ hi8 // no byte above 0x7f: the additions cannot carry out of it
	ge0 := t + lo8*(0x80-'0')
	gt9 := t + lo8*(0x80-'9'-1)
	return ge0 &^ gt9 &^ x & hi8
}

// eqMask has bit 7 of each byte of x that equals c set.
func eqMask(x uint64, c byte) uint64 {
	y := x ^ lo8*uint64(c)
	return ^((y&^hi8 + lo8*0x7f) | y) & hi8
}
