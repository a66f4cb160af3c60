package mutate

// Alternatives as objects token -> logprob, ranked by value rather than by
// place: the legacy Completions API's choices[].logprobs.top_logprobs
// (https://platform.openai.com/docs/api-reference/completions/object) and
// vLLM's prompt_logprobs (token id -> {logprob, rank, decoded_token}).

// legacy rewrites a text_completion logprobs object: token_logprobs[i] is
// the sampled token's value and top_logprobs[i] an object token -> logprob
// of the alternatives at position i.
func (r *Rewriter) legacy(depth int, idx uint64, tok, lp, top span) {
	r.legTok = r.collectElems(r.legTok[:0], tok)
	r.legTop = r.collectElems(r.legTop[:0], top)
	r.legLP = r.legLP[:0]
	if lp.s >= 0 {
		t := scanner{b: r.s.b, i: lp.s}
		if t.peek() == '[' {
			_ = t.eachElem(func(int) error {
				vs := t.i
				_ = t.skipValue(depth + 2) // validated already
				r.legLP = append(r.legLP, r.number(vs, t.i, r.p.Perturb != 0))
				return nil
			})
		}
	}
	n := max(len(r.legTok), len(r.legLP), len(r.legTop))
	perturb := r.p.Perturb != 0
	var base uint64
	if perturb {
		base = r.position(idx)
	}
	for i := 0; i < n; i++ {
		pos := base + uint64(i)
		r.alts = r.alts[:0]
		obj := span{-1, -1}
		if i < len(r.legTop) && r.s.b[r.legTop[i].s] == '{' {
			obj = r.legTop[i]
			r.collectMembers(depth+2, obj.s, false)
		}
		r.rankAndPerturb(idx, pos, r.alts)
		if i < len(r.legLP) && r.legLP[i].ok {
			c := r.legLP[i]
			t := span{-1, -1}
			if i < len(r.legTok) && r.s.b[r.legTok[i].s] == '"' {
				t = span{r.legTok[i].s + 1, r.legTok[i].e - 1}
			}
			out := r.chosenValue(idx, pos, c.v, t, r.alts)
			if r.numLP {
				r.patchNum(c.s, c.e, c.v, out, r.round)
			}
		}
		r.patchAlts(obj)
	}
	if perturb && n > 0 {
		r.advance(idx, n)
	}
}

// collectElems appends the spans of the elements of the array at sp.
func (r *Rewriter) collectElems(dst []span, sp span) []span {
	if sp.s < 0 || r.s.b[sp.s] != '[' {
		return dst
	}
	t := scanner{b: r.s.b, i: sp.s}
	_ = t.eachElem(func(int) error {
		vs := t.i
		_ = t.skipValue(1) // validated already
		dst = append(dst, span{vs, t.i})
		return nil
	})
	return dst
}

// collectMembers fills r.alts with the members of the (validated) object
// at off. With nested, each member's value is an object whose "logprob"
// member holds the number (vLLM prompt_logprobs); otherwise the value is the
// number (legacy top_logprobs). tok spans the member name.
func (r *Rewriter) collectMembers(depth, off int, nested bool) {
	rank := r.p.Perturb != 0 || r.maxAlt >= 0 // values are needed to rank
	t := scanner{b: r.s.b, i: off}
	_ = t.eachMember(func(kcs, kce int) error {
		vs := t.i
		_ = t.skipValue(depth + 1) // validated already
		// kcs-1 is the name's opening quote.
		a := alt{s: kcs - 1, e: t.i, tok: span{kcs, kce}, lp: span{-1, -1}}
		if !nested {
			c := r.number(vs, t.i, rank)
			a.lp, a.v, a.ok = span{vs, t.i}, c.v, c.ok
		} else if t.b[vs] == '{' {
			u := scanner{b: t.b, i: vs}
			_ = u.eachMember(func(k2s, k2e int) error {
				v2 := u.i
				_ = u.skipValue(depth + 2)
				if string(u.b[k2s:k2e]) == "logprob" {
					c := r.number(v2, u.i, rank)
					a.lp, a.v, a.ok = span{v2, u.i}, c.v, c.ok
				}
				return nil
			})
		}
		r.alts = append(r.alts, a)
		return nil
	})
}

// patchAlts writes the numbers and deletions for r.alts, the members of
// the object at obj.
func (r *Rewriter) patchAlts(obj span) {
	if obj.s < 0 {
		return
	}
	for j := range r.alts {
		a := &r.alts[j]
		if a.keep && a.ok && r.numLP {
			r.patchNum(a.lp.s, a.lp.e, a.v, a.out, r.round)
		}
	}
	r.deleteDropped(obj.s, obj.e-1, r.alts)
}

// promptLogprobs walks vLLM's prompt_logprobs: an array with one entry per
// prompt token, null or an object token-id -> {logprob, rank,
// decoded_token}. Positions are the prompt positions (not counted across
// documents: the list is sent once).
func (r *Rewriter) promptLogprobs(depth int, key uint64) error {
	s := &r.s
	if walk, err := r.nullOrStrip(depth, '['); !walk {
		return err
	}
	return s.eachElem(func(n int) error {
		vs := s.i
		if err := s.skipValue(depth + 1); err != nil {
			return err
		}
		if s.b[vs] == '{' {
			r.alts = r.alts[:0]
			r.collectMembers(depth+1, vs, true)
			r.rankAndPerturb(key, uint64(n), r.alts)
			r.patchAlts(span{vs, s.i})
		}
		return nil
	})
}
