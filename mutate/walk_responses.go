package mutate

// The Responses API: logprobs arrays at the top of
// response.output_text.delta/.done events and in output[].content[] of
// response objects, output items and content parts
// (https://platform.openai.com/docs/api-reference/responses-streaming).
// Their entries are the same as Chat Completions' (entries.go).

// topInfo is what a Responses API stream event says about where its
// logprobs belong: the output item and content part they are counted
// under, and whether the event is a delta (whose entries continue the
// part's running position) rather than a document that repeats the whole
// list from position 0.
type topInfo struct {
	out, content uint64
	delta        bool
	// For a text rewriter (walk_text.go): whether the event is
	// response.output_text.done, and the raw values of its members the
	// text walk reads or copies.
	done                        bool
	text, itemID, seq, outR, cR span
}

// prescanTop reads type, output_index and content_index of a Responses API
// stream event, wherever they are in the object, so that the noise keys do
// not depend on member order. The cursor is restored.
//
// It validates every member on the way, so the walk that follows skips
// without validating again (scanner.valid). With a text rewriter it also
// checks that nothing follows the object: the text rewriter keeps state
// across documents (the held word) and must not see the text of a
// document that goes out as it came because it does not parse.
func (r *Rewriter) prescanTop(top *topInfo) error {
	s := &r.s
	save := s.i
	err := r.prescanMembers(top)
	if err == nil && r.text != nil {
		err = s.end(nil)
	}
	s.i = save
	if err == nil {
		s.valid = true
	}
	return err
}

// prescanMembers is prescanTop's walk of the members.
func (r *Rewriter) prescanMembers(top *topInfo) error {
	s := &r.s
	return s.eachMember(func(ks, ke int) error {
		vs := s.i
		if err := s.skipValue(1); err != nil {
			return err
		}
		v := s.b[vs:s.i]
		sp := span{vs, s.i}
		switch string(s.b[ks:ke]) {
		case "type":
			top.delta = string(v) == `"response.output_text.delta"`
			top.done = string(v) == `"response.output_text.done"`
		case "output_index":
			top.out, _ = parseUint(v)
			top.outR = sp
		case "content_index":
			top.content, _ = parseUint(v)
			top.cR = sp
		case "delta", "text":
			if v[0] == '"' {
				top.text = sp
			}
		case "item_id":
			top.itemID = sp
		case "sequence_number":
			top.seq = sp
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
		r.replace(start, s.i, "[]")
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

// outputArr walks a Response's output array; an item's place in it is its
// output_index.
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
	var drops []TextSpan
	if r.text != nil {
		var err error
		if drops, err = r.partText(depth, out, content); err != nil {
			return err
		}
	}
	return s.eachMember(func(ks, ke int) error {
		if string(s.b[ks:ke]) == "logprobs" && s.peek() == '[' {
			r.entryDrops = drops
			err := r.respLogprobs(depth+1, respKey(out, content), false)
			r.entryDrops = nil
			return err
		}
		return s.skipValue(depth + 1)
	})
}
