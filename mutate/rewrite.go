package mutate

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"encoding/binary"
	"math"
	"slices"
)

// Rewriter rewrites one JSON document at a time (an SSE event's data or a
// whole non-streamed body). One per HTTP stream; not safe for concurrent use.
// It carries the perturbation position across documents so that the output
// depends only on the sequence of documents, never on chunking.
//
// Fields rewritten (every other byte is copied through):
//   - chat.completion / chat.completion.chunk: choices[].logprobs.content[]
//     and .refusal[] entries {token, logprob, bytes, top_logprobs[]}
//     (https://platform.openai.com/docs/api-reference/chat/object);
//   - legacy text_completion: choices[].logprobs {tokens, token_logprobs,
//     top_logprobs, text_offset}
//     (https://platform.openai.com/docs/api-reference/completions/object);
//   - vLLM prompt_logprobs, top level or per choice;
//   - Responses API: top-level logprobs of response.output_text.delta/.done
//     events, and output[].content[].logprobs inside response objects
//     (response.completed, output_item.*, content_part.*, non-streamed)
//     (https://platform.openai.com/docs/api-reference/responses-streaming);
//   - embeddings: data[].embedding as float array or base64 float32
//     (https://platform.openai.com/docs/api-reference/embeddings/object).
//
// StripLogprobs writes the form each API uses for "absent": null for
// choices[].logprobs and prompt_logprobs (Chat Completions and Completions
// send null when logprobs were not requested), [] for Responses API logprobs
// arrays (the Responses API always sends an array).
//
// Order of operations per position: noise (Perturb), then rounding
// (RoundDecimals, on the decimal text when there is no noise: exact, half
// away from zero), then the cut to MaxAlternatives. The noise is uniform in
// [-Perturb, Perturb), drawn from a splitmix64 hash of (seed, choice,
// token position, alternative rank) only, so the same stream gives the
// same output in any chunking and in streamed or buffered mode. Values are
// clamped to <= 0 and each alternative to the one ranked above it; the
// sampled token takes the value of its own entry in the alternatives when
// it is listed there, and otherwise stays above them if it was the most
// likely. top_logprobs arrays keep their first k entries (the API sorts
// them most likely first); legacy top_logprobs and prompt_logprobs objects
// keep their k largest members, in their original order.
//
// Member names are matched as raw bytes: a key spelled with escapes
// ("\u006cogprobs") is not recognised. Upstream inference servers never
// emit such keys; clients cannot influence response keys.
type Rewriter struct {
	p        OutputPolicy
	seedMix  uint64
	touchLP  bool // the policy changes logprobs
	touchEmb bool // the policy changes embeddings
	numLP    bool // logprob numbers change (rounding or noise)
	round    int  // RoundDecimals clamped to [-1, 22]
	embRound int  // EmbeddingDecimals clamped to [-1, 22]
	maxAlt   int
	// keepLF makes every replacement keep the line feeds it removes: set
	// by SSEStream for multi-line data events, which are split back into
	// lines at the LFs.
	keepLF bool

	s        scanner
	patches  []patch
	unsorted bool
	lit      []byte // replacement bytes referenced by pBytes patches
	ctr      []counter
	pend     []counter

	// scratch, reused across documents
	alts   []alt
	chosen []chosenLP
	groups []group
	order  []int32
	legTok []span
	legLP  []chosenLP
	legTop []span
	b64    []byte

	stats RewriterStats
}

// RewriterStats counts what a Rewriter saw.
type RewriterStats struct {
	Documents int64 // documents given to Rewrite
	Rewritten int64 // documents whose bytes changed
	NotJSON   int64 // documents passed through because they were not a JSON object
	Skipped   int64 // documents passed through by the fast path (nothing the policy touches)
}

type span struct{ s, e int }

// alt is one alternative (an element of top_logprobs, a member of a legacy
// top_logprobs object or of a prompt_logprobs position). s:e spans the
// element or the member (from the key's opening quote to the value's end);
// lp spans the logprob number; tok spans the token's string content.
type alt struct {
	s, e int
	tok  span
	lp   span
	v    float64
	out  float64
	ok   bool // lp holds a number
	keep bool
}

type chosenLP struct {
	s, e int
	v    float64
	ok   bool
}

// group is one top_logprobs array: open is the '[' offset, close the ']'
// offset, alts[lo:hi] its elements.
type group struct{ open, close, lo, hi int }

type counter struct{ key, n uint64 }

const (
	pDel = iota
	pNum
	pStr
	pBytes
	pScaled
)

// patch replaces doc[s:e].
type patch struct {
	s, e   int
	v      float64
	m      int64
	str    string
	lo, hi int
	kind   uint8
	k      int8
}

// Counter keys: the choice index for chat/completions, tagged keys for the
// Responses API (output_index, content_index) and for prompt positions.
const (
	keyResp     = 1 << 62
	keyPrompt   = 2 << 62
	keyOverflow = 3 << 62
	maxCounters = 1024
	chosenRank  = 1 << 32
)

func respKey(out, content uint64) uint64 {
	return keyResp | (out&0xffffffff)<<24 | content&0xffffff
}

