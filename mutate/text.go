package mutate

// Generated text as a rewriting target. A text policy (a lexical
// watermark, see package watermark) changes the words of an answer; the
// format walks find where an API puts them and hand each piece to a
// TextRewriter, which returns its replacement. Logprob rewriting and text
// rewriting share the document's patch list, so both go out in the same
// single copy.

// TextKind says what a piece of generated text is.
type TextKind uint8

const (
	// TextOutput is the answer itself.
	TextOutput TextKind = iota
	// TextReasoning is reasoning shown to the client (Anthropic thinking
	// blocks): the traces that reasoning-harvesting campaigns collect.
	TextReasoning
)

// TextLoc says where a piece of generated text belongs.
type TextLoc struct {
	// Block is the text's stream within the response: the content block
	// index for Anthropic Messages. Pieces with the same Block and Kind
	// continue each other, in document order.
	Block uint64
	Kind  TextKind
	// Delta is set for a piece that continues the block's text
	// (content_block_delta); unset for a whole text (a content block of a
	// non-streamed message, or the text a content_block_start opens with).
	Delta bool
	// End is set on the piece that ends a Delta block: a choice whose
	// finish_reason is set (Chat Completions, legacy Completions) or the
	// Responses API's response.output_text.done. A rewriter that holds
	// text back across pieces (the unfinished word of a delta stream)
	// appends everything it still holds for the block to this piece. The
	// walk calls RewriteText with an empty raw when the ending document
	// carries no text for the block, and inserts what comes back (into the
	// choice's delta, or as a delta event of its own before
	// response.output_text.done; see TextLoc in walk_choices.go and
	// walk_responses.go).
	End bool
}

// TextHolder is implemented by a TextRewriter that holds text back across
// pieces. HeldText is the number of input bytes it holds: an SSEStream
// counts them in Held, so a gateway's held-bytes bound covers them.
type TextHolder interface {
	HeldText() int
}

// TextDropper is implemented by a TextRewriter that changes words: after
// each RewriteText it reports the byte ranges of the piece's decoded text
// (offsets from the piece's first byte) whose tokens lose their logprob
// entries, because the word they spell was substituted, or may still be
// (a held word that is already a substitutable surface). The walks drop
// those entries (see dropEntries in entries.go): a logprob entry that
// spelled the original word would both undo the mark and tell a reader
// which word was replaced. Fixing the entries instead (rewriting the token
// and its alternatives) is not possible: the distribution at the new word
// is not known to the gateway.
type TextDropper interface {
	DropSpans() []TextSpan
}

// TextSpan is a byte range [Start, End) of a piece's decoded text.
type TextSpan struct{ Start, End int }

// TextRewriter rewrites generated text. RewriteText gets raw, the content
// of the JSON string holding the piece (between its quotes, escapes as
// sent), and appends the replacement content to dst, escaped as JSON
// string content without quotes; it reports whether the piece is to be
// replaced (when it is not, dst must come back unchanged). It is called in
// document order, once per piece, only for documents that are valid JSON
// (an invalid document is passed through and its text never seen). It must
// not retain raw or dst.
type TextRewriter interface {
	RewriteText(dst []byte, loc TextLoc, raw []byte) ([]byte, bool)
}

// SetTextRewriter makes the Rewriter hand every piece of generated text it
// finds to t (nil: none). The walks that report text: Anthropic Messages
// (walk_anthropic.go, End at content_block_stop), Chat Completions, legacy Completions
// (walk_choices.go) and the Responses API (walk_responses.go). With a text
// rewriter set every document is walked (no fast path).
func (r *Rewriter) SetTextRewriter(t TextRewriter) {
	r.text = t
	r.textHold, _ = t.(TextHolder)
	r.textDrop, _ = t.(TextDropper)
}

// TextHeld is the number of text bytes the text rewriter holds back
// across documents (0 without one, or when it holds none).
func (r *Rewriter) TextHeld() int {
	if r.textHold == nil {
		return 0
	}
	return r.textHold.HeldText()
}

// RewriterOption configures a Rewriter built by NewRewriterFor.
type RewriterOption func(*Rewriter)

// With applies opts to r (a Rewriter built by NewRewriter) and returns it.
func (r *Rewriter) With(opts ...RewriterOption) *Rewriter {
	for _, o := range opts {
		o(r)
	}
	return r
}

// TextEnds reports whether f's walk marks where a block of generated text
// ends (TextLoc.End), which a text rewriter that holds text back across
// documents needs to release it: the OpenAI-compatible formats and
// Anthropic Messages (content_block_stop).
func (f Format) TextEnds() bool { return f.isOpenAI() || f == FormatAnthropic }

// WithTextRewriter sets the Rewriter's text rewriter (SetTextRewriter).
func WithTextRewriter(t TextRewriter) RewriterOption {
	return func(r *Rewriter) {
		if t != nil {
			r.SetTextRewriter(t)
		}
	}
}

// textAt hands the string content at s:e to the text rewriter and patches
// the replacement in. It records the spans whose logprob entries go
// (r.drops) and returns them.
func (r *Rewriter) textAt(loc TextLoc, s, e int) []TextSpan {
	r.drops = r.drops[:0]
	if r.text == nil {
		return nil
	}
	lo := len(r.lit)
	buf, ok := r.text.RewriteText(r.litBuf(), loc, r.s.b[s:e])
	if r.textDrop != nil {
		r.drops = append(r.drops, r.textDrop.DropSpans()...)
	}
	if !ok {
		r.lit = buf[:lo]
		return r.drops
	}
	r.replaceLit(s, e, buf)
	return r.drops
}

// textTail asks the text rewriter for what it still holds of an ending
// block and returns it (escaped JSON string content) in r.lit from lo, or
// ok false when there is nothing.
func (r *Rewriter) textTail(loc TextLoc) (lo int, ok bool) {
	if r.text == nil {
		return 0, false
	}
	lo = len(r.lit)
	buf, ok := r.text.RewriteText(r.litBuf(), loc, nil)
	if !ok || len(buf) == lo {
		r.lit = buf[:lo]
		return lo, false
	}
	r.lit = buf
	return lo, true
}

// wrapLit replaces doc[s:e] (s == e: inserts at s) with prefix,
// r.lit[lo:] and suffix, the text textTail left at lo.
func (r *Rewriter) wrapLit(s, e int, prefix string, lo int, suffix string) {
	tail := append([]byte(nil), r.lit[lo:]...)
	buf := append(r.lit[:lo], prefix...)
	buf = append(buf, tail...)
	buf = append(buf, suffix...)
	r.lit = buf[:lo]
	r.replaceLit(s, e, buf)
}
