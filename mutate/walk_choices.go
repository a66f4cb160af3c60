package mutate

// choices[] of Chat Completions (chat.completion, chat.completion.chunk)
// and of the legacy Completions API (text_completion): the walk down to
// each choice's logprobs, which are entries (entries.go) or the legacy
// parallel arrays (walk_legacy.go).

// choices walks the choices array.
func (r *Rewriter) choices(depth int) error {
	s := &r.s
	return s.eachElem(func(n int) error {
		if s.peek() == '{' {
			return r.choice(depth+1, uint64(n))
		}
		return s.skipValue(depth + 1)
	})
}

// choice walks one element of choices[]. Its "index" member (not its place
// in the array: a streamed chunk carries one choice at a time) keys the
// positions and the noise.
func (r *Rewriter) choice(depth int, idx uint64) error {
	if r.deferred {
		return r.choiceDeferred(depth, idx)
	}
	s := &r.s
	have := false
	var drops []TextSpan
	if r.text != nil {
		var err error
		if idx, drops, err = r.choiceText(depth, idx); err != nil {
			return err
		}
		have = true
	}
	return s.eachMember(func(ks, ke int) error {
		switch string(s.b[ks:ke]) {
		case "index":
			vs := s.i
			err := s.skipValue(depth + 1)
			if err == nil && !have {
				if v, ok := parseUint(s.b[vs:s.i]); ok {
					idx, have = v, true
				}
			}
			return err
		case "logprobs":
			if r.p.Perturb != 0 && !have {
				idx, have = r.lookaheadIndex(depth, idx), true
			}
			r.choiceDrops = drops
			err := r.choiceLogprobs(depth+1, idx)
			r.choiceDrops = nil
			return err
		case "prompt_logprobs":
			if r.p.Perturb != 0 && !have {
				idx, have = r.lookaheadIndex(depth, idx), true
			}
			return r.promptLogprobs(depth+1, keyPrompt|idx&0xffffffff)
		}
		return s.skipValue(depth + 1)
	})
}

// lookaheadIndex finds the "index" member that follows the current value
// in a choice object (servers put it first, but JSON does not promise it).
func (r *Rewriter) lookaheadIndex(depth int, def uint64) uint64 {
	s := &r.s
	save := s.i
	defer func() { s.i = save }()
	if s.skipValue(depth+1) != nil {
		return def
	}
	for {
		more, err := s.objectNext()
		if err != nil || !more {
			return def
		}
		ks, ke, err := s.key()
		if err != nil {
			return def
		}
		vs := s.i
		if s.skipValue(depth+1) != nil {
			return def
		}
		if string(s.b[ks:ke]) == "index" {
			if v, ok := parseUint(s.b[vs:s.i]); ok {
				return v
			}
			return def
		}
	}
}

// nullOrStrip handles the start of choices[].logprobs and prompt_logprobs:
// null is left alone, StripLogprobs replaces the value with null (what both
// APIs send when logprobs were not requested) and a value that is not a
// container opening with open is skipped. walk reports that the caller is
// to walk the value at the cursor.
func (r *Rewriter) nullOrStrip(depth int, open byte) (walk bool, err error) {
	s := &r.s
	start := s.i
	c := s.peek()
	if c == 'n' {
		return false, s.skipValue(depth)
	}
	if r.p.StripLogprobs {
		if err := s.skipValue(depth); err != nil {
			return false, err
		}
		r.replace(start, s.i, "null")
		return false, nil
	}
	if c != open {
		return false, s.skipValue(depth)
	}
	return true, nil
}

// choiceLogprobs walks choices[].logprobs: chat {content, refusal} or
// legacy {tokens, token_logprobs, top_logprobs, text_offset}.
func (r *Rewriter) choiceLogprobs(depth int, idx uint64) error {
	s := &r.s
	start := s.i
	if walk, err := r.nullOrStrip(depth, '{'); !walk {
		return err
	}
	var tok, lp, top span
	tok.s, lp.s, top.s = -1, -1, -1
	err := s.eachMember(func(ks, ke int) error {
		vs := s.i
		switch string(s.b[ks:ke]) {
		case "content", "refusal":
			if s.peek() == '[' {
				if string(s.b[ks:ke]) == "content" {
					// The entries of the text the choice's content holds:
					// those of changed words go (walk_text.go).
					r.entryDrops = r.choiceDrops
					r.recArr = r.recChoice
				}
				err := r.entryArray(depth+1, idx, true)
				r.entryDrops = nil
				return err
			}
		case "tokens":
			err := s.skipValue(depth + 1)
			tok = span{vs, s.i}
			return err
		case "token_logprobs":
			err := s.skipValue(depth + 1)
			lp = span{vs, s.i}
			return err
		case "top_logprobs":
			err := s.skipValue(depth + 1)
			top = span{vs, s.i}
			return err
		}
		return s.skipValue(depth + 1)
	})
	if err != nil {
		return err
	}
	if lp.s >= 0 || top.s >= 0 {
		if r.recChoice {
			r.defArrs = append(r.defArrs, defArr{open: start, close: s.i, legacy: true})
		}
		if len(r.choiceDrops) > 0 {
			// Legacy parallel arrays lose the whole document's logprobs
			// when a word of its text changed: cutting the same element
			// out of four arrays (and text_offset's running offsets) is
			// not worth the rarity of legacy streams with logprobs.
			r.replace(start, s.i, "null")
			return nil
		}
		r.legacy(depth, idx, tok, lp, top)
	}
	return nil
}