// NewRewriter returns a Rewriter for policy p; seed keys the perturbation
// (derived from the session).
func NewRewriter(p OutputPolicy, seed uint64) *Rewriter {
	r := &Rewriter{p: p, seedMix: mix64(seed ^ 0x6a09e667f3bcc908)}
	r.round = clampDecimals(p.RoundDecimals)
	r.embRound = clampDecimals(p.EmbeddingDecimals)
	r.maxAlt = p.MaxAlternatives
	r.numLP = r.round >= 0 || p.Perturb != 0
	r.touchLP = p.StripLogprobs || r.numLP || p.MaxAlternatives >= 0
	r.touchEmb = r.embRound >= 0
	return r
}

func clampDecimals(k int) int {
	switch {
	case k < 0:
		return -1
	case k > 22:
		return 22
	}
	return k
}

// Stats returns the counts so far.
func (r *Rewriter) Stats() RewriterStats { return r.stats }

// Rewrite appends the rewritten doc to dst. When doc is not a JSON object it
// appends doc unchanged and returns an error wrapping ErrNotJSON.
//
// Documents that contain nothing the policy touches (no `logprobs"` or
// `"embedding"` member, or only with a null value) take a fast path: they
// are copied through after checking only that they start like an object,
// so a malformed document without those keys is passed through without an
// error. The output is the same either way: invalid documents are never
// changed.
func (r *Rewriter) Rewrite(dst, doc []byte) ([]byte, error) {
	dst, _, err := r.rewrite(dst, doc)
	return dst, err
}

func (r *Rewriter) rewrite(dst, doc []byte) ([]byte, bool, error) {
	r.stats.Documents++
	if firstNonSpace(doc) != '{' {
		r.stats.NotJSON++
		return append(dst, doc...), false, notJSON(errNotObject)
	}
	if !r.mayTouch(doc) {
		r.stats.Skipped++
		return append(dst, doc...), false, nil
	}
	r.patches = r.patches[:0]
	r.lit = r.lit[:0]
	r.pend = r.pend[:0]
	r.unsorted = false
	r.s.reset(doc)
	if err := r.walkTop(); err != nil {
		r.stats.NotJSON++
		return append(dst, doc...), false, notJSON(err)
	}
	r.commit()
	dst, changed := r.apply(dst, doc)
	if changed {
		r.stats.Rewritten++
	}
	return dst, changed, nil
}

var (
	keyLogprobs  = []byte(`logprobs"`)
	keyEmbedding = []byte(`"embedding"`)
	keyOutputIdx = []byte(`"output_index"`)
)

func (r *Rewriter) mayTouch(doc []byte) bool {
	return r.touchLP && hasLiveKey(doc, keyLogprobs) ||
		r.touchEmb && hasLiveKey(doc, keyEmbedding)
}

// hasLiveKey reports whether doc may hold key as a member name with a
// value other than null. It is a conservative pre-filter run before any
// parsing: an occurrence not followed by ':' is a string value
// ("object":"embedding") and one followed by ': null' has nothing to
// rewrite ("logprobs":null in every vLLM chunk). Inside strings the quote
// of a match would be escaped, so text cannot produce a false key; a
// false positive only costs a full parse.
func hasLiveKey(doc, key []byte) bool {
	for off := 0; off < len(doc); {
		i := bytes.Index(doc[off:], key)
		if i < 0 {
			return false
		}
		j := skipSpace(doc, off+i+len(key))
		if j >= len(doc) || doc[j] != ':' {
			off = j
			continue
		}
		j = skipSpace(doc, j+1)
		if !bytes.HasPrefix(doc[j:], litNull) {
			return true
		}
		off = j
	}
	return false
}

var (
	litNull = []byte("null")
	lf      = []byte{'\n'}
)

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

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

// ---- patches ----

func (r *Rewriter) add(p patch) {
	if n := len(r.patches); n > 0 {
		last := &r.patches[n-1]
		if p.kind == pDel && last.kind == pDel && last.e == p.s {
			last.e = p.e // merge adjacent deletions
			return
		}
		if p.s < last.e {
			r.unsorted = true
		}
	}
	r.patches = append(r.patches, p)
}

func (r *Rewriter) addDel(s, e int) {
	if s < e {
		r.add(patch{s: s, e: e, kind: pDel})
	}
}

func (r *Rewriter) addStr(s, e int, str string) {
	if string(r.s.b[s:e]) != str {
		r.add(patch{s: s, e: e, kind: pStr, str: str})
	}
}

// addNum replaces the number at s:e (value orig) with out printed at k
// decimals, unless that would not change its value.
func (r *Rewriter) addNum(s, e int, orig, out float64, k int) {
	if out == orig {
		if k < 0 {
			return
		}
		if m, ok := roundTo(orig, k); !ok || float64(m)/pow10[k] == orig {
			return
		}
	}
	r.add(patch{s: s, e: e, kind: pNum, v: out, k: int8(k)})
}

// patchNum rewrites a logprob: with noise from its value, otherwise by
// rounding its text.
func (r *Rewriter) patchNum(s, e int, orig, out float64, k int) {
	if r.p.Perturb == 0 {
		r.addRound(s, e, k)
		return
	}
	r.addNum(s, e, orig, out, k)
}

