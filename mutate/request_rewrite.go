package mutate

// RewriteRequest appends the body rewritten by p to dst and reports whether
// anything changed: ReadRequest with an unknown endpoint, then
// Body.Rewrite. A body ReadRequest refuses is appended unchanged, with an
// error wrapping ErrNotJSON and the *RequestError.
func RewriteRequest(dst, body []byte, p RequestPolicy) ([]byte, bool, error) {
	if p.IsNoop() {
		return append(dst, body...), false, nil
	}
	b, err := ReadRequest(body, ReadOptions{})
	if err != nil {
		return append(dst, body...), false, &notJSONError{err}
	}
	out, changed := b.Rewrite(dst, p)
	return out, changed, nil
}

// requestRewriter holds the patches of one request body.
type requestRewriter struct {
	patchList
}

// dropIncludeLogprobs removes "message.output_text.logprobs" from the
// (validated) include array at off, however its string is escaped.
func (r *requestRewriter) dropIncludeLogprobs(off int) {
	t := scanner{b: r.doc, i: off}
	d := r.dropper()
	empty, _ := t.arrayBegin()
	for !empty {
		vs := t.i
		_ = t.skipValue(2) // validated
		it := t.b[vs:t.i]
		keep := true
		if len(it) >= 2 && it[0] == '"' {
			dec, _ := appendUnescaped(nil, it[1:len(it)-1])
			keep = string(dec) != respLogprobsInclude
		}
		d.item(vs, t.i, keep)
		if more, _ := t.arrayNext(); !more {
			break
		}
	}
	d.done(off, t.i-1)
}
