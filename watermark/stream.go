package watermark

import (
	"encoding/binary"
	"math/bits"
	"unicode"
	"unicode/utf8"
)

// Marker marks response text with one key: a keyed, conditional synonym
// substitution. For a word of a synonym set at a substitutable position, the
// member written is a keyed function of (set, context), where the context is
// the previous token (the previous word, normalised to its set when it is a
// set member, or the punctuation in between). Given the context the choice
// is fixed, which is what a student that learns next-word statistics from
// the text inherits (keyed lexical substitution: He et al., AAAI 2022). The
// context -> member mapping is CATER's frequency-preserving one (He et al.,
// NeurIPS 2022; contexts.go): weighted by how often each context occurs in
// the lexicon's context statistics, every member keeps its natural share,
// so comparing word frequencies of marked and unmarked text shows nothing.
//
// A Marker is immutable and safe for concurrent use; each response (each
// choice of a response) gets its own Stream.
type Marker struct {
	lex   *Lexicon
	key   *Key
	plans []setPlan // the key's assignment per set (contexts.go)
}

// NewMarker returns a marker for key over lex. It runs the key's
// frequency-preserving assignment for every set once (a few milliseconds
// for the default lexicon), so build one per key, not per response.
func NewMarker(lex *Lexicon, key *Key) *Marker {
	return &Marker{lex: lex, key: key, plans: lex.plans(key, false)}
}

// Key is the key the marker marks with.
func (m *Marker) Key() *Key { return m.key }

// Lexicon is the synonym table the marker substitutes from.
func (m *Marker) Lexicon() *Lexicon { return m.lex }

// NewStream returns the stateful transformer for one response's text.
func (m *Marker) NewStream() *Stream {
	s := &Stream{lex: m.lex, plans: m.plans, prf: prf{block: m.key.lexBlock, macKey: m.key.lexMAC}}
	s.Reset()
	return s
}

// Mark marks a whole text: the same bytes a Stream gives for it in any
// fragmentation.
func (m *Marker) Mark(text []byte) ([]byte, Stats) {
	s := m.NewStream()
	out := s.Write(make([]byte, 0, len(text)+len(text)/8), text)
	out = s.Flush(out)
	return out, s.Stats()
}

// Span is a byte range [Start, End) in a response's text stream, counted
// from the first byte the Stream saw.
type Span struct{ Start, End int64 }

// Substitution is one replaced word: where it was in the input text and
// where its replacement is in the output text. A logprob rewriter uses it to
// drop or fix the logprob entries of the tokens that covered the word.
type Substitution struct {
	In, Out Span
}

// Stats counts what a Stream saw and did.
type Stats struct {
	Words       int64 // words (maximal runs of letters and digits)
	Candidates  int64 // words of a synonym set at a substitutable position
	Substituted int64 // candidates replaced by another member
	// Unmarked counts candidates the frequency-preserving assignment
	// leaves alone: in contexts too frequent to move without shifting a
	// member's share, and the occurrences of a tilted context outside its
	// keyed share.
	Unmarked int64
}

// Character classes of the scanner (ASCII table below; other runes are
// classified in classifyRune).
const (
	fWord    = 1 << iota // letter or digit: part of a word
	fDigit               // digit: the word is no candidate
	fSpace               // white space (a token boundary that is no token)
	fNewline             // line feed (also a token: a context)
	fLeftOK              // may stand right before a candidate
	fRightOK             // may stand right after a candidate
	fTick                // backtick: Markdown code spans and fences
)

// asciiClass classifies ASCII bytes. The left/right sets are deliberately
// small: a word joined to its neighbour by anything else (hyphen,
// apostrophe, slash, underscore, @, digits...) is part of a compound, a
// contraction, a path, an identifier or a URL and is never substituted.
var asciiClass = func() (t [128]uint8) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = fWord
		t[c-'a'+'A'] = fWord
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = fWord | fDigit
	}
	for _, c := range " \t\r\f\v" {
		t[c] = fSpace | fLeftOK | fRightOK
	}
	t['\n'] = fSpace | fNewline | fLeftOK | fRightOK
	for _, c := range `([{"*` {
		t[c] |= fLeftOK
	}
	for _, c := range `.,;:!?)]}"*` {
		t[c] |= fRightOK
	}
	t['`'] = fTick
	return t
}()

// classOf classifies a decoded rune.
func classOf(r rune) uint8 {
	if r < utf8.RuneSelf {
		return asciiClass[r]
	}
	return classifyRune(r)
}

