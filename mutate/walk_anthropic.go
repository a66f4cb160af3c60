package mutate

import "strconv"

// Anthropic Messages (/v1/messages): a Message object, or with "stream":
// true the server-sent events message_start, content_block_start,
// content_block_delta, content_block_stop, message_delta, message_stop and
// ping (https://docs.anthropic.com/en/api/messages,
// https://docs.anthropic.com/en/docs/build-with-claude/streaming).
//
// The API returns no distributions, so there is nothing for the logprob
// fields of an OutputPolicy to do: without a text rewriter every document
// takes the fast path untouched. The walk finds the generated text for a
// TextRewriter (text.go):
//   - content_block_delta: delta.text of a text_delta (TextOutput) and
//     delta.thinking of a thinking_delta (TextReasoning), Delta set;
//   - content_block_start: content_block.text / .thinking;
//   - a Message (non-streamed, or message_start's message): content[].text
//     of text blocks and content[].thinking of thinking blocks.
//
// Block is the content block's index: the event's "index", or the block's
// place in content[]. Tool input (input_json_delta.partial_json,
// tool_use.input), signatures and citations are not text.
//
// content_block_stop ends a block's delta stream (TextLoc.End): what a
// text rewriter still holds of it (the unfinished last word) goes out as
// a content_block_delta event of its own just before the stop event
// (Rewriter.pre), so the block's deltas concatenate to its whole
// rewritten text.

// walkAnthropic walks one Messages event or Message.
func (r *Rewriter) walkAnthropic() error {
	s := &r.s
	s.ws()
	if s.peek() != '{' {
		return errNotObject
	}
	idx := r.prescanIndex(0, "index", 0)
	stop := false
	err := s.eachMember(func(ks, ke int) error {
		switch c := s.peek(); string(s.b[ks:ke]) {
		case "type":
			if c == '"' && r.text != nil {
				vs := s.i
				err := s.skipValue(1)
				stop = err == nil && string(s.b[vs:s.i]) == `"content_block_stop"`
				return err
			}
		case "delta":
			if c == '{' {
				return r.anthropicBlock(1, TextLoc{Block: idx, Delta: true})
			}
		case "content_block":
			if c == '{' {
				return r.anthropicBlock(1, TextLoc{Block: idx})
			}
		case "content":
			if c == '[' {
				return r.anthropicContent(1)
			}
		case "message":
			if c == '{' {
				return s.eachMember(func(ks, ke int) error {
					if string(s.b[ks:ke]) == "content" && s.peek() == '[' {
						return r.anthropicContent(2)
					}
					return s.skipValue(2)
				})
			}
		}
		return s.skipValue(1)
	})
	if err == nil && stop {
		r.anthropicTail(idx)
	}
	return s.end(err)
}

// anthropicTail ends block idx's delta stream at its content_block_stop:
// the text rewriter's held tail of the block (a text or a thinking block;
// one of them holds nothing) becomes a delta event before the stop.
func (r *Rewriter) anthropicTail(idx uint64) {
	for _, k := range [...]struct {
		kind        TextKind
		delta, name string
	}{{TextOutput, "text_delta", "text"}, {TextReasoning, "thinking_delta", "thinking"}} {
		lo, ok := r.textTail(TextLoc{Block: idx, Kind: k.kind, Delta: true, End: true})
		if !ok {
			continue
		}
		b := append(r.pre[:0], `{"type":"content_block_delta","index":`...)
		b = strconv.AppendUint(b, idx, 10)
		b = append(b, `,"delta":{"type":"`...)
		b = append(b, k.delta...)
		b = append(b, `","`...)
		b = append(b, k.name...)
		b = append(b, `":"`...)
		b = append(b, r.lit[lo:]...)
		r.pre = append(b, `"}}`...)
		r.preEvent = "content_block_delta"
		r.lit = r.lit[:lo]
		return
	}
}

// anthropicContent walks a Message's content[] (depth is its level); a
// block's place in the array is its index.
func (r *Rewriter) anthropicContent(depth int) error {
	s := &r.s
	return s.eachElem(func(n int) error {
		if s.peek() == '{' {
			return r.anthropicBlock(depth+1, TextLoc{Block: uint64(n)})
		}
		return s.skipValue(depth + 1)
	})
}

// anthropicBlock walks a content block or a delta (depth is its level) and
// hands its text to the text rewriter, by its type: "text" and
// "text_delta" carry "text", "thinking" and "thinking_delta" carry
// "thinking". The type may come after the text: both are noted first.
func (r *Rewriter) anthropicBlock(depth int, loc TextLoc) error {
	s := &r.s
	typ, text, thinking := span{-1, -1}, span{-1, -1}, span{-1, -1}
	err := s.eachMember(func(ks, ke int) error {
		sp, err := r.valueSpan(depth + 1)
		if err != nil || s.b[sp.s] != '"' {
			return err
		}
		switch string(s.b[ks:ke]) {
		case "type":
			typ = sp
		case "text":
			text = sp
		case "thinking":
			thinking = sp
		}
		return nil
	})
	if err != nil || typ.s < 0 {
		return err
	}
	switch string(s.b[typ.s:typ.e]) {
	case `"text"`, `"text_delta"`:
		if text.s >= 0 {
			loc.Kind = TextOutput
			r.textAt(loc, text.s+1, text.e-1)
		}
	case `"thinking"`, `"thinking_delta"`:
		if thinking.s >= 0 {
			loc.Kind = TextReasoning
			r.textAt(loc, thinking.s+1, thinking.e-1)
		}
	}
	return nil
}
