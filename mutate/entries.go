package mutate

import "bytes"

// Logprob entries {token, logprob, bytes, top_logprobs[]}, the unit that
// Chat Completions (choices[].logprobs.content/refusal) and the Responses
// API (logprobs arrays) share: each entry is collected as a whole, its
// values computed together (noise.go) and then patched.

// span is a byte range s:e of the document; s < 0 means absent.
type span struct{ s, e int }

// alt is one alternative (an element of top_logprobs, a member of a legacy
// top_logprobs object or of a prompt_logprobs position). s:e spans the
// element or the member (from the key's opening quote to the value's end);
// lp spans the logprob number; tok spans the token's string content.
type alt struct {
	s, e int
	tok  span
	lp   span
	v    float64
	out  float64
	ok   bool // lp holds a number
	keep bool
}

// chosenLP is a sampled token's logprob: the number at s:e, its value v
// (parsed only when noise needs it), ok when it is a number.
type chosenLP struct {
	s, e int
	v    float64
	ok   bool
}

// group is one top_logprobs array: open is the '[' offset, close the ']'
// offset, alts[lo:hi] its elements.
type group struct{ open, close, lo, hi int }

// entryArray walks an array of logprob entries {token, logprob, bytes,
// top_logprobs[]}. counted entries take their positions from the stream's
// running counter for key; uncounted ones (a document that repeats the
// whole list, e.g. response.output_text.done) count from 0.
func (r *Rewriter) entryArray(depth int, key uint64, counted bool) error {
	s := &r.s
	var base uint64
	perturb := r.p.Perturb != 0
	if counted && perturb {
		base = r.position(key)
	}
	n := 0
	drops := r.entryDrops
	r.entryDrops = nil
	rec := r.recArr // a deferred walk records the entries (walk_text.go)
	r.recArr = false
	lo := len(r.defEnts)
	open := s.i
	d := r.dropper()
	off := 0
	err := s.eachElem(func(i int) error {
		n++
		es := s.i
		r.lastTok = span{-1, -1}
		var err error
		if s.peek() == '{' {
			err = r.entry(depth+1, key, base+uint64(i))
		} else {
			err = s.skipValue(depth + 1)
		}
		if err == nil && rec {
			r.recordEntry(es, s.i, r.lastTok)
		}
		if err == nil && drops != nil {
			// The entry's token covers the next bytes of the text: it
			// goes when they overlap a changed word (TextDropper).
			tl := 0
			if r.lastTok.s >= 0 {
				tl = decodedLen(s.b[r.lastTok.s:r.lastTok.e])
			}
			d.item(es, s.i, !overlapsAny(drops, off, off+tl))
			off += tl
		}
		return err
	})
	if err == nil && drops != nil {
		d.done(open, s.i-1)
	}
	if err == nil && rec {
		r.defArrs = append(r.defArrs, defArr{open: open, close: s.i - 1, lo: lo, hi: len(r.defEnts)})
	}
	if err == nil && counted && perturb && n > 0 {
		r.advance(key, n)
	}
	return err
}

// overlapsAny reports whether [s, e) overlaps one of spans (an empty token
// overlaps nothing).
func overlapsAny(spans []TextSpan, s, e int) bool {
	for _, sp := range spans {
		if s < sp.End && sp.Start < e {
			return true
		}
	}
	return false
}

// entry walks one logprob entry, then computes and patches it as a whole,
// since the chosen token's value and its alternatives constrain each other.
func (r *Rewriter) entry(depth int, key, pos uint64) error {
	s := &r.s
	r.alts = r.alts[:0]
	r.groups = r.groups[:0]
	r.chosen = r.chosen[:0]
	tok := span{-1, -1}
	if ok, err := r.entryCompact(depth, &tok); ok || err != nil {
		if err != nil {
			return err
		}
		r.lastTok = tok
		r.finishEntry(key, pos, tok)
		return nil
	}
	r.alts = r.alts[:0]
	r.groups = r.groups[:0]
	r.chosen = r.chosen[:0]
	tok = span{-1, -1}
	err := s.eachMember(func(ks, ke int) error {
		vs := s.i
		switch string(s.b[ks:ke]) {
		case "token":
			err := s.skipValue(depth + 1)
			if err == nil && s.b[vs] == '"' {
				tok = span{vs + 1, s.i - 1}
			}
			return err
		case "logprob":
			err := s.skipValue(depth + 1)
			if err == nil {
				r.chosen = append(r.chosen, r.number(vs, s.i, r.p.Perturb != 0 || r.shift != nil))
			}
			return err
		case "top_logprobs":
			if s.peek() == '[' {
				return r.collectAltArray(depth + 1)
			}
		}
		return s.skipValue(depth + 1)
	})
	if err != nil {
		return err
	}
	r.lastTok = tok
	r.finishEntry(key, pos, tok)
	return nil
}

