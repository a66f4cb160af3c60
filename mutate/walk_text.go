package mutate

import "unicode/utf8"

// Generated text of the OpenAI-compatible formats, for a TextRewriter
// (text.go):
//   - Chat Completions: choices[].delta.content of chat.completion.chunk
//     (Delta; End when the choice's finish_reason is set) and
//     choices[].message.content of chat.completion (a whole text)
//     (https://platform.openai.com/docs/api-reference/chat-streaming);
//   - legacy Completions: choices[].text (Delta; End with finish_reason:
//     a non-streamed body is one piece that ends its block)
//     (https://platform.openai.com/docs/api-reference/completions/object);
//   - Responses API: "delta" of response.output_text.delta (Delta),
//     "text" of response.output_text.done, part.text, item.content[].text
//     and response.output[].content[].text (whole texts)
//     (https://platform.openai.com/docs/api-reference/responses-streaming).
//
// Block is the choice's index, or for the Responses API the (output_index,
// content_index) key the logprob positions use (respKey).
//
// Where the text goes when a block ends with text still held (the
// unfinished word of the last delta): into the ending choice's
// delta.content (inserted when the delta has none, or holds null), its
// text, or, for the Responses API, a response.output_text.delta event sent
// just before response.output_text.done (Rewriter.pre). The logprob
// entries of the tokens whose words changed are dropped (TextDropper).

// choiceText hands the text of one choice object to the text rewriter
// before the choice is walked, and returns the choice's index (its
// "index" member wherever it is, else idx) and the spans of its text whose
// logprob entries go (nil: none). The cursor is left at the choice.
func (r *Rewriter) choiceText(depth int, idx uint64) (uint64, []TextSpan, error) {
	s := &r.s
	save := s.i
	const (
		kNone = iota
		kDelta
		kMessage
		kLegacy
	)
	kind := kNone
	open := s.i
	content := span{-1, -1} // the text's value: a string, or null
	obj := span{-1, -1}     // delta or message object
	finish := false
	err := s.eachMember(func(ks, ke int) error {
		vs := s.i
		switch name := string(s.b[ks:ke]); name {
		case "index":
			err := s.skipValue(depth + 1)
			if err == nil {
				if v, ok := parseUint(s.b[vs:s.i]); ok {
					idx = v
				}
			}
			return err
		case "delta", "message":
			if s.peek() != '{' {
				break
			}
			kind = kDelta
			if name == "message" {
				kind = kMessage
			}
			err := s.eachMember(func(ks, ke int) error {
				sp, err := r.valueSpan(depth + 2)
				if err == nil && string(s.b[ks:ke]) == "content" && (s.b[sp.s] == '"' || s.b[sp.s] == 'n') {
					content = sp
				}
				return err
			})
			obj = span{vs, s.i}
			return err
		case "text":
			sp, err := r.valueSpan(depth + 1)
			if err == nil && s.b[sp.s] == '"' {
				kind, content = kLegacy, sp
				r.legacyText = true
			}
			return err
		case "finish_reason":
			err := s.skipValue(depth + 1)
			finish = err == nil && s.b[vs] == '"'
			return err
		}
		return s.skipValue(depth + 1)
	})
	s.i = save
	if err != nil {
		return idx, nil, err
	}
	loc := TextLoc{Block: idx, Kind: TextOutput, Delta: kind != kMessage, End: finish && kind != kMessage}
	if content.s >= 0 && s.b[content.s] == '"' {
		return idx, r.keepDrops(r.textAt(loc, content.s+1, content.e-1)), nil
	}
	if !loc.End {
		return idx, nil, nil
	}
	lo, ok := r.textTail(loc)
	if !ok {
		return idx, nil, nil
	}
	switch {
	case content.s >= 0: // "content": null
		r.wrapLit(content.s, content.e, `"`, lo, `"`)
	case obj.s >= 0:
		sep := ","
		if t := skipSpace(s.b, obj.s+1); t < len(s.b) && s.b[t] == '}' {
			sep = ""
		}
		r.wrapLit(obj.s+1, obj.s+1, `"content":"`, lo, `"`+sep)
	case r.legacyText:
		r.wrapLit(open+1, open+1, `"text":"`, lo, `",`)
	default:
		r.wrapLit(open+1, open+1, `"delta":{"content":"`, lo, `"},`)
	}
	return idx, nil, nil
}

