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
}

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
// finds to t (nil: none). Only the Anthropic walk reports text so far; with
// a text rewriter set every document is walked (no fast path).
func (r *Rewriter) SetTextRewriter(t TextRewriter) { r.text = t }

// textAt hands the string content at s:e to the text rewriter and patches
// the replacement in.
func (r *Rewriter) textAt(loc TextLoc, s, e int) {
	if r.text == nil {
		return
	}
	lo := len(r.lit)
	buf, ok := r.text.RewriteText(r.litBuf(), loc, r.s.b[s:e])
	if !ok {
		r.lit = buf[:lo]
		return
	}
	r.replaceLit(s, e, buf)
}