// number reads the value at s:e as a logprob: ok when it is a number
// (anything else is left alone). The value is parsed only when parse is
// set: rounding alone works on the text (see roundText).
func (r *Rewriter) number(s, e int, parse bool) chosenLP {
	c := chosenLP{s: s, e: e}
	if b := r.s.b[s]; b == '-' || isDigit(b) {
		c.ok = true
		if parse {
			c.v, c.ok = r.value(r.s.b[s:e])
		}
	}
	return c
}

// collectAltArray records the elements of a top_logprobs array of
// {token, logprob, bytes} objects. It is collectAltArrayF with the OpenAI
// names as constants, kept apart because it is the per-token hot path:
// through the generic walk BenchmarkRewriteChunkTop5Allow takes 1.65 µs
// instead of 1.48 µs.
func (r *Rewriter) collectAltArray(depth int) error {
	s := &r.s
	g := group{open: s.i, lo: len(r.alts)}
	err := s.eachElem(func(int) error {
		a := alt{s: s.i, tok: span{-1, -1}, lp: span{-1, -1}}
		var err error
		if s.peek() == '{' {
			err = r.altObject(depth+1, &a)
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

// altObject reads one top_logprobs element {token, logprob, bytes} into a.
func (r *Rewriter) altObject(depth int, a *alt) error {
	s := &r.s
	if r.altCompact(depth, a) {
		return nil
	}
	return s.eachMember(func(ks, ke int) error {
		vs := s.i
		if err := s.skipValue(depth + 1); err != nil {
			return err
		}
		switch string(s.b[ks:ke]) {
		case "token":
			if s.b[vs] == '"' {
				a.tok = span{vs + 1, s.i - 1}
			}
		case "logprob":
			c := r.number(vs, s.i, false) // parsed when needed (parseAlts)
			a.lp = span{vs, s.i}
			a.v, a.ok = c.v, c.ok
		}
		return nil
	})
}

// finishEntry computes the values of the entry just collected (r.chosen,
// r.groups, r.alts) at position pos of key and patches them: the sampled
// token's logprob, each top_logprobs array's kept values, and the cut to
// MaxAlternatives.
func (r *Rewriter) finishEntry(key, pos uint64, tok span) {
	var cv float64
	cok := false
	if n := len(r.chosen); n > 0 {
		cv, cok = r.chosen[n-1].v, r.chosen[n-1].ok
	}
	cout := cv
	if r.p.Perturb != 0 {
		for gi, g := range r.groups {
			alts := r.alts[g.lo:g.hi]
			// Only the alternatives that are kept, and those the chosen
			// value depends on (the first, for the ranking, and up to the
			// same token listed), need their values.
			need := len(alts)
			if r.maxAlt >= 0 && r.shift == nil { // the mark reads every value
				need = min(need, r.maxAlt)
			}
			last := gi == len(r.groups)-1
			if last && cok && len(alts) > 0 {
				need = max(need, 1, r.sameToken(tok, alts)+1)
			}
			r.parseAlts(alts[:need])
			r.perturbArray(key, pos, alts[:need])
			if last && cok {
				cout = r.chosenValue(key, pos, cv, tok, alts[:need])
			}
		}
		if cok && len(r.groups) == 0 {
			cout = r.chosenValue(key, pos, cv, tok, nil)
		}
	}
	if r.shift != nil {
		cout = r.shiftEntry(tok, cv, cout, cok)
	}
	// Patches in document order (the sampled token's logprob usually comes
	// before its top_logprobs), so that no sort is needed.
	ci := 0
	for _, g := range r.groups {
		for ; ci < len(r.chosen) && r.chosen[ci].s < g.open; ci++ {
			r.patchChosen(ci, cout)
		}
		alts := r.alts[g.lo:g.hi]
		for j := range alts {
			a := &alts[j]
			a.keep = r.maxAlt < 0 || j < r.maxAlt
			if a.keep && a.ok && r.numLP {
				r.patchNum(a.lp.s, a.lp.e, a.v, a.out, r.round)
			}
		}
		r.deleteDropped(g.open, g.close, alts)
	}
	for ; ci < len(r.chosen); ci++ {
		r.patchChosen(ci, cout)
	}
}

// patchChosen patches the i-th logprob member of the entry with out.
func (r *Rewriter) patchChosen(i int, out float64) {
	if c := r.chosen[i]; c.ok && r.numLP {
		r.patchNum(c.s, c.e, c.v, out, r.round)
	}
}

// patchNum rewrites a logprob: with noise from its value, otherwise by
// rounding its text.
func (r *Rewriter) patchNum(s, e int, orig, out float64, k int) {
	if r.p.Perturb == 0 && r.shift == nil {
		r.roundNum(s, e, k)
		return
	}
	if r.valProb {
		r.patchProb(s, e, orig, out, k)
		return
	}
	r.replaceNum(s, e, orig, out, k)
}

// sameToken returns the index of the first alternative whose token has
// the same bytes as tok, or -1.
func (r *Rewriter) sameToken(tok span, alts []alt) int {
	if tok.s < 0 {
		return -1
	}
	b := r.s.b
	for j := range alts {
		if a := &alts[j]; a.tok.s >= 0 && bytes.Equal(b[tok.s:tok.e], b[a.tok.s:a.tok.e]) {
			return j
		}
	}
	return -1
}

// parseAlts parses the values of alts, which collecting left as text.
func (r *Rewriter) parseAlts(alts []alt) {
	for j := range alts {
		if a := &alts[j]; a.ok {
			a.v, a.ok = r.value(r.s.b[a.lp.s:a.lp.e])
		}
	}
}

// deleteDropped removes the alternatives whose keep is false from the
// container whose brackets are at open and close (see dropper).
func (r *Rewriter) deleteDropped(open, close int, alts []alt) {
	d := r.dropper()
	for j := range alts {
		d.item(alts[j].s, alts[j].e, alts[j].keep)
	}
	d.done(open, close)
}

// The compact spellings of an entry and of an alternative, in the member
// order OpenAI and vLLM send: {"token":S,"logprob":N,"bytes":B,
// "top_logprobs":[...]} and {"token":S,"logprob":N,"bytes":B}, bytes
// optional. Read by fixed byte patterns, they skip the per-member name
// scanning of the general walk, which an event of top-5 logprobs goes
// through 20 times. Values are validated by the same scanner routines as
// in the general walk, so a document is accepted or refused alike; when
// the bytes are spelled any other way (whitespace, another member order,
// other members), the general walk reads the object from its start.
const (
	compactTok   = `{"token":`
	compactLP    = `,"logprob":`
	compactBytes = `,"bytes":`
	compactTop   = `,"top_logprobs":`
)

// hasAt reports whether b holds p at offset i.
func hasAt(b []byte, i int, p string) bool {
	return len(b)-i >= len(p) && string(b[i:i+len(p)]) == p
}

// compactHead reads `{"token":S,"logprob":N` and an optional `,"bytes":B`
// from the cursor, B validated at depth: the token's content span, the
// logprob's span and the offset after what was read; ok false when the
// bytes are spelled otherwise or do not parse (the general walk then
// reads them and finds the same error).
func (s *scanner) compactHead(depth int) (tok, lp span, end int, ok bool) {
	b := s.b
	i := s.i
	if !hasAt(b, i, compactTok) || i+len(compactTok) >= len(b) || b[i+len(compactTok)] != '"' {
		return tok, lp, 0, false
	}
	t := scanner{b: b, i: i + len(compactTok), valid: s.valid}
	ts := t.i
	if t.skipString() != nil || !hasAt(b, t.i, compactLP) {
		return tok, lp, 0, false
	}
	tok = span{ts + 1, t.i - 1}
	t.i += len(compactLP)
	if c := t.peek(); c != '-' && !isDigit(c) {
		return tok, lp, 0, false
	}
	vs := t.i
	if t.skipNumber() != nil {
		return tok, lp, 0, false
	}
	lp = span{vs, t.i}
	if hasAt(b, t.i, compactBytes) {
		t.i += len(compactBytes)
		if t.skipValue(depth+1) != nil {
			return tok, lp, 0, false
		}
	}
	return tok, lp, t.i, true
}

// altCompact reads a compact top_logprobs element into a, as altObject
// does, and reports whether it was one.
func (r *Rewriter) altCompact(depth int, a *alt) bool {
	s := &r.s
	tok, lp, end, ok := s.compactHead(depth)
	if !ok || end >= len(s.b) || s.b[end] != '}' {
		return false
	}
	s.i = end + 1
	a.tok, a.lp = tok, lp
	c := r.number(lp.s, lp.e, false) // parsed when needed (parseAlts)
	a.v, a.ok = c.v, c.ok
	return true
}

// entryCompact reads a compact entry into tok, r.chosen and r.alts, as
// entry's general walk does. ok false: not compact, nothing kept (the
// caller resets the scratch); an error is the general walk's own (the
// top_logprobs array does not parse).
func (r *Rewriter) entryCompact(depth int, tok *span) (ok bool, err error) {
	s := &r.s
	t, lp, end, ok := s.compactHead(depth)
	if !ok || !hasAt(s.b, end, compactTop) || end+len(compactTop) >= len(s.b) || s.b[end+len(compactTop)] != '[' {
		return false, nil
	}
	save := s.i
	s.i = end + len(compactTop)
	if err := r.collectAltArray(depth + 1); err != nil {
		return false, err
	}
	if s.i >= len(s.b) || s.b[s.i] != '}' {
		s.i = save
		return false, nil
	}
	s.i++
	*tok = t
	r.chosen = append(r.chosen, r.number(lp.s, lp.e, r.p.Perturb != 0 || r.shift != nil))
	return true, nil
}