// addRound rounds the number at s:e to k decimals when that changes its
// value.
func (r *Rewriter) addRound(s, e, k int) {
	if k < 0 {
		return
	}
	m, changed, ok := roundText(r.s.b[s:e], k)
	if !ok {
		if v, ok := parseNumber(r.s.b[s:e]); ok {
			r.addNum(s, e, v, v, k)
		}
		return
	}
	if changed {
		r.add(patch{s: s, e: e, kind: pScaled, m: m, k: int8(k)})
	}
}

func (r *Rewriter) apply(dst, doc []byte) ([]byte, bool) {
	if len(r.patches) == 0 {
		return append(dst, doc...), false
	}
	if r.unsorted {
		sortPatches(r.patches)
	}
	changed := false
	last := 0
	for i := range r.patches {
		p := &r.patches[i]
		if p.s < last {
			continue // overlapping patch: cannot happen; never corrupt output
		}
		dst = append(dst, doc[last:p.s]...)
		at := len(dst)
		switch p.kind {
		case pNum:
			dst = appendRounded(dst, p.v, int(p.k))
		case pScaled:
			dst = appendScaled(dst, p.m, int(p.k))
		case pStr:
			dst = append(dst, p.str...)
		case pBytes:
			dst = append(dst, r.lit[p.lo:p.hi]...)
		}
		if !changed && !bytes.Equal(dst[at:], doc[p.s:p.e]) {
			changed = true
		}
		if r.keepLF {
			// Keep the line breaks of what was replaced (as whitespace
			// after the replacement, which JSON allows) so the document
			// keeps its line count.
			for n := bytes.Count(doc[p.s:p.e], lf); n > 0; n-- {
				dst = append(dst, '\n')
			}
		}
		last = p.e
	}
	return append(dst, doc[last:]...), changed
}

func sortPatches(ps []patch) {
	if len(ps) <= 32 {
		for i := 1; i < len(ps); i++ {
			for j := i; j > 0 && ps[j].s < ps[j-1].s; j-- {
				ps[j], ps[j-1] = ps[j-1], ps[j]
			}
		}
		return
	}
	slices.SortFunc(ps, func(a, b patch) int { return cmp.Compare(a.s, b.s) })
}

// ---- positions ----

func (r *Rewriter) position(key uint64) uint64 {
	var n uint64
	for _, c := range r.ctr {
		if c.key == key {
			n = c.n
			break
		}
	}
	for _, c := range r.pend {
		if c.key == key {
			n += c.n
			break
		}
	}
	return n
}

func (r *Rewriter) advance(key uint64, n int) {
	for i := range r.pend {
		if r.pend[i].key == key {
			r.pend[i].n += uint64(n)
			return
		}
	}
	r.pend = append(r.pend, counter{key, uint64(n)})
}

// commit applies the positions consumed by a document that was rewritten
// successfully (an invalid document does not advance them).
func (r *Rewriter) commit() {
next:
	for _, p := range r.pend {
		for i := range r.ctr {
			if r.ctr[i].key == p.key {
				r.ctr[i].n += p.n
				continue next
			}
		}
		if len(r.ctr) < maxCounters {
			r.ctr = append(r.ctr, p)
			continue
		}
		// More distinct choices than maxCounters: they share one counter
		// (bounded memory; only the noise positions are affected).
		for i := range r.ctr {
			if r.ctr[i].key == keyOverflow {
				r.ctr[i].n += p.n
				continue next
			}
		}
		r.ctr[len(r.ctr)-1] = counter{keyOverflow, p.n}
	}
}

// ---- noise ----

// mix64 is the splitmix64 finalizer (Steele, Lea, Flood 2014).
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// noise returns a value uniform in [-Perturb, Perturb) that depends only on
// the seed, the choice key, the token position and the alternative rank.
func (r *Rewriter) noise(key, pos, rank uint64) float64 {
	h := mix64(r.seedMix + key*0x9e3779b97f4a7c15)
	h = mix64(h + (pos+1)*0xd1b54a32d192ed03)
	h = mix64(h ^ (rank+1)*0xaef17502108ef2d9)
	u := float64(h>>11)*(1.0/(1<<53))*2 - 1
	return r.p.Perturb * u
}

// ---- walk ----

type topInfo struct {
	out, content uint64
	delta        bool
}

func (r *Rewriter) walkTop() error {
	s := &r.s
	s.ws()
	if s.peek() != '{' {
		return errNotObject
	}
	var top topInfo
	if r.p.Perturb != 0 && bytes.Contains(s.b, keyOutputIdx) {
		if err := r.prescanTop(&top); err != nil {
			return err
		}
	}
	err := s.eachMember(func(ks, ke int) error {
		c := s.peek()
		switch string(s.b[ks:ke]) {
		case "choices":
			if r.touchLP && c == '[' {
				return r.choices(1)
			}
		case "prompt_logprobs":
			if r.touchLP {
				return r.promptLogprobs(1, keyPrompt)
			}
		case "logprobs":
			if r.touchLP && c == '[' {
				return r.respLogprobs(1, respKey(top.out, top.content), top.delta)
			}
		case "response":
			if r.touchLP && c == '{' {
				return r.responseObj(1)
			}
		case "output":
			if r.touchLP && c == '[' {
				return r.outputArr(1)
			}
		case "item":
			if r.touchLP && c == '{' {
				return r.outputItem(1, top.out)
			}
		case "part":
			if r.touchLP && c == '{' {
				return r.contentPart(1, top.out, top.content)
			}
		case "data":
			if r.touchEmb && c == '[' {
				return r.embData(1)
			}
		}
		return s.skipValue(1)
	})
	if err != nil {
		return err
	}
	s.ws()
	if s.i != len(s.b) {
		return errTrailing
	}
	return nil
}

