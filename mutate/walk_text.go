package mutate

import (
	"bytes"
	"errors"
	"unicode/utf8"
)

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

// choiceScan is what the text walk of one choice object finds: its index
// (its "index" member wherever it is), the kind of text it holds, the span
// of the text's value (a string, or null), the delta or message object,
// whether its finish_reason is set, and, in a deferred walk, the entry
// arrays whose entries the text's changed words drop (Rewriter.defArrs
// [arrLo:arrHi]).
type choiceScan struct {
	idx          uint64
	kind         uint8
	legacy       bool // a "text" member holding a string (legacy Completions)
	finish       bool
	open         int // the choice's '{'
	content, obj span
	arrLo, arrHi int
}

// Kinds of choice text.
const (
	kNone = iota
	kDelta
	kMessage
	kLegacy
)

func newChoiceScan(open int, idx uint64) choiceScan {
	return choiceScan{idx: idx, open: open, content: span{-1, -1}, obj: span{-1, -1}}
}

// choiceText hands the text of one choice object to the text rewriter
// before the choice is walked, and returns the choice's index (its
// "index" member wherever it is, else idx) and the spans of its text whose
// logprob entries go (nil: none). The cursor is left at the choice.
func (r *Rewriter) choiceText(depth int, idx uint64) (uint64, []TextSpan, error) {
	s := &r.s
	save := s.i
	t := newChoiceScan(s.i, idx)
	err := s.eachMember(func(ks, ke int) error {
		if ok, err := r.choiceTextMember(depth, ks, ke, &t); ok {
			return err
		}
		return s.skipValue(depth + 1)
	})
	s.i = save
	if err != nil {
		return t.idx, nil, err
	}
	return t.idx, r.choiceTextApply(&t), nil
}

// choiceTextMember reads the member of a choice whose value is at the
// cursor into t when it is one the text walk reads (index, delta, message,
// text, finish_reason), and reports whether it was (the value consumed).
func (r *Rewriter) choiceTextMember(depth, ks, ke int, t *choiceScan) (bool, error) {
	s := &r.s
	vs := s.i
	switch name := string(s.b[ks:ke]); name {
	case "index":
		err := s.skipValue(depth + 1)
		if err == nil {
			if v, ok := parseUint(s.b[vs:s.i]); ok {
				t.idx = v
			}
		}
		return true, err
	case "delta", "message":
		if s.peek() != '{' {
			return false, nil
		}
		t.kind = kDelta
		if name == "message" {
			t.kind = kMessage
		}
		err := s.eachMember(func(ks, ke int) error {
			sp, err := r.valueSpan(depth + 2)
			if err == nil && string(s.b[ks:ke]) == "content" && (s.b[sp.s] == '"' || s.b[sp.s] == 'n') {
				t.content = sp
			}
			return err
		})
		t.obj = span{vs, s.i}
		return true, err
	case "text":
		sp, err := r.valueSpan(depth + 1)
		if err == nil && s.b[sp.s] == '"' {
			t.kind, t.content = kLegacy, sp
			t.legacy = true
		}
		return true, err
	case "finish_reason":
		err := s.skipValue(depth + 1)
		t.finish = err == nil && s.b[vs] == '"'
		return true, err
	}
	return false, nil
}

