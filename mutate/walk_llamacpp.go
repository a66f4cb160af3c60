package mutate

// llama.cpp server, native /completion (and its aliases /completions and
// /infill): one result object, an array of them for several prompts, or
// one per server-sent event when streaming
// (https://github.com/ggml-org/llama.cpp/blob/master/tools/server/README.md).
//
// completion_probabilities[] has had three layouts, all rewritten:
//   - old (server README until the end of 2024): {"content": token,
//     "probs": [{"tok_str", "prob"}]}, probabilities, most likely first;
//   - current: {"id", "token", "bytes", "logprob", "top_logprobs": [{"id",
//     "token", "bytes", "logprob"}]}, the Chat Completions entry;
//   - current with post_sampling_probs: "prob" and "top_probs" instead,
//     probabilities.
//
// Probabilities are ranked and perturbed in log space and rounded as
// probabilities (values.go). Positions are keyed by the result's "index"
// (several prompts stream interleaved) and counted across events.
// StripLogprobs removes completion_probabilities (the server leaves it out
// when n_probs is 0).

// keyCompletionProbs is the llama.cpp fast path's key.
const keyCompletionProbs = `"completion_probabilities"`

// walkLlamaCpp walks a /completion result or an array of them.
func (r *Rewriter) walkLlamaCpp() error { return r.walkArrayOr(r.llamaResult) }

// llamaResult walks one result object (depth is its level).
func (r *Rewriter) llamaResult(depth int, _ uint64) error {
	var key uint64
	if r.p.Perturb != 0 {
		key = r.prescanIndex(depth, "index", 0)
	}
	return r.logprobMember(depth, "completion_probabilities", func() error { return r.llamaEntries(depth+1, key) })
}

// llamaEntries walks completion_probabilities (depth is its level).
func (r *Rewriter) llamaEntries(depth int, key uint64) error {
	s := &r.s
	perturb := r.p.Perturb != 0
	var base uint64
	if perturb {
		base = r.position(key)
	}
	n := 0
	err := s.eachElem(func(i int) error {
		n++
		if s.peek() == '{' {
			return r.llamaEntry(depth+1, key, base+uint64(i))
		}
		return s.skipValue(depth + 1)
	})
	if err == nil && perturb && n > 0 {
		r.advance(key, n)
	}
	return err
}

// llamaEntry walks one completion_probabilities element in any of the
// three layouts, then computes and patches it as a whole.
func (r *Rewriter) llamaEntry(depth int, key, pos uint64) error {
	s := &r.s
	if r.p.Perturb != 0 {
		r.valProb = r.llamaProbLayout(depth)
	}
	r.resetEntry()
	tok := span{-1, -1}
	names := fieldNames{tok: "token", tok2: "tok_str", val: "logprob", val2: "prob"}
	err := s.eachMember(func(ks, ke int) error {
		vs := s.i
		switch string(s.b[ks:ke]) {
		case "token", "content":
			err := s.skipValue(depth + 1)
			if err == nil && s.b[vs] == '"' {
				tok = span{vs + 1, s.i - 1}
			}
			return err
		case "logprob", "prob":
			err := s.skipValue(depth + 1)
			if err == nil {
				r.chosen = append(r.chosen, r.number(vs, s.i, r.p.Perturb != 0))
			}
			return err
		case "top_logprobs", "top_probs", "probs":
			if s.peek() == '[' {
				return r.collectAltArrayF(depth+1, &names)
			}
		}
		return s.skipValue(depth + 1)
	})
	if err == nil {
		r.finishEntry(key, pos, tok)
	}
	r.valProb = false
	return err
}

// llamaProbLayout reports whether the entry at the cursor carries
// probabilities ("prob", "top_probs" or the old "probs") rather than
// logprobs. The cursor is restored.
func (r *Rewriter) llamaProbLayout(depth int) bool {
	s := &r.s
	save := s.i
	defer func() { s.i = save }()
	prob := false
	_ = s.eachMember(func(ks, ke int) error {
		switch string(s.b[ks:ke]) {
		case "prob", "top_probs", "probs":
			prob = true
		}
		return s.skipValue(depth + 1)
	})
	return prob
}