// prescanTop reads type, output_index and content_index of a Responses API
// stream event, wherever they are in the object, so that the noise keys do
// not depend on member order. The cursor is restored.
func (r *Rewriter) prescanTop(top *topInfo) error {
	s := &r.s
	save := s.i
	defer func() { s.i = save }()
	return s.eachMember(func(ks, ke int) error {
		vs := s.i
		if err := s.skipValue(1); err != nil {
			return err
		}
		v := s.b[vs:s.i]
		switch string(s.b[ks:ke]) {
		case "type":
			top.delta = string(v) == `"response.output_text.delta"`
		case "output_index":
			top.out, _ = parseUint(v)
		case "content_index":
			top.content, _ = parseUint(v)
		}
		return nil
	})
}

func (r *Rewriter) choices(depth int) error {
	s := &r.s
	return s.eachElem(func(n int) error {
		if s.peek() == '{' {
			return r.choice(depth+1, uint64(n))
		}
		return s.skipValue(depth + 1)
	})
}

// choice walks one element of choices[]. Its "index" member (not its place
// in the array: a streamed chunk carries one choice at a time) keys the
// positions and the noise.
func (r *Rewriter) choice(depth int, idx uint64) error {
	s := &r.s
	have := false
	return s.eachMember(func(ks, ke int) error {
		switch string(s.b[ks:ke]) {
		case "index":
			vs := s.i
			err := s.skipValue(depth + 1)
			if err == nil && !have {
				if v, ok := parseUint(s.b[vs:s.i]); ok {
					idx, have = v, true
				}
			}
			return err
		case "logprobs":
			if r.p.Perturb != 0 && !have {
				idx, have = r.lookaheadIndex(depth, idx), true
			}
			return r.choiceLogprobs(depth+1, idx)
		case "prompt_logprobs":
			if r.p.Perturb != 0 && !have {
				idx, have = r.lookaheadIndex(depth, idx), true
			}
			return r.promptLogprobs(depth+1, keyPrompt|idx&0xffffffff)
		}
		return s.skipValue(depth + 1)
	})
}

// lookaheadIndex finds the "index" member that follows the current value
// in a choice object (servers put it first, but JSON does not promise it).
func (r *Rewriter) lookaheadIndex(depth int, def uint64) uint64 {
	s := &r.s
	save := s.i
	defer func() { s.i = save }()
	if s.skipValue(depth+1) != nil {
		return def
	}
	for {
		more, err := s.objectNext()
		if err != nil || !more {
			return def
		}
		ks, ke, err := s.key()
		if err != nil {
			return def
		}
		vs := s.i
		if s.skipValue(depth+1) != nil {
			return def
		}
		if string(s.b[ks:ke]) == "index" {
			if v, ok := parseUint(s.b[vs:s.i]); ok {
				return v
			}
			return def
		}
	}
}

// nullOrStrip handles the start of choices[].logprobs and prompt_logprobs:
// null is left alone, StripLogprobs replaces the value with null (what both
// APIs send when logprobs were not requested) and a value that is not a
// container opening with open is skipped. walk reports that the caller is
// to walk the value at the cursor.
func (r *Rewriter) nullOrStrip(depth int, open byte) (walk bool, err error) {
	s := &r.s
	start := s.i
	c := s.peek()
	if c == 'n' {
		return false, s.skipValue(depth)
	}
	if r.p.StripLogprobs {
		if err := s.skipValue(depth); err != nil {
			return false, err
		}
		r.addStr(start, s.i, "null")
		return false, nil
	}
	if c != open {
		return false, s.skipValue(depth)
	}
	return true, nil
}

// choiceLogprobs walks choices[].logprobs: chat {content, refusal} or
// legacy {tokens, token_logprobs, top_logprobs, text_offset}.
func (r *Rewriter) choiceLogprobs(depth int, idx uint64) error {
	s := &r.s
	if walk, err := r.nullOrStrip(depth, '{'); !walk {
		return err
	}
	var tok, lp, top span
	tok.s, lp.s, top.s = -1, -1, -1
	err := s.eachMember(func(ks, ke int) error {
		vs := s.i
		switch string(s.b[ks:ke]) {
		case "content", "refusal":
			if s.peek() == '[' {
				return r.entryArray(depth+1, idx, true)
			}
		case "tokens":
			err := s.skipValue(depth + 1)
			tok = span{vs, s.i}
			return err
		case "token_logprobs":
			err := s.skipValue(depth + 1)
			lp = span{vs, s.i}
			return err
		case "top_logprobs":
			err := s.skipValue(depth + 1)
			top = span{vs, s.i}
			return err
		}
		return s.skipValue(depth + 1)
	})
	if err != nil {
		return err
	}
	if lp.s >= 0 || top.s >= 0 {
		r.legacy(depth, idx, tok, lp, top)
	}
	return nil
}