// choiceTextApply hands the text a choice scan found to the text rewriter
// and returns the spans whose logprob entries go (nil: none); when the
// choice ends its block without text, what the rewriter still holds is
// inserted.
func (r *Rewriter) choiceTextApply(t *choiceScan) []TextSpan {
	s := &r.s
	if t.legacy {
		r.legacyText = true
	}
	loc := TextLoc{Block: t.idx, Kind: TextOutput, Delta: t.kind != kMessage, End: t.finish && t.kind != kMessage}
	content, obj, open := t.content, t.obj, t.open
	if content.s >= 0 && s.b[content.s] == '"' {
		return r.keepDrops(r.textAt(loc, content.s+1, content.e-1))
	}
	if !loc.End {
		return nil
	}
	lo, ok := r.textTail(loc)
	if !ok {
		return nil
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
	return nil
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

// Deferred text (walkTop without a prescan). A text rewriter keeps state
// across documents (the held word) and must only see the text of documents
// that parse. For Chat Completions and legacy Completions documents the
// walk itself validates the document, so their text is handed over once
// the walk has succeeded rather than after a validating pass of its own:
// the walk records each choice's text (choiceScan) and the logprob entries
// that text may drop (defArrs, defEnts), and flushTexts then hands the
// texts over in document order and deletes the entries of the changed
// words. The deletions cover patches the walk made inside those entries;
// patchList.apply keeps the covering one.
//
// Without noise the choice's index keys nothing but the text, so the
// walk need not know it before the choice's logprobs (with noise it keys
// the positions, and the walk takes the prescan path). Responses API
// events and objects hand text over before their logprobs are walked, by
// keys found anywhere in the object: documents that may be those take the
// prescan path (mayHoldResponsesText), and the deferred walk gives up
// (errRetry) and starts again with the prescan should it meet one of
// their members.

// errRetry ends a deferred walk that met a Responses API member; it never
// leaves walkTop.
var errRetry = errors.New("walk again with the prescan")

// defArr is an array whose entries a choice's text may drop: a content
// array of logprob entries (defEnts[lo:hi], brackets at open and close),
// or, for legacy, the logprobs object open:close, which goes whole.
type defArr struct {
	open, close, lo, hi int
	legacy              bool
}

// defEnt is one recorded entry: its span and its token's string content.
type defEnt struct {
	s, e int
	tok  span
}

// mayHoldResponsesText reports whether doc may be a Responses API event
// whose text or keys the prescan reads: type response.output_text.delta
// or .done (both hold "_text.d"), or an output_index or content_index
// member (`_index"`). Of any other document the prescan finds nothing
// but that it is valid. Both patterns start with '_', which a chat chunk
// has a handful of: one IndexByte pass (a search for a pattern starting
// with '"' stops at every string).
func mayHoldResponsesText(doc []byte) bool {
	for i := 0; ; {
		k := bytes.IndexByte(doc[i:], '_')
		if k < 0 {
			return false
		}
		i += k + 1
		if hasAt(doc, i, `index"`) || hasAt(doc, i, `text.d`) {
			return true
		}
	}
}

// choiceDeferred walks one element of choices[] in a deferred walk: the
// members the text walk reads go into a choiceScan, which flushTexts
// hands over once the document has parsed.
func (r *Rewriter) choiceDeferred(depth int, idx uint64) error {
	s := &r.s
	t := newChoiceScan(s.i, idx)
	t.arrLo = len(r.defArrs)
	err := s.eachMember(func(ks, ke int) error {
		switch string(s.b[ks:ke]) {
		case "logprobs":
			r.recChoice = true
			err := r.choiceLogprobs(depth+1, idx)
			r.recChoice = false
			return err
		case "prompt_logprobs":
			return r.promptLogprobs(depth+1, keyPrompt|idx&0xffffffff)
		}
		if ok, err := r.choiceTextMember(depth, ks, ke, &t); ok {
			return err
		}
		return s.skipValue(depth + 1)
	})
	if err != nil {
		return err
	}
	t.arrHi = len(r.defArrs)
	r.tasks = append(r.tasks, t)
	return nil
}

// recordEntry records an entry of the array being recorded.
func (r *Rewriter) recordEntry(s, e int, tok span) {
	r.defEnts = append(r.defEnts, defEnt{s, e, tok})
}

// flushTexts hands the texts a deferred walk found to the text rewriter,
// in document order, and drops the entries of their changed words, as
// choice and entryArray do in a walk with a prescan.
func (r *Rewriter) flushTexts() {
	b := r.s.b
	for i := range r.tasks {
		t := &r.tasks[i]
		drops := r.choiceTextApply(t)
		if drops == nil {
			continue
		}
		for _, a := range r.defArrs[t.arrLo:t.arrHi] {
			if a.legacy {
				// As choiceLogprobs does with drops: the whole legacy
				// logprobs go.
				r.replace(a.open, a.close, "null")
				continue
			}
			d := r.dropper()
			off := 0
			for _, e := range r.defEnts[a.lo:a.hi] {
				tl := 0
				if e.tok.s >= 0 {
					tl = decodedLen(b[e.tok.s:e.tok.e])
				}
				d.item(e.s, e.e, !overlapsAny(drops, off, off+tl))
				off += tl
			}
			d.done(a.open, a.close)
		}
	}
}
