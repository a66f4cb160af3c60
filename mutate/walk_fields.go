package mutate

// Shared pieces of the non-OpenAI walks. Every API spells a token's
// distribution with its own member names, and several send the chosen
// tokens and their alternatives as two parallel arrays (Gemini's
// chosenCandidates / topCandidates, TGI's tokens / top_tokens) instead of
// OpenAI's one entry per position. These helpers collect either shape into
// the entry scratch (r.chosen, r.groups, r.alts) that finishEntry
// (entries.go) computes and patches, so every format gets the same order
// of operations, noise keys and clamps as Chat Completions.

// fieldNames names the token and value members of a format's token object;
// tok2 and val2 are alternative spellings ("" for none).
type fieldNames struct{ tok, tok2, val, val2 string }

func (n *fieldNames) isTok(k string) bool { return k == n.tok || n.tok2 != "" && k == n.tok2 }
func (n *fieldNames) isVal(k string) bool { return k == n.val || n.val2 != "" && k == n.val2 }

// resetEntry empties the entry scratch for a new position.
func (r *Rewriter) resetEntry() {
	r.alts = r.alts[:0]
	r.groups = r.groups[:0]
	r.chosen = r.chosen[:0]
}

// chosenObject reads the token object at the cursor (depth is its level):
// its value member goes to r.chosen, and the span of its token string's
// content is returned.
func (r *Rewriter) chosenObject(depth int, n *fieldNames) (span, error) {
	s := &r.s
	tok := span{-1, -1}
	err := s.eachMember(func(ks, ke int) error {
		vs := s.i
		if err := s.skipValue(depth + 1); err != nil {
			return err
		}
		switch k := string(s.b[ks:ke]); {
		case n.isTok(k):
			if s.b[vs] == '"' {
				tok = span{vs + 1, s.i - 1}
			}
		case n.isVal(k):
			r.chosen = append(r.chosen, r.number(vs, s.i, r.p.Perturb != 0))
		}
		return nil
	})
	return tok, err
}

// collectAltArrayF records the elements of an alternatives array at the
// cursor (depth is its level) whose objects name their members n.
func (r *Rewriter) collectAltArrayF(depth int, n *fieldNames) error {
	s := &r.s
	g := group{open: s.i, lo: len(r.alts)}
	err := s.eachElem(func(int) error {
		a := alt{s: s.i, tok: span{-1, -1}, lp: span{-1, -1}}
		var err error
		if s.peek() == '{' {
			err = s.eachMember(func(ks, ke int) error {
				vs := s.i
				if err := s.skipValue(depth + 2); err != nil {
					return err
				}
				switch k := string(s.b[ks:ke]); {
				case n.isTok(k):
					if s.b[vs] == '"' {
						a.tok = span{vs + 1, s.i - 1}
					}
				case n.isVal(k):
					c := r.number(vs, s.i, false) // parsed when needed (parseAlts)
					a.lp, a.ok = span{vs, s.i}, c.ok
				}
				return nil
			})
		} else {
			err = s.skipValue(depth + 1)
		}
		if err != nil {
			return err
		}
		a.e = s.i
		r.alts = append(r.alts, a)
		return nil
	})
	if err != nil {
		return err
	}
	g.close = s.i - 1
	g.hi = len(r.alts)
	r.groups = append(r.groups, g)
	return nil
}

// parallel computes and patches the positions of two parallel arrays
// whose elements' spans were recorded (elemSpans): chosen (token objects
// named cn, one per position) and tops (per position, the alternatives: an
// array of objects named an, or, with inner set, an object whose member
// inner holds that array). depth is the arrays' level. Positions are
// counted under key across documents, as streamed chunks continue each
// other.
func (r *Rewriter) parallel(depth int, key uint64, chosen, tops []span, cn, an *fieldNames, inner string) {
	n := max(len(chosen), len(tops))
	perturb := r.p.Perturb != 0
	var base uint64
	if perturb {
		base = r.position(key)
	}
	s := &r.s
	save := s.i
	for i := 0; i < n; i++ {
		r.resetEntry()
		tok := span{-1, -1}
		if i < len(chosen) && s.b[chosen[i].s] == '{' {
			s.i = chosen[i].s
			tok, _ = r.chosenObject(depth+1, cn) // validated already
		}
		if i < len(tops) {
			s.i = tops[i].s
			_ = r.altGroup(depth+1, an, inner) // validated already
		}
		r.finishEntry(key, base+uint64(i), tok)
	}
	s.i = save
	if perturb && n > 0 {
		r.advance(key, n)
	}
}