// entryArray walks an array of logprob entries {token, logprob, bytes,
// top_logprobs[]}. counted entries take their positions from the stream's
// running counter for key; uncounted ones (a document that repeats the
// whole list, e.g. response.output_text.done) count from 0.
func (r *Rewriter) entryArray(depth int, key uint64, counted bool) error {
	s := &r.s
	var base uint64
	perturb := r.p.Perturb != 0
	if counted && perturb {
		base = r.position(key)
	}
	n := 0
	err := s.eachElem(func(i int) error {
		n++
		if s.peek() == '{' {
			return r.entry(depth+1, key, base+uint64(i))
		}
		return s.skipValue(depth + 1)
	})
	if err == nil && counted && perturb && n > 0 {
		r.advance(key, n)
	}
	return err
}

// entry walks one logprob entry, then computes and patches it as a whole,
// since the chosen token's value and its alternatives constrain each other.
func (r *Rewriter) entry(depth int, key, pos uint64) error {
	s := &r.s
	r.alts = r.alts[:0]
	r.groups = r.groups[:0]
	r.chosen = r.chosen[:0]
	tok := span{-1, -1}
	err := s.eachMember(func(ks, ke int) error {
		vs := s.i
		switch string(s.b[ks:ke]) {
		case "token":
			err := s.skipValue(depth + 1)
			if err == nil && s.b[vs] == '"' {
				tok = span{vs + 1, s.i - 1}
			}
			return err
		case "logprob":
			err := s.skipValue(depth + 1)
			if err == nil {
				r.chosen = append(r.chosen, r.number(vs, s.i, r.p.Perturb != 0))
			}
			return err
		case "top_logprobs":
			if s.peek() == '[' {
				return r.collectAltArray(depth + 1)
			}
		}
		return s.skipValue(depth + 1)
	})
	if err != nil {
		return err
	}
	r.finishEntry(key, pos, tok)
	return nil
}

// number reads the value at s:e as a logprob: ok when it is a number
// (anything else is left alone). The value is parsed only when parse is
// set: rounding alone works on the text (see roundText).
func (r *Rewriter) number(s, e int, parse bool) chosenLP {
	c := chosenLP{s: s, e: e}
	if b := r.s.b[s]; b == '-' || isDigit(b) {
		c.ok = true
		if parse {
			c.v, c.ok = parseNumber(r.s.b[s:e])
		}
	}
	return c
}

// collectAltArray records the elements of a top_logprobs array of
// {token, logprob, bytes} objects.
func (r *Rewriter) collectAltArray(depth int) error {
	s := &r.s
	g := group{open: s.i, lo: len(r.alts)}
	err := s.eachElem(func(int) error {
		a := alt{s: s.i, tok: span{-1, -1}, lp: span{-1, -1}}
		var err error
		if s.peek() == '{' {
			err = r.altObject(depth+1, &a)
		} else {
			err = s.skipValue(depth + 1)
		}
		if err != nil {
			return err
		}
		a.e = s.i
		r.alts = append(r.alts, a)
		return nil
	})
	if err != nil {
		return err
	}
	g.close = s.i - 1
	g.hi = len(r.alts)
	r.groups = append(r.groups, g)
	return nil
}

func (r *Rewriter) altObject(depth int, a *alt) error {
	s := &r.s
	return s.eachMember(func(ks, ke int) error {
		vs := s.i
		if err := s.skipValue(depth + 1); err != nil {
			return err
		}
		switch string(s.b[ks:ke]) {
		case "token":
			if s.b[vs] == '"' {
				a.tok = span{vs + 1, s.i - 1}
			}
		case "logprob":
			c := r.number(vs, s.i, false) // parsed when needed (parseAlts)
			a.lp = span{vs, s.i}
			a.v, a.ok = c.v, c.ok
		}
		return nil
	})
}

func (r *Rewriter) finishEntry(key, pos uint64, tok span) {
	var cv float64
	cok := false
	if n := len(r.chosen); n > 0 {
		cv, cok = r.chosen[n-1].v, r.chosen[n-1].ok
	}
	cout := cv
	if r.p.Perturb != 0 {
		for gi, g := range r.groups {
			alts := r.alts[g.lo:g.hi]
			// Only the alternatives that are kept, and those the chosen
			// value depends on (the first, for the ranking, and up to the
			// same token listed), need their values.
			need := len(alts)
			if r.maxAlt >= 0 {
				need = min(need, r.maxAlt)
			}
			last := gi == len(r.groups)-1
			if last && cok && len(alts) > 0 {
				need = max(need, 1, r.sameToken(tok, alts)+1)
			}
			r.parseAlts(alts[:need])
			r.perturbArray(key, pos, alts[:need])
			if last && cok {
				cout = r.chosenValue(key, pos, cv, tok, alts[:need])
			}
		}
		if cok && len(r.groups) == 0 {
			cout = r.chosenValue(key, pos, cv, tok, nil)
		}
	}
	// Patches in document order (the sampled token's logprob usually comes
	// before its top_logprobs), so that no sort is needed.
	ci := 0
	for _, g := range r.groups {
		for ; ci < len(r.chosen) && r.chosen[ci].s < g.open; ci++ {
			r.patchChosen(ci, cout)
		}
		alts := r.alts[g.lo:g.hi]
		for j := range alts {
			a := &alts[j]
			a.keep = r.maxAlt < 0 || j < r.maxAlt
			if a.keep && a.ok && r.numLP {
				r.patchNum(a.lp.s, a.lp.e, a.v, a.out, r.round)
			}
		}
		r.deleteDropped(g.open, g.close, alts)
	}
	for ; ci < len(r.chosen); ci++ {
		r.patchChosen(ci, cout)
	}
}

