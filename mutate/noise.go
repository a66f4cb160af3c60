package mutate

import (
	"bytes"
	"slices"

	"github.com/distillguard/distillguard/internal/hashmix"
)

// chosenRank is the rank that keys the sampled token's own noise, apart
// from every alternative's rank.
const chosenRank = 1 << 32

// noise returns a value uniform in [-Perturb, Perturb) that depends only on
// the seed, the choice key, the token position and the alternative rank.
func (r *Rewriter) noise(key, pos, rank uint64) float64 {
	h := hashmix.Mix64(r.seedMix + key*0x9e3779b97f4a7c15)
	h = hashmix.Mix64(h + (pos+1)*0xd1b54a32d192ed03)
	h = hashmix.Mix64(h ^ (rank+1)*0xaef17502108ef2d9)
	u := float64(h>>11)*(1.0/(1<<53))*2 - 1
	return r.p.Perturb * u
}

// perturbArray sets out for alternatives ranked by their place in the array
// (top_logprobs arrays are sorted most likely first): noise keyed by rank,
// clamped to <= 0 and to the value of the alternative ranked above, so the
// ranking survives.
func (r *Rewriter) perturbArray(key, pos uint64, alts []alt) {
	if r.p.Perturb == 0 {
		for j := range alts {
			alts[j].out = alts[j].v
		}
		return
	}
	prev := 0.0
	for j := range alts {
		a := &alts[j]
		if !a.ok {
			continue
		}
		v := a.v + r.noise(key, pos, uint64(j))
		v = min(v, prev)
		a.out, prev = v, v
	}
}

// rankAndPerturb ranks object members by value (most likely first, stable;
// non-numbers last), marks the MaxAlternatives best as kept and, with
// noise, keys it by rank and clamps each value to the one ranked above.
func (r *Rewriter) rankAndPerturb(key, pos uint64, alts []alt) {
	order := r.order[:0]
	for j := range alts {
		order = append(order, int32(j))
	}
	less := func(a, b int32) int {
		x, y := &alts[a], &alts[b]
		switch {
		case x.ok != y.ok:
			if x.ok {
				return -1
			}
			return 1
		case x.v > y.v:
			return -1
		case x.v < y.v:
			return 1
		}
		return 0
	}
	if len(order) <= 32 {
		for i := 1; i < len(order); i++ {
			for j := i; j > 0 && less(order[j], order[j-1]) < 0; j-- {
				order[j], order[j-1] = order[j-1], order[j]
			}
		}
	} else {
		slices.SortStableFunc(order, less)
	}
	r.order = order
	prev := 0.0
	for rank, j := range order {
		a := &alts[j]
		a.keep = r.maxAlt < 0 || rank < r.maxAlt
		a.out = a.v
		if r.p.Perturb != 0 && a.ok {
			v := min(a.v+r.noise(key, pos, uint64(rank)), prev)
			a.out, prev = v, v
		}
	}
}

// chosenValue returns the rewritten logprob of the sampled token. When the
// same token is listed among the alternatives with the same value, it gets
// that alternative's value (a consistent answer). Otherwise it gets its own
// noise and, if it was the most likely, every alternative is clamped below
// it so it stays ranked first.
func (r *Rewriter) chosenValue(key, pos uint64, cv float64, tok span, alts []alt) float64 {
	if r.p.Perturb == 0 {
		return cv
	}
	b := r.s.b
	if tok.s >= 0 {
		for j := range alts {
			a := &alts[j]
			if a.ok && a.v == cv && a.tok.s >= 0 && bytes.Equal(b[tok.s:tok.e], b[a.tok.s:a.tok.e]) {
				return a.out
			}
		}
	}
	c := min(cv+r.noise(key, pos, chosenRank), 0)
	top := true
	for j := range alts {
		if alts[j].ok && alts[j].v > cv {
			top = false
			break
		}
	}
	if top {
		for j := range alts {
			if alts[j].ok && alts[j].out > c {
				alts[j].out = c
			}
		}
	}
	return c
}