func classifyRune(r rune) uint8 {
	switch r {
	case '\u201c': // left double quotation mark
		return fLeftOK
	case '\u201d', '\u2026': // right double quotation mark, ellipsis
		return fRightOK
	case '\u2013', '\u2014': // en and em dash
		return fLeftOK | fRightOK
	case '\u2028', '\u2029':
		return fSpace | fNewline | fLeftOK | fRightOK
	}
	switch {
	case r == utf8.RuneError:
		return 0
	case unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r):
		return fWord | fDigit // a non-ASCII word is no candidate
	case unicode.IsSpace(r):
		return fSpace | fLeftOK | fRightOK
	}
	return 0
}

// Context kinds: the first byte of a context, distinct from any word byte.
const (
	ctxSet   = 0x00 // followed by the set id (2 bytes)
	ctxPunct = 0x01 // followed by the punctuation rune's bytes
	ctxStart = 0x02 // start of the text
)

// maxCtx bounds a context: a word is truncated to maxWord bytes.
const maxCtx = maxWord + 2

type ctxBuf struct {
	b [maxCtx]byte
	n uint8
}

func (c *ctxBuf) bytes() []byte { return c.b[:c.n] }

func (c *ctxBuf) set(kind byte, b []byte) {
	c.b[0] = kind
	c.n = uint8(1 + copy(c.b[1:], b))
}

// sentenceStart: a Title-case word is substituted only here; elsewhere a
// capital letter most likely starts a proper noun ("Main Street").
func (c *ctxBuf) sentenceStart() bool {
	if c.n == 0 || c.b[0] == ctxStart {
		return true
	}
	return c.b[0] == ctxPunct && c.n == 2 && (c.b[1] == '.' || c.b[1] == '!' || c.b[1] == '?' || c.b[1] == '\n')
}

func (c *ctxBuf) article() bool {
	w := c.bytes()
	return string(w) == "a" || string(w) == "an"
}

// Stream is the per-response transformer: it takes the response text in
// fragments, in order, split anywhere (even inside a UTF-8 sequence), and
// returns the marked text. It holds back only the unfinished word (and an
// incomplete UTF-8 sequence after it), so the output lags the input by at
// most one word; Flush ends the text. The output is the same however the
// input is fragmented. Every byte outside a substituted word passes through
// unchanged. Not safe for concurrent use.
type Stream struct {
	lex     *Lexicon
	plans   []setPlan
	prf     prf
	observe bool        // verifier mode: no output, candidates recorded
	cands   []candidate // observe mode
	served  *Served     // marker mode: the candidates' groups (RecordServed)

	pend  [utf8.UTFMax]byte // incomplete UTF-8 sequence
	npend int

	// the current word
	inWord  bool
	pass    bool // not a candidate: its bytes pass through as they come
	alpha   bool // ASCII letters only, at most maxWord bytes so far
	word    [maxWord]byte
	nword   int // held bytes of word
	low     [maxWord]byte
	nlow    int // lower-case prefix for the context
	wordIn  int64
	wordCtx ctxBuf

	// what precedes the next word
	last    ctxBuf // previous word (canonical)
	gap     ctxBuf // last punctuation since it
	hasGap  bool
	noToken bool
	leftOK  bool

	ticks    int
	inInline bool
	inFence  bool

	// tok is the hash of the latest token (word or punctuation, as
	// contexts name them) and hist a rolling hash of every token of the
	// response before it: the history a tilted context's keyed share is
	// drawn from (prf.tilt). The whole prefix, not the last few tokens:
	// few distinct short histories precede a heavy context (a line feed
	// after "." and a number), and a key's realised share over them
	// would stray from lambda by more than the marginals allow.
	tok  uint64
	hist uint64

	inPos, outPos int64
	subs          []Substitution
	stats         Stats
	msg           [prfMsgLen]byte
}

type candidate struct {
	set    uint16
	member uint8
	slot   uint8
	ctx    ctxBuf
}

// Reset makes the stream ready for a new response.
func (s *Stream) Reset() {
	lex, plans, p, obs, sv := s.lex, s.plans, s.prf, s.observe, s.served
	subs, cands := s.subs[:0], s.cands[:0]
	*s = Stream{lex: lex, plans: plans, prf: p, observe: obs, served: sv, subs: subs, cands: cands, noToken: true, leftOK: true}
}

// Held is how many input bytes the stream holds back (the unfinished word
// and any incomplete UTF-8 sequence); Flush emits them.
func (s *Stream) Held() int { return s.nword + s.npend }

// Stats returns the counts so far.
func (s *Stream) Stats() Stats { return s.stats }

// Substitutions lists the words replaced during the last Write or Flush.
// The slice is reused by the next call.
func (s *Stream) Substitutions() []Substitution { return s.subs }