func (r *Rewriter) patchChosen(i int, out float64) {
	if c := r.chosen[i]; c.ok && r.numLP {
		r.patchNum(c.s, c.e, c.v, out, r.round)
	}
}

// sameToken returns the index of the first alternative whose token has
// the same bytes as tok, or -1.
func (r *Rewriter) sameToken(tok span, alts []alt) int {
	if tok.s < 0 {
		return -1
	}
	b := r.s.b
	for j := range alts {
		if a := &alts[j]; a.tok.s >= 0 && bytes.Equal(b[tok.s:tok.e], b[a.tok.s:a.tok.e]) {
			return j
		}
	}
	return -1
}

func (r *Rewriter) parseAlts(alts []alt) {
	for j := range alts {
		if a := &alts[j]; a.ok {
			a.v, a.ok = parseNumber(r.s.b[a.lp.s:a.lp.e])
		}
	}
}

// perturbArray sets out for alternatives ranked by their place in the array
// (top_logprobs arrays are sorted most likely first): noise keyed by rank,
// clamped to <= 0 and to the value of the alternative ranked above, so the
// ranking survives.
func (r *Rewriter) perturbArray(key, pos uint64, alts []alt) {
	if r.p.Perturb == 0 {
		for j := range alts {
			alts[j].out = alts[j].v
		}
		return
	}
	prev := 0.0
	for j := range alts {
		a := &alts[j]
		if !a.ok {
			continue
		}
		v := a.v + r.noise(key, pos, uint64(j))
		v = min(v, prev)
		a.out, prev = v, v
	}
}

// chosenValue returns the rewritten logprob of the sampled token. When the
// same token is listed among the alternatives with the same value, it gets
// that alternative's value (a consistent answer). Otherwise it gets its own
// noise and, if it was the most likely, every alternative is clamped below
// it so it stays ranked first.
func (r *Rewriter) chosenValue(key, pos uint64, cv float64, tok span, alts []alt) float64 {
	if r.p.Perturb == 0 {
		return cv
	}
	b := r.s.b
	if tok.s >= 0 {
		for j := range alts {
			a := &alts[j]
			if a.ok && a.v == cv && a.tok.s >= 0 && bytes.Equal(b[tok.s:tok.e], b[a.tok.s:a.tok.e]) {
				return a.out
			}
		}
	}
	c := min(cv+r.noise(key, pos, chosenRank), 0)
	top := true
	for j := range alts {
		if alts[j].ok && alts[j].v > cv {
			top = false
			break
		}
	}
	if top {
		for j := range alts {
			if alts[j].ok && alts[j].out > c {
				alts[j].out = c
			}
		}
	}
	return c
}

// deleteDropped removes the members/elements whose keep is false from the
// container whose brackets are at open and close, with their commas:
// dropped items before the first kept one go with the comma after them,
// the others with the comma before them.
func (r *Rewriter) deleteDropped(open, close int, ms []alt) {
	first := -1
	for j := range ms {
		if ms[j].keep {
			first = j
			break
		}
	}
	if first < 0 {
		if len(ms) > 0 {
			r.addDel(open+1, close)
		}
		return
	}
	if first > 0 {
		r.addDel(ms[0].s, ms[first].s)
	}
	for j := first + 1; j < len(ms); j++ {
		if !ms[j].keep {
			r.addDel(ms[j-1].e, ms[j].e)
		}
	}
}

