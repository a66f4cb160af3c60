package mutate

// Release drops the Rewriter's references to the last document it
// rewrote (its patch list and scanner point into it until the next one):
// a stream that waits for its next chunk must not keep the previous
// message's body, or the decoded buffer it was a slice of, alive.
func (r *Rewriter) Release() {
	r.doc = nil
	r.s.b = nil
}
