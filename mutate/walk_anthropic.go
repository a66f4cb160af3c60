package mutate

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

// walkAnthropic walks one Messages event or Message.
func (r *Rewriter) walkAnthropic() error {
	s := &r.s
	s.ws()
	if s.peek() != '{' {
		return errNotObject
	}
	idx := r.prescanIndex(0, "index", 0)
	err := s.eachMember(func(ks, ke int) error {
		switch c := s.peek(); string(s.b[ks:ke]) {
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
	return s.end(err)
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