// legacy rewrites a text_completion logprobs object: token_logprobs[i] is
// the sampled token's value and top_logprobs[i] an object token -> logprob
// of the alternatives at position i.
func (r *Rewriter) legacy(depth int, idx uint64, tok, lp, top span) {
	r.legTok = r.collectElems(r.legTok[:0], tok)
	r.legTop = r.collectElems(r.legTop[:0], top)
	r.legLP = r.legLP[:0]
	if lp.s >= 0 {
		var t scanner
		t.b, t.i = r.s.b, lp.s
		if t.peek() == '[' {
			_ = t.eachElem(func(int) error {
				vs := t.i
				_ = t.skipValue(depth + 2) // validated already
				r.legLP = append(r.legLP, r.number(vs, t.i, r.p.Perturb != 0))
				return nil
			})
		}
	}
	n := max(len(r.legTok), len(r.legLP), len(r.legTop))
	perturb := r.p.Perturb != 0
	var base uint64
	if perturb {
		base = r.position(idx)
	}
	for i := 0; i < n; i++ {
		pos := base + uint64(i)
		r.alts = r.alts[:0]
		obj := span{-1, -1}
		if i < len(r.legTop) && r.s.b[r.legTop[i].s] == '{' {
			obj = r.legTop[i]
			r.collectMembers(depth+2, obj.s, false)
		}
		r.rankAndPerturb(idx, pos, r.alts)
		if i < len(r.legLP) && r.legLP[i].ok {
			c := r.legLP[i]
			t := span{-1, -1}
			if i < len(r.legTok) && r.s.b[r.legTok[i].s] == '"' {
				t = span{r.legTok[i].s + 1, r.legTok[i].e - 1}
			}
			out := r.chosenValue(idx, pos, c.v, t, r.alts)
			if r.numLP {
				r.patchNum(c.s, c.e, c.v, out, r.round)
			}
		}
		r.patchAlts(obj)
	}
	if perturb && n > 0 {
		r.advance(idx, n)
	}
}

// collectElems appends the spans of the elements of the array at sp.
func (r *Rewriter) collectElems(dst []span, sp span) []span {
	if sp.s < 0 || r.s.b[sp.s] != '[' {
		return dst
	}
	var t scanner
	t.b, t.i = r.s.b, sp.s
	_ = t.eachElem(func(int) error {
		vs := t.i
		_ = t.skipValue(1) // validated already
		dst = append(dst, span{vs, t.i})
		return nil
	})
	return dst
}

// collectMembers fills r.alts with the members of the (validated) object
// at off. With nested, each member's value is an object whose "logprob"
// member holds the number (vLLM prompt_logprobs); otherwise the value is the
// number (legacy top_logprobs). tok spans the member name.
func (r *Rewriter) collectMembers(depth, off int, nested bool) {
	rank := r.p.Perturb != 0 || r.maxAlt >= 0 // values are needed to rank
	var t scanner
	t.b, t.i = r.s.b, off
	_ = t.eachMember(func(kcs, kce int) error {
		vs := t.i
		_ = t.skipValue(depth + 1) // validated already
		// kcs-1 is the name's opening quote.
		a := alt{s: kcs - 1, e: t.i, tok: span{kcs, kce}, lp: span{-1, -1}}
		if !nested {
			c := r.number(vs, t.i, rank)
			a.lp, a.v, a.ok = span{vs, t.i}, c.v, c.ok
		} else if t.b[vs] == '{' {
			var u scanner
			u.b, u.i = t.b, vs
			_ = u.eachMember(func(k2s, k2e int) error {
				v2 := u.i
				_ = u.skipValue(depth + 2)
				if string(u.b[k2s:k2e]) == "logprob" {
					c := r.number(v2, u.i, rank)
					a.lp, a.v, a.ok = span{v2, u.i}, c.v, c.ok
				}
				return nil
			})
		}
		r.alts = append(r.alts, a)
		return nil
	})
}

// rankAndPerturb ranks object members by value (most likely first, stable;
// non-numbers last), marks the MaxAlternatives best as kept and, with
// noise, keys it by rank and clamps each value to the one ranked above.
func (r *Rewriter) rankAndPerturb(key, pos uint64, alts []alt) {
	order := r.order[:0]
	for j := range alts {
		order = append(order, int32(j))
	}
	less := func(a, b int32) int {
		x, y := &alts[a], &alts[b]
		switch {
		case x.ok != y.ok:
			if x.ok {
				return -1
			}
			return 1
		case x.v > y.v:
			return -1
		case x.v < y.v:
			return 1
		}
		return 0
	}
	if len(order) <= 32 {
		for i := 1; i < len(order); i++ {
			for j := i; j > 0 && less(order[j], order[j-1]) < 0; j-- {
				order[j], order[j-1] = order[j-1], order[j]
			}
		}
	} else {
		slices.SortStableFunc(order, less)
	}
	r.order = order
	prev := 0.0
	for rank, j := range order {
		a := &alts[j]
		a.keep = r.maxAlt < 0 || rank < r.maxAlt
		a.out = a.v
		if r.p.Perturb != 0 && a.ok {
			v := min(a.v+r.noise(key, pos, uint64(rank)), prev)
			a.out, prev = v, v
		}
	}
}

// patchAlts writes the numbers and deletions for r.alts, the members of
// the object at obj.
func (r *Rewriter) patchAlts(obj span) {
	if obj.s < 0 {
		return
	}
	for j := range r.alts {
		a := &r.alts[j]
		if a.keep && a.ok && r.numLP {
			r.patchNum(a.lp.s, a.lp.e, a.v, a.out, r.round)
		}
	}
	r.deleteDropped(obj.s, obj.e-1, r.alts)
}