// keepDrops returns a copy of the drop spans the walk keeps while it walks
// the rest of the object (nil when there are none; r.drops is reused by
// the next piece, r.kept by the next object).
func (r *Rewriter) keepDrops(d []TextSpan) []TextSpan {
	if len(d) == 0 {
		return nil
	}
	r.kept = append(r.kept[:0], d...)
	return r.kept
}

// decodedLen is the length in bytes of the JSON string content raw once
// decoded (escapes as UTF-8); raw is validated string content.
func decodedLen(raw []byte) int {
	n := 0
	for i := 0; i < len(raw); {
		if raw[i] != '\\' || i+1 >= len(raw) {
			n++
			i++
			continue
		}
		if raw[i+1] != 'u' || i+6 > len(raw) {
			n++
			i += 2
			continue
		}
		c := rune(hex4(raw[i+2:]))
		i += 6
		if c >= 0xd800 && c < 0xdc00 && i+6 <= len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
			if c2 := rune(hex4(raw[i+2:])); c2 >= 0xdc00 && c2 <= 0xdfff {
				n += 4
				i += 6
				continue
			}
		}
		if c >= 0xd800 && c <= 0xdfff {
			c = utf8.RuneError
		}
		n += utf8.RuneLen(c)
	}
	return n
}

// topText hands the text of a Responses API stream event to the text
// rewriter, before the event's members are walked, and returns the spans
// of its text whose logprob entries go. response.output_text.done ends the
// block's delta stream: what the rewriter still holds of it goes out as a
// delta event of its own before this one (r.pre), and the event's "text"
// (the whole text) is rewritten as one piece, which a Stream marks exactly
// as it marked the deltas.
func (r *Rewriter) topText(top *topInfo) []TextSpan {
	key := respKey(top.out, top.content)
	switch {
	case top.delta && top.text.s >= 0:
		return r.keepDrops(r.textAt(TextLoc{Block: key, Kind: TextOutput, Delta: true}, top.text.s+1, top.text.e-1))
	case top.done:
		if lo, ok := r.textTail(TextLoc{Block: key, Kind: TextOutput, Delta: true, End: true}); ok {
			r.preDelta(top, lo)
		}
		if top.text.s >= 0 {
			return r.keepDrops(r.textAt(TextLoc{Block: key, Kind: TextOutput}, top.text.s+1, top.text.e-1))
		}
	}
	return nil
}

// preDelta builds the response.output_text.delta event that carries the
// held tail r.lit[lo:] of the block top ends, with the done event's
// item_id, output_index, content_index and sequence_number copied (the
// delta and the done event then share a sequence number: the stream's
// order is still the order of the numbers).
func (r *Rewriter) preDelta(top *topInfo, lo int) {
	b := append(r.pre[:0], `{"type":"response.output_text.delta"`...)
	raw := func(name string, sp span) {
		if sp.s >= 0 {
			b = append(b, `,"`...)
			b = append(b, name...)
			b = append(b, `":`...)
			b = append(b, r.s.b[sp.s:sp.e]...)
		}
	}
	raw("item_id", top.itemID)
	raw("output_index", top.outR)
	raw("content_index", top.cR)
	b = append(b, `,"delta":"`...)
	b = append(b, r.lit[lo:]...)
	b = append(b, `","logprobs":[]`...)
	raw("sequence_number", top.seq)
	r.pre = append(b, '}')
	r.preEvent = "response.output_text.delta"
	r.lit = r.lit[:lo]
}

// partText hands a content part's "text" (a whole text) to the text
// rewriter before the part is walked; the cursor is left at the part.
func (r *Rewriter) partText(depth int, out, content uint64) ([]TextSpan, error) {
	s := &r.s
	save := s.i
	text := span{-1, -1}
	err := s.eachMember(func(ks, ke int) error {
		sp, err := r.valueSpan(depth + 1)
		if err == nil && string(s.b[ks:ke]) == "text" && s.b[sp.s] == '"' {
			text = sp
		}
		return err
	})
	s.i = save
	if err != nil || text.s < 0 {
		return nil, err
	}
	return r.keepDrops(r.textAt(TextLoc{Block: respKey(out, content), Kind: TextOutput}, text.s+1, text.e-1)), nil
}