// elemSpans validates the value at the cursor (depth its level) and, when
// it is an array, appends the span of each element to dst: one pass that
// both checks the array and finds its elements for a later walk.
func (r *Rewriter) elemSpans(dst []span, depth int) ([]span, error) {
	s := &r.s
	if s.peek() != '[' {
		return dst, s.skipValue(depth)
	}
	err := s.eachElem(func(int) error {
		vs := s.i
		err := s.skipValue(depth + 1)
		dst = append(dst, span{vs, s.i})
		return err
	})
	return dst, err
}

// altGroup collects one position's alternatives at the cursor (depth is
// its level): the array itself, or with inner the array under that member
// of an object.
func (r *Rewriter) altGroup(depth int, an *fieldNames, inner string) error {
	s := &r.s
	switch c := s.peek(); {
	case inner == "" && c == '[':
		return r.collectAltArrayF(depth, an)
	case inner != "" && c == '{':
		return s.eachMember(func(ks, ke int) error {
			if string(s.b[ks:ke]) == inner && s.peek() == '[' {
				return r.collectAltArrayF(depth+1, an)
			}
			return s.skipValue(depth + 1)
		})
	}
	return s.skipValue(depth)
}

// step is one position of parallel arrays read in a single pass: its
// sampled token's values r.chosen[c0:c1] and token span, and its groups of
// alternatives r.groups[g0:g1] (whose elements are in r.alts).
type step struct {
	c0, c1, g0, g1 int
	tok            span
}

// stepAt returns step i, adding empty steps up to it.
func (r *Rewriter) stepAt(i int) *step {
	for len(r.steps) <= i {
		r.steps = append(r.steps, step{tok: span{-1, -1}})
	}
	return &r.steps[i]
}

// finishSteps computes and patches the steps collected (r.steps, over
// r.chosen, r.groups and r.alts) as positions base+i of key, each as one
// entry, and empties the scratch.
func (r *Rewriter) finishSteps(key, base uint64) {
	chosen, groups := r.chosen, r.groups
	for i := range r.steps {
		st := &r.steps[i]
		r.chosen = chosen[st.c0:st.c1:st.c1]
		r.groups = groups[st.g0:st.g1:st.g1]
		r.finishEntry(key, base+uint64(i), st.tok)
	}
	if r.p.Perturb != 0 && len(r.steps) > 0 {
		r.advance(key, len(r.steps))
	}
	r.chosen, r.groups, r.steps = chosen[:0], groups[:0], r.steps[:0]
	r.alts = r.alts[:0]
}

// valueSpan skips the value at the cursor (depth is its level) and returns
// its span.
func (r *Rewriter) valueSpan(depth int) (span, error) {
	s := &r.s
	vs := s.i
	err := s.skipValue(depth)
	return span{vs, s.i}, err
}

// aggregate rewrites a value that sums up a candidate's logprobs (Gemini's
// avgLogprobs and logProbabilitySum): rounded like the logprobs and, with
// noise, perturbed by its own draw at the document's first position of key
// and clamped to <= 0.
func (r *Rewriter) aggregate(key, pos uint64, sp span, rank uint64) {
	if sp.s < 0 || !r.numLP {
		return
	}
	c := r.number(sp.s, sp.e, r.p.Perturb != 0)
	if !c.ok {
		return
	}
	out := c.v
	if r.p.Perturb != 0 {
		out = min(c.v+r.noise(key, pos, rank), 0)
	}
	r.patchNum(sp.s, sp.e, c.v, out, r.round)
}

