package lab

import (
	"context"
	"math"
	"strconv"
)

// The three attacks of the lab, driven end to end through an econClient:
// every query goes through the strategy (identities, pacing, wording) and
// the whole server. Each returns its fidelity curve: the fidelity of what
// the attacker holds after each checkpoint's number of harvest queries.

// econCurve is an attack's progress against the query count.
type econCurve struct {
	checkpoints []int // harvest queries sent
	fidelity    []float64
	stats       []econStats // the attacker's spending at each checkpoint
	// detail says what the attacker ended with, in words.
	detail string
}

// reach returns the first checkpoint whose fidelity is at least target, or
// -1.
func (cv *econCurve) reach(target float64) int {
	for i, f := range cv.fidelity {
		if f >= target {
			return i
		}
	}
	return -1
}

func (cv *econCurve) last() float64 {
	if len(cv.fidelity) == 0 {
		return math.NaN()
	}
	return cv.fidelity[len(cv.fidelity)-1]
}

// checkpointGrid is base times the multiples the report reads cost
// multiples from, up to budget.
func checkpointGrid(base, budget int) []int {
	var out []int
	for _, m := range []float64{1, 1.5, 2, 3, 4, 6, 8, 10, 12, 16, 24, 32, 48, 64, 96, 128} {
		n := int(math.Round(m * float64(base)))
		if n > budget {
			break
		}
		out = append(out, n)
	}
	return out
}

// tracker calls eval at every checkpoint the client's query count passes.
type tracker struct {
	c    *econClient
	cv   *econCurve
	next int
	eval func() float64
}

func (t *tracker) done() bool { return t.next >= len(t.cv.checkpoints) }

func (t *tracker) tick() {
	for !t.done() && t.c.stats.queries >= t.cv.checkpoints[t.next] {
		t.cv.fidelity = append(t.cv.fidelity, t.eval())
		t.cv.stats = append(t.cv.stats, t.c.stats)
		t.next++
	}
}

func newTracker(c *econClient, grid []int, eval func() float64) *tracker {
	return &tracker{c: c, cv: &econCurve{checkpoints: grid}, eval: eval}
}

// record renders a record payload, paraphrased in wording and number format
// when the strategy paraphrases.
func (c *econClient) record(x []float64, key int) string {
	style := 0
	if c.s.Paraphrase {
		style = int(uint(key*40503) >> 5)
	}
	return c.wrap(formatNumbers(x, style), key)
}

// runTramerE2E is the equation-solving attack (Tramèr et al. 2016) with
// top_logprobs 2 asked, over random records. The attacker keeps every
// answer: margins where logprobs survive, labels always, and at each
// checkpoint fits both the least-squares solution and a label-only
// logistic regression, keeping whichever agrees better with the labels it
// observed (it has no other way to judge them).
func runTramerE2E(ctx context.Context, c *econClient, m *logisticModel, gen func() []float64, held [][]float64, grid []int) (*econCurve, error) {
	var xs [][]float64
	var obs []tramerObs
	var two []bool // both class logprobs came back
	d := len(m.w)
	tr := newTracker(c, grid, func() float64 {
		if len(xs) == 0 {
			return 0.5
		}
		return scoreTramer(m, fitAdaptive(xs, obs, two, d), held).agreement
	})
	for i := 0; !tr.done(); i++ {
		if i%64 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		x := gen()
		resp, _, ok, err := c.ask(ctx, Query{Prompt: c.record(x, i), TopLogprobs: 2}, false)
		if err != nil {
			return nil, err
		}
		if ok {
			xs, obs = append(xs, x), append(obs, observe(resp))
			two = append(two, len(resp.Top) >= 2)
		}
		tr.tick()
	}
	rows := len(finiteRows(obs))
	tr.cv.detail = strconv.Itoa(rows) + " of " + strconv.Itoa(len(obs)) + " answers carried a margin"
	return tr.cv, nil
}