// Write appends to dst the output for fragment p and returns it.
func (s *Stream) Write(dst, p []byte) []byte {
	s.subs = s.subs[:0]
	for i := 0; i < len(p); {
		b := p[i]
		if s.npend == 0 && b < utf8.RuneSelf {
			dst = s.char(dst, p[i:i+1], asciiClass[b])
			i++
			continue
		}
		if s.npend == 0 {
			// A complete multi-byte rune inside p: no copy.
			if r, n := utf8.DecodeRune(p[i:]); r != utf8.RuneError || n > 1 {
				dst = s.char(dst, p[i:i+n], classifyRune(r))
				i += n
				continue
			}
			if utf8.FullRune(p[i:]) {
				dst = s.char(dst, p[i:i+1], 0) // invalid byte
				i++
				continue
			}
		}
		s.pend[s.npend] = b
		s.npend++
		i++
		dst = s.drainPend(dst, false)
	}
	return dst
}

// drainPend processes the pending bytes once they form a rune (or can no
// longer form one); at the end of the text (final) every pending byte is
// processed.
func (s *Stream) drainPend(dst []byte, final bool) []byte {
	for s.npend > 0 {
		if !final && !utf8.FullRune(s.pend[:s.npend]) {
			return dst
		}
		r, n := utf8.DecodeRune(s.pend[:s.npend])
		cls := classOf(r)
		if r == utf8.RuneError && n <= 1 {
			n, cls = 1, 0
		}
		var rb [utf8.UTFMax]byte
		copy(rb[:], s.pend[:n])
		copy(s.pend[:], s.pend[n:s.npend])
		s.npend -= n
		dst = s.char(dst, rb[:n], cls)
	}
	return dst
}

// Flush ends the text: the held word is decided (the end of the text is a
// boundary) and emitted. The stream is then spent; Reset reuses it.
func (s *Stream) Flush(dst []byte) []byte {
	s.subs = s.subs[:0]
	dst = s.drainPend(dst, true)
	if s.inWord {
		dst = s.endWord(dst, true)
	}
	return dst
}

func (s *Stream) emit(dst, b []byte) []byte {
	if s.observe {
		return dst
	}
	s.outPos += int64(len(b))
	return append(dst, b...)
}

// char processes one rune (its bytes rb, its class cls).
func (s *Stream) char(dst, rb []byte, cls uint8) []byte {
	s.inPos += int64(len(rb))
	if cls&fTick == 0 && s.ticks > 0 {
		s.endTicks()
	}
	if cls&fWord != 0 {
		if !s.inWord {
			s.startWord(int64(len(rb)))
		}
		return s.wordBytes(dst, rb, cls)
	}
	if s.inWord {
		dst = s.endWord(dst, cls&fRightOK != 0)
	}
	if cls&fTick != 0 {
		s.ticks++
	}
	if cls&fNewline != 0 {
		s.inInline = false // an inline code span does not outlive its line
	}
	dst = s.emit(dst, rb)
	if cls&fSpace == 0 || cls&fNewline != 0 {
		s.gap.set(ctxPunct, rb)
		s.hasGap = true
		s.noToken = false
		s.pushToken(s.gap.bytes())
	}
	s.leftOK = cls&fLeftOK != 0
	return dst
}

// endTicks closes a run of backticks: three or more open or close a fenced
// code block, one or two an inline code span (CommonMark 0.31, sections
// 4.5 and 6.1, simplified: runs need not match in length).
func (s *Stream) endTicks() {
	if s.ticks >= 3 {
		s.inFence = !s.inFence
		s.inInline = false
	} else if !s.inFence {
		s.inInline = !s.inInline
	}
	s.ticks = 0
}

func (s *Stream) startWord(n int64) {
	s.inWord = true
	s.nword, s.nlow = 0, 0
	s.alpha = true
	s.pass = !s.leftOK || s.inInline || s.inFence
	s.wordIn = s.inPos - n
	switch {
	case s.noToken:
		s.wordCtx.set(ctxStart, nil)
	case s.hasGap:
		s.wordCtx = s.gap
	default:
		s.wordCtx = s.last
	}
}

func (s *Stream) wordBytes(dst, rb []byte, cls uint8) []byte {
	for _, b := range rb {
		if s.nlow < maxWord {
			if b >= 'A' && b <= 'Z' {
				b += 'a' - 'A'
			}
			s.low[s.nlow] = b
			s.nlow++
		} else {
			s.alpha = false
		}
	}
	if cls&fDigit != 0 {
		s.alpha = false
	}
	if !s.pass && (!s.alpha || s.nword+len(rb) > maxWord) {
		// Not a candidate after all: release what is held.
		s.pass = true
		dst = s.emit(dst, s.word[:s.nword])
		s.nword = 0
	}
	if s.pass {
		return s.emit(dst, rb)
	}
	s.nword += copy(s.word[s.nword:], rb)
	return dst
}