// Noise ranks of the aggregate values, apart from every alternative's rank
// and the chosen token's (chosenRank).
const (
	aggAvgRank = chosenRank + 1 + iota
	aggSumRank
)

// nullValues replaces the value member (named n) of the token object at
// the cursor (depth is its level) with null: StripLogprobs for the formats
// whose token objects keep their text and id (TGI).
func (r *Rewriter) nullValues(depth int, n *fieldNames) error {
	s := &r.s
	return s.eachMember(func(ks, ke int) error {
		vs := s.i
		if err := s.skipValue(depth + 1); err != nil {
			return err
		}
		if n.isVal(string(s.b[ks:ke])) && s.b[vs] != 'n' {
			r.replace(vs, s.i, "null")
		}
		return nil
	})
}

// prescanIndex returns the non-negative integer value of the member named
// name of the object at the cursor (def when absent), wherever it is, so
// that noise keys do not depend on member order. The cursor is restored.
func (r *Rewriter) prescanIndex(depth int, name string, def uint64) uint64 {
	s := &r.s
	save := s.i
	defer func() { s.i = save }()
	v := def
	_ = s.eachMember(func(ks, ke int) error {
		vs := s.i
		if err := s.skipValue(depth + 1); err != nil {
			return err
		}
		if string(s.b[ks:ke]) == name {
			if u, ok := parseUint(s.b[vs:s.i]); ok {
				v = u
			}
		}
		return nil
	})
	return v
}

// at runs fn with the cursor at off (a validated value) and restores it.
func (r *Rewriter) at(off int, fn func() error) error {
	save := r.s.i
	r.s.i = off
	err := fn()
	r.s.i = save
	return err
}

// chosenOnly computes and patches the token objects whose spans were
// recorded (elemSpans; depth is their array's level) as positions without
// alternatives, position i under key: prompt tokens (TGI's prefill), which
// are sent once, so not counted across documents.
func (r *Rewriter) chosenOnly(depth int, key uint64, elems []span, n *fieldNames) {
	s := &r.s
	save := s.i
	for i, el := range elems {
		if s.b[el.s] != '{' {
			continue
		}
		r.resetEntry()
		s.i = el.s
		tok, _ := r.chosenObject(depth+1, n) // validated already
		r.finishEntry(key, uint64(i), tok)
	}
	s.i = save
}

// nullEach applies nullValues to every token object whose span was
// recorded (depth is their array's level).
func (r *Rewriter) nullEach(depth int, elems []span, n *fieldNames) {
	for _, el := range elems {
		if r.s.b[el.s] == '{' {
			_ = r.at(el.s, func() error { return r.nullValues(depth+1, n) })
		}
	}
}

// logprobMember walks the object at the cursor (depth is its level) in
// which the member name holds a format's logprobs: with StripLogprobs the
// member is removed (a null, which carries nothing, is left as sent),
// otherwise an array there is handed to walk; every other member is
// skipped. Ollama's logprobs and llama.cpp's completion_probabilities.
func (r *Rewriter) logprobMember(depth int, name string, walk func() error) error {
	s := &r.s
	strip := r.p.StripLogprobs
	open := s.i
	d := r.dropper()
	err := s.eachMember(func(ks, ke int) error {
		ms := ks - 1
		keep := true
		var err error
		switch {
		case string(s.b[ks:ke]) != name:
			err = s.skipValue(depth + 1)
		case strip:
			keep = s.peek() == 'n'
			err = s.skipValue(depth + 1)
		case s.peek() == '[':
			err = walk()
		default:
			err = s.skipValue(depth + 1)
		}
		if strip && err == nil {
			d.item(ms, s.i, keep)
		}
		return err
	})
	if err == nil && strip {
		d.done(open, s.i-1)
	}
	return err
}