// fitAdaptive is the attacker's model selection. Answers that carry both
// class logprobs are equations up to rounding: with d+1 of them, least
// squares on them alone. Otherwise the answers with only the chosen
// token's logprob (perturbed, coarsely rounded) compete with the
// label-only fit, judged by two-fold cross-validated label agreement (the
// attacker has nothing else to judge by; agreement on the labels fitted
// would always favour the label fit, the labels being separable).
func fitAdaptive(xs [][]float64, obs []tramerObs, twoSided []bool, d int) []float64 {
	var two []int
	for i, o := range obs {
		if o.finite && twoSided[i] {
			two = append(two, i)
		}
	}
	if len(two) >= d+1 {
		if theta, err := solveMargins(xs, obs, two, false); err == nil {
			return theta
		}
	}
	labels := fitLabels(xs, obs)
	rows := finiteRows(obs)
	if len(rows) < 2*(d+1) {
		return labels
	}
	ls, err := solveMargins(xs, obs, rows, false)
	if err != nil {
		return labels
	}
	// Two folds: fit each method on one half, score on the other.
	var cvLS, cvLab float64
	for fold := 0; fold < 2; fold++ {
		var trX, teX [][]float64
		var trO, teO []tramerObs
		for i := range xs {
			if i%2 == fold {
				teX, teO = append(teX, xs[i]), append(teO, obs[i])
			} else {
				trX, trO = append(trX, xs[i]), append(trO, obs[i])
			}
		}
		if r := finiteRows(trO); len(r) >= d+1 {
			if t, err := solveMargins(trX, trO, r, false); err == nil {
				cvLS += labelAgreement(t, teX, teO)
			}
		}
		cvLab += labelAgreement(fitLabels(trX, trO), teX, teO)
	}
	if cvLS > cvLab {
		return ls
	}
	return labels
}

func labelAgreement(theta []float64, xs [][]float64, obs []tramerObs) float64 {
	d := len(xs[0])
	var n int
	for i, x := range xs {
		z := theta[d]
		for j, v := range x {
			z += theta[j] * v
		}
		if (z > 0) == (obs[i].label > 0) {
			n++
		}
	}
	return float64(n) / float64(len(xs))
}

