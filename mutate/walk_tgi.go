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
// level). A stream event's token and top_tokens are read where they are;
// details is walked after them, as it reuses the entry scratch.
func (r *Rewriter) tgiResponse(depth int, _ uint64) error {
	s := &r.s
	names := tgiNames()
	strip := r.p.StripLogprobs
	r.resetEntry()
	tok, details := span{-1, -1}, -1
	haveTok := false
	err := s.eachMember(func(ks, ke int) error {
		c := s.peek()
		switch string(s.b[ks:ke]) {
		case "token":
			if c != '{' {
				break
			}
			if strip {
				return r.nullValues(depth+1, &names)
			}
			haveTok = true
			var err error
			tok, err = r.chosenObject(depth+1, &names)
			return err
		case "top_tokens":
			if c != '[' {
				break
			}
			if strip {
				vs := s.i
				err := s.skipValue(depth + 1)
				r.replace(vs, s.i, "[]")
				return err
			}
			return r.collectAltArrayF(depth+1, &names)
		case "details":
			if c == '{' {
				details = s.i
			}
		}
		return s.skipValue(depth + 1)
	})
	if err != nil {
		return err
	}
	if !strip && (haveTok || len(r.groups) > 0) {
		// One position of sequence 0, counted across the stream.
		var pos uint64
		if r.p.Perturb != 0 {
			pos = r.position(0)
			if haveTok {
				r.advance(0, 1)
			}
		}
		r.finishEntry(0, pos, tok)
	}
	if details >= 0 {
		return r.at(details, func() error { return r.tgiSequence(depth+1, 0) })
	}
	return nil
}

// tgiSequence walks details (or a best_of_sequences element) at the
// cursor, depth its level, as sequence key: tokens with top_tokens, and
// prefill. The arrays' elements are recorded in one pass and walked after
// it (in r.legTok and r.legTop, above the entries of an enclosing
// sequence).
func (r *Rewriter) tgiSequence(depth int, key uint64) error {
	s := &r.s
	tLo, topLo := len(r.legTok), len(r.legTop)
	defer func() { r.legTok, r.legTop = r.legTok[:tLo], r.legTop[:topLo] }()
	var tokens, prefill span // ranges of r.legTok
	tops := span{topLo, topLo}
	haveTops := false
	err := s.eachMember(func(ks, ke int) error {
		var err error
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
			err = s.skipValue(depth + 1)
		case "tokens":
			lo := len(r.legTok)
			r.legTok, err = r.elemSpans(r.legTok, depth+1)
			tokens = span{lo, len(r.legTok)}
		case "prefill":
			lo := len(r.legTok)
			r.legTok, err = r.elemSpans(r.legTok, depth+1)
			prefill = span{lo, len(r.legTok)}
		case "top_tokens":
			haveTops = s.peek() == '['
			lo := len(r.legTop)
			vs := s.i
			r.legTop, err = r.elemSpans(r.legTop, depth+1)
			tops = span{lo, len(r.legTop)}
			if haveTops && r.p.StripLogprobs {
				r.replace(vs, s.i, "[]")
			}
		default:
			err = s.skipValue(depth + 1)
		}
		return err
	})
	if err != nil {
		return err
	}
	names := tgiNames()
	if r.p.StripLogprobs {
		r.nullEach(depth+1, r.legTok[tokens.s:tokens.e], &names)
		r.nullEach(depth+1, r.legTok[prefill.s:prefill.e], &names)
		return nil
	}
	r.parallel(depth+1, key, r.legTok[tokens.s:tokens.e], r.legTop[tops.s:tops.e], &names, &names, "")
	r.chosenOnly(depth+1, keyPrompt|key&0xffffffff, r.legTok[prefill.s:prefill.e], &names)
	return nil
}