// promptLogprobs walks vLLM's prompt_logprobs: an array with one entry per
// prompt token, null or an object token-id -> {logprob, rank,
// decoded_token}. Positions are the prompt positions (not counted across
// documents: the list is sent once).
func (r *Rewriter) promptLogprobs(depth int, key uint64) error {
	s := &r.s
	if walk, err := r.nullOrStrip(depth, '['); !walk {
		return err
	}
	return s.eachElem(func(n int) error {
		vs := s.i
		if err := s.skipValue(depth + 1); err != nil {
			return err
		}
		if s.b[vs] == '{' {
			r.alts = r.alts[:0]
			r.collectMembers(depth+1, vs, true)
			r.rankAndPerturb(key, uint64(n), r.alts)
			r.patchAlts(span{vs, s.i})
		}
		return nil
	})
}

// respLogprobs handles a Responses API logprobs array.
func (r *Rewriter) respLogprobs(depth int, key uint64, counted bool) error {
	s := &r.s
	if r.p.StripLogprobs {
		start := s.i
		if err := s.skipValue(depth); err != nil {
			return err
		}
		r.addStr(start, s.i, "[]")
		return nil
	}
	return r.entryArray(depth, key, counted)
}

// responseObj walks a Response object (response.completed & co.).
func (r *Rewriter) responseObj(depth int) error {
	s := &r.s
	return s.eachMember(func(ks, ke int) error {
		if string(s.b[ks:ke]) == "output" && s.peek() == '[' {
			return r.outputArr(depth + 1)
		}
		return s.skipValue(depth + 1)
	})
}

func (r *Rewriter) outputArr(depth int) error {
	s := &r.s
	return s.eachElem(func(n int) error {
		if s.peek() == '{' {
			return r.outputItem(depth+1, uint64(n))
		}
		return s.skipValue(depth + 1)
	})
}

// outputItem walks an output item; its content[] parts may carry logprobs.
func (r *Rewriter) outputItem(depth int, out uint64) error {
	s := &r.s
	return s.eachMember(func(ks, ke int) error {
		if string(s.b[ks:ke]) == "content" && s.peek() == '[' {
			return s.eachElem(func(n int) error {
				if s.peek() == '{' {
					return r.contentPart(depth+2, out, uint64(n))
				}
				return s.skipValue(depth + 2)
			})
		}
		return s.skipValue(depth + 1)
	})
}

// contentPart walks a content part (type output_text) whose logprobs
// array holds the whole part's entries, positions from 0.
func (r *Rewriter) contentPart(depth int, out, content uint64) error {
	s := &r.s
	return s.eachMember(func(ks, ke int) error {
		if string(s.b[ks:ke]) == "logprobs" && s.peek() == '[' {
			return r.respLogprobs(depth+1, respKey(out, content), false)
		}
		return s.skipValue(depth + 1)
	})
}

// ---- embeddings ----

func (r *Rewriter) embData(depth int) error {
	s := &r.s
	return s.eachElem(func(int) error {
		if s.peek() == '{' {
			return r.embObject(depth + 1)
		}
		return s.skipValue(depth + 1)
	})
}

func (r *Rewriter) embObject(depth int) error {
	s := &r.s
	return s.eachMember(func(ks, ke int) error {
		if string(s.b[ks:ke]) == "embedding" {
			switch s.peek() {
			case '[':
				return r.embFloats(depth + 1)
			case '"':
				vs := s.i
				if err := s.skipString(); err != nil {
					return err
				}
				r.embBase64(vs+1, s.i-1)
				return nil
			}
		}
		return s.skipValue(depth + 1)
	})
}

func (r *Rewriter) embFloats(depth int) error {
	s := &r.s
	k := r.embRound
	return s.eachElem(func(int) error {
		vs := s.i
		if c := s.peek(); c == '-' || isDigit(c) {
			if err := s.skipNumber(); err != nil {
				return err
			}
			r.addRound(vs, s.i, k)
			return nil
		}
		return s.skipValue(depth + 1)
	})
}

// embBase64 rounds a base64 embedding (little-endian float32, the OpenAI
// encoding_format "base64") in place: same length, so a client's decoder
// sees the same dimension. Strings with escapes or that are not canonical
// padded base64 of whole float32s are left alone.
func (r *Rewriter) embBase64(s, e int) {
	src := r.s.b[s:e]
	if bytes.IndexByte(src, '\\') >= 0 {
		return
	}
	enc := base64.StdEncoding
	need := enc.DecodedLen(len(src))
	if cap(r.b64) < need {
		r.b64 = make([]byte, need)
	}
	buf := r.b64[:need]
	n, err := enc.Decode(buf, src)
	if err != nil || n%4 != 0 || enc.EncodedLen(n) != len(src) {
		return
	}
	buf = buf[:n]
	p := pow10[r.embRound]
	for i := 0; i < n; i += 4 {
		f := math.Float32frombits(binary.LittleEndian.Uint32(buf[i:]))
		x := float64(f) * p
		if math.IsNaN(x) || math.Abs(x) >= 1<<52 {
			continue
		}
		g := float32(math.Round(x) / p)
		if g == 0 {
			g = 0
		}
		binary.LittleEndian.PutUint32(buf[i:], math.Float32bits(g))
	}
	lo := len(r.lit)
	r.lit = enc.AppendEncode(r.lit, buf)
	if !bytes.Equal(r.lit[lo:], src) {
		r.add(patch{s: s, e: e, kind: pBytes, lo: lo, hi: len(r.lit)})
	} else {
		r.lit = r.lit[:lo]
	}
}