// runCarliniE2E recovers the hidden size (Carlini et al. 2024; Finlayson et
// al. 2024). The attacker starts with the top-k attack (logit_bias +100 on
// a reference token and a group, as many alternatives as returned); after
// eight answers in a row that show the bias was not honoured it switches
// to the logprob-free attack (binary search on the bias of each token,
// with a +100 canary first so that a dropped bias is noticed), and back
// again after eight failures there. Fidelity is 1 once the largest
// singular-value gap of the vectors assembled sits at the true h.
func runCarliniE2E(ctx context.Context, c *econClient, m *hiddenModel, steps int, grid []int, stream bool) (*econCurve, error) {
	var rows [][]float64
	found := false
	tr := newTracker(c, grid, func() float64 {
		if found {
			return 1
		}
		return 0
	})
	v := m.v
	alts := maxTopLogprobs
	logprobFree := false
	fails := 0
	modes := 0
	fail := func() {
		fails++
		if fails >= 8 {
			logprobFree, fails = !logprobFree, 0
			modes++
		}
	}
	complete := func(y []float64) {
		rows = append(rows, y)
		if !found && len(rows) > m.h {
			if est, _, _, ok := estimateHidden(rows); ok && est == m.h {
				found = true
			}
		}
	}
	newRow := func() []float64 {
		y := make([]float64, v)
		for i := range y {
			y[i] = math.NaN()
		}
		return y
	}
	pi := 0
	y := newRow()
	// logprob-free state for the current prompt
	top, tok, lo, hi, step := -1, 0, 0.0, 0.0, -1
	for q := 0; ; q++ {
		// Checkpoints are read before each query, after the previous
		// answer was folded in.
		if tr.tick(); tr.done() {
			break
		}
		if q%64 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		prompt := c.wrap(strconv.Itoa(pi), pi)
		if !logprobFree {
			group := []Bias{{Token: 0, Value: maxBias}}
			for t := 1; t < v && len(group) < max(alts, 2); t++ {
				if math.IsNaN(y[t]) {
					group = append(group, Bias{Token: t, Value: maxBias})
				}
			}
			// As many alternatives as the group holds: the biased tokens
			// then fill them exactly when the bias is honoured.
			resp, _, ok, err := c.ask(ctx, Query{Prompt: prompt, TopLogprobs: len(group), LogitBias: group}, stream)
			if err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
			if n := len(resp.Top); n >= 2 && n < len(group) {
				alts = n // the server caps alternatives: smaller groups
			}
			got := map[int]float64{}
			for _, e := range resp.Top {
				if id, ok := m.TokenID(e.Token); ok {
					got[id] = e.Logprob
				}
			}
			ref, refOK := got[0]
			// The bias was honoured when the reference is shown and every
			// alternative shown is a biased token (+100 puts them on top).
			honoured := refOK && len(resp.Top) >= 2
			for id := range got {
				if !inGroup(group, id) {
					honoured = false
				}
			}
			if !honoured {
				fail()
				continue
			}
			fails = 0
			y[0] = 0
			for id, lp := range got {
				if id != 0 {
					y[id] = lp - ref
				}
			}
			if !hasNaN(y) {
				complete(y)
				pi++
				y = newRow()
			}
			continue
		}
		// Logprob-free attack.
		if top < 0 {
			resp, _, ok, err := c.ask(ctx, Query{Prompt: prompt}, stream)
			if err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
			id, known := m.TokenID(resp.Chosen)
			if !known {
				continue
			}
			top, tok, step = id, 0, -1
			for i := range y {
				y[i] = math.NaN()
			}
			y[top] = 0
			continue
		}
		if tok == top {
			tok++
		}
		if tok >= v {
			ref := y[0]
			for t := range y {
				y[t] -= ref
			}
			complete(y)
			pi++
			y = newRow()
			top = -1
			continue
		}
		bias := maxBias * 1.0
		if step >= 0 {
			bias = (lo + hi) / 2
		}
		resp, _, ok, err := c.ask(ctx, Query{Prompt: prompt, LogitBias: []Bias{{Token: tok, Value: bias}}}, stream)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		chosen := resp.Chosen == m.Token(tok)
		if step < 0 {
			if !chosen {
				fail() // the canary: +100 must win
				continue
			}
			fails = 0
			lo, hi, step = 0, maxBias, 0
			continue
		}
		if chosen {
			hi = bias
		} else {
			lo = bias
		}
		step++
		if step >= steps {
			y[tok] = -(lo + hi) / 2
			tok++
			step = -1
		}
	}
	tr.cv.detail = strconv.Itoa(len(rows)) + " full logit vectors"
	if modes > 0 {
		tr.cv.detail += ", switched attack " + strconv.Itoa(modes) + " times"
	}
	return tr.cv, nil
}

func inGroup(g []Bias, id int) bool {
	for _, b := range g {
		if b.Token == id {
			return true
		}
	}
	return false
}

func hasNaN(y []float64) bool {
	for _, v := range y {
		if math.IsNaN(v) {
			return true
		}
	}
	return false
}

// runDistillE2E collects soft labels (top_logprobs 20 asked) on random
// records and trains the softmax-regression student at every checkpoint
// on what came back: the distribution the rewritten logprobs describe, or
// the generated token alone when they are gone.
func runDistillE2E(ctx context.Context, c *econClient, m *mlpModel, gen func() []float64, held [][]float64, epochs int, grid []int) (*econCurve, error) {
	var xs, qs [][]float64
	soft := 0
	tr := newTracker(c, grid, func() float64 {
		if len(xs) == 0 {
			return 0
		}
		return scoreStudent(m, trainStudent(xs, qs, m.v, epochs), held).agreement
	})
	for i := 0; !tr.done(); i++ {
		if i%64 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		x := gen()
		resp, _, ok, err := c.ask(ctx, Query{Prompt: c.record(x, i), TopLogprobs: maxTopLogprobs}, false)
		if err != nil {
			return nil, err
		}
		if ok {
			q := make([]float64, m.v)
			if softTarget(resp, m, q) {
				soft++
			}
			xs, qs = append(xs, x), append(qs, q)
		}
		tr.tick()
	}
	tr.cv.detail = strconv.Itoa(soft) + " of " + strconv.Itoa(len(xs)) + " answers carried soft labels"
	return tr.cv, nil
}