// endWord decides the word that just ended; rightOK says whether the
// character after it (or the end of the text) allows a substitution.
func (s *Stream) endWord(dst []byte, rightOK bool) []byte {
	s.inWord = false
	s.stats.Words++
	e, inSet := lexEntry{}, false
	if s.alpha {
		e, inSet = s.lex.words[string(s.low[:s.nlow])]
	}
	if !s.pass {
		if rightOK && inSet {
			dst = s.candidate(dst, e)
		} else {
			dst = s.emit(dst, s.word[:s.nword])
		}
	}
	s.nword = 0
	if inSet {
		var id [2]byte
		binary.BigEndian.PutUint16(id[:], e.set)
		s.last.set(ctxSet, id[:])
	} else {
		s.last.n = uint8(copy(s.last.b[:], s.low[:s.nlow]))
	}
	s.pushToken(s.last.bytes())
	s.hasGap, s.noToken = false, false
	return dst
}

// pushToken records a token in the history: FNV-1a of its context bytes
// (canonical: a set member is its set), so marked and unmarked text have
// the same history and marking is idempotent.
func (s *Stream) pushToken(b []byte) {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	s.hist = bits.RotateLeft64((s.hist^s.tok)*0x9e3779b97f4a7c15, 31)
	s.tok = h
}

// history is the rolling hash of the tokens before the candidate's
// context.
func (s *Stream) history() uint64 { return s.hist }

type casing uint8

const (
	caseLower casing = iota
	caseTitle
	caseUpper
	caseMixed
)

func caseOf(w []byte) casing {
	upper := 0
	for _, c := range w {
		if c >= 'A' && c <= 'Z' {
			upper++
		}
	}
	switch {
	case upper == 0:
		return caseLower
	case upper == len(w):
		return caseUpper
	case upper == 1 && w[0] >= 'A' && w[0] <= 'Z':
		return caseTitle
	}
	return caseMixed
}

func appendCased(dst []byte, w string, c casing) []byte {
	n := len(dst)
	dst = append(dst, w...)
	switch c {
	case caseTitle:
		dst[n] -= 'a' - 'A'
	case caseUpper:
		for i := n; i < len(dst); i++ {
			dst[i] -= 'a' - 'A'
		}
	}
	return dst
}

func (s *Stream) candidate(dst []byte, e lexEntry) []byte {
	w := s.word[:s.nword]
	c := caseOf(w)
	ls := &s.lex.sets[e.set]
	if c == caseMixed || (c == caseTitle && !s.wordCtx.sentenceStart()) || (ls.mixedOnset && s.wordCtx.article()) {
		return s.emit(dst, w)
	}
	s.stats.Candidates++
	if s.observe {
		s.cands = append(s.cands, candidate{set: e.set, member: e.member, slot: e.slot, ctx: s.wordCtx})
		return dst
	}
	if s.served != nil {
		s.served.add(e.set, e.slot, s.wordCtx.bytes())
	}
	u := unitOf(e.set, e.slot)
	m, j := s.lex.choose(&s.prf, s.msg[:], s.plans, u, s.wordCtx.bytes())
	if m >= 0 && j >= 0 {
		// A tilted context writes its member at a keyed share of its
		// occurrences, drawn from the tokens before it: over the
		// occurrences a student sees, the share is the plan's lambda.
		// The away row of a pair writes its member's occurrences, at
		// such a share, as the other members (contexts.go, pairPlan).
		plan := &s.plans[u]
		thr := plan.thr[j]
		switch {
		case plan.away != nil && plan.away[j]:
			if int(e.member) != m {
				m = int(e.member)
				break
			}
			r, r2 := s.prf.tilt2(u, j, s.history())
			if thr != full && r >= thr {
				m = -1
				break
			}
			m = plan.awayMember(j, len(ls.members), r2)
		case thr != full && s.prf.tilt(u, j, s.history()) >= thr:
			m = -1
		}
	}
	if m < 0 {
		s.stats.Unmarked++
	}
	if m < 0 || m == int(e.member) {
		return s.emit(dst, w)
	}
	s.stats.Substituted++
	start := len(dst)
	dst = appendCased(dst, ls.members[m].forms[e.slot], c)
	n := int64(len(dst) - start)
	s.subs = append(s.subs, Substitution{
		In:  Span{s.wordIn, s.wordIn + int64(len(w))},
		Out: Span{s.outPos, s.outPos + n},
	})
	s.outPos += n
	return dst
}
