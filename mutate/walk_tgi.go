package mutate

// Hugging Face text-generation-inference, native routes: /generate (a
// GenerateResponse), /generate_stream (server-sent StreamResponse events)
// and the compatibility route / (an array of GenerateResponse, or the same
// stream) (https://huggingface.github.io/text-generation-inference/,
// schema docs/openapi.json of huggingface/text-generation-inference).
//
// Rewritten:
//   - stream events: token.logprob (the sampled token, sent on every event
//     whether or not details were asked for) and top_tokens[] (its
//     alternatives with top_n_tokens, most likely first), one position per
//     event, counted across the stream;
//   - details.tokens[i].logprob with details.top_tokens[i][] (parallel
//     arrays), details.prefill[i].logprob (prompt tokens, with
//     decoder_input_details: a distribution over every prompt position,
//     keyed apart from the generated ones) and the same three in each
//     details.best_of_sequences[] element (sequence k+1; the main one is
//     0);
//   - StripLogprobs writes null over every logprob (the clients declare it
//     optional) and [] over top_tokens, keeping token ids, texts, special
//     flags, finish_reason and the rest of details.

// keyLogprob is the TGI fast path's key.
const keyLogprob = `"logprob"`

// tgiNames names TGI's Token and PrefillToken members ({id, text, logprob,
// special}).
func tgiNames() fieldNames { return fieldNames{tok: "text", val: "logprob"} }

// walkTGI walks a GenerateResponse, a StreamResponse, or an array of
// GenerateResponse.
func (r *Rewriter) walkTGI() error { return r.walkArrayOr(r.tgiResponse) }

// tgiResponse walks one GenerateResponse or StreamResponse (depth is its
// level).
func (r *Rewriter) tgiResponse(depth int, _ uint64) error {
	s := &r.s
	tok, top := span{-1, -1}, span{-1, -1}
	err := s.eachMember(func(ks, ke int) error {
		switch string(s.b[ks:ke]) {
		case "token":
			sp, err := r.valueSpan(depth + 1)
			tok = sp
			return err
		case "top_tokens":
			sp, err := r.valueSpan(depth + 1)
			top = sp
			return err
		case "details":
			if s.peek() == '{' {
				return r.tgiSequence(depth+1, 0)
			}
		}
		return s.skipValue(depth + 1)
	})
	if err != nil {
		return err
	}
	if tok.s >= 0 || top.s >= 0 {
		r.tgiStreamToken(depth, tok, top)
	}
	return nil
}

// tgiStreamToken rewrites a stream event's token and top_tokens (validated
// values at tok and top; depth is the event's level) as one position of
// sequence 0.
func (r *Rewriter) tgiStreamToken(depth int, tok, top span) {
	names := tgiNames()
	b := r.s.b
	isObj := tok.s >= 0 && b[tok.s] == '{'
	isArr := top.s >= 0 && b[top.s] == '['
	if r.p.StripLogprobs {
		if isObj {
			_ = r.at(tok.s, func() error { return r.nullValues(depth+1, &names) })
		}
		if isArr {
			r.replace(top.s, top.e, "[]")
		}
		return
	}
	r.resetEntry()
	t := span{-1, -1}
	if isObj {
		_ = r.at(tok.s, func() error {
			var err error
			t, err = r.chosenObject(depth+1, &names)
			return err
		})
	}
	if isArr {
		_ = r.at(top.s, func() error { return r.collectAltArrayF(depth+1, &names) })
	}
	var pos uint64
	if r.p.Perturb != 0 {
		pos = r.position(0)
		if isObj {
			r.advance(0, 1)
		}
	}
	r.finishEntry(0, pos, t)
}

// tgiSequence walks details (or a best_of_sequences element) at the
// cursor, depth its level, as sequence key: tokens with top_tokens, and
// prefill.
func (r *Rewriter) tgiSequence(depth int, key uint64) error {
	s := &r.s
	tokens, tops, prefill := span{-1, -1}, span{-1, -1}, span{-1, -1}
	err := s.eachMember(func(ks, ke int) error {
		switch string(s.b[ks:ke]) {
		case "best_of_sequences":
			if s.peek() == '[' {
				return s.eachElem(func(n int) error {
					if s.peek() == '{' {
						return r.tgiSequence(depth+2, key+1+uint64(n))
					}
					return s.skipValue(depth + 2)
				})
			}
		case "tokens":
			sp, err := r.valueSpan(depth + 1)
			tokens = sp
			return err
		case "top_tokens":
			sp, err := r.valueSpan(depth + 1)
			tops = sp
			return err
		case "prefill":
			sp, err := r.valueSpan(depth + 1)
			prefill = sp
			return err
		}
		return s.skipValue(depth + 1)
	})
	if err != nil {
		return err
	}
	names := tgiNames()
	if r.p.StripLogprobs {
		r.nullEach(depth+1, tokens, &names)
		r.nullEach(depth+1, prefill, &names)
		if tops.s >= 0 && s.b[tops.s] == '[' {
			r.replace(tops.s, tops.e, "[]")
		}
		return nil
	}
	r.parallel(depth+1, key, tokens, tops, &names, &names, "")
	r.chosenOnly(depth+1, keyPrompt|key&0xffffffff, prefill, &names)
	return nil
}
