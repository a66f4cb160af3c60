package mutate

// Release drops the Rewriter's references to the last document it
// rewrote (its patch list and scanner point into it until the next one):
// a stream that waits for its next chunk must not keep the previous
// message's body, or the decoded buffer it was a slice of, alive.
func (r *Rewriter) Release() {
	r.doc = nil
	r.s.b = nil
}

// Touches reports whether doc may hold something r's policy changes (a
// logprobs or embedding member with a value): a document that does and
// fails to parse cannot be passed on unrewritten.
func (r *Rewriter) Touches(doc []byte) bool { return r.mayTouch(doc) }
