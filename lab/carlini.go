package lab

import (
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"strconv"
	"strings"

	"gonum.org/v1/gonum/mat"
)

// CarliniParams sizes the hidden-dimension experiment.
type CarliniParams struct {
	Hidden int // h, the model's hidden size
	Vocab  int // V
	// ExtraVectors is how many logit vectors beyond h the attacker collects.
	ExtraVectors int
	// BisectSteps is the binary-search depth per token of the logprob-free
	// attack (resolution 100/2^steps in logit units).
	BisectSteps int
	Policies    []Policy
	// LogprobFree names the policies (from Policies) under which the
	// logprob-free attack is also run.
	LogprobFree []string
}

// hiddenModel is a toy LM whose logits are W·g(prompt): W is V×h with
// N(0,1) entries and g(prompt) a hidden state with N(0, σ²/h) entries drawn
// from a generator keyed by the prompt, so every logit vector lies in the
// h-dimensional column space of W — the structure Carlini et al., "Stealing
// Part of a Production Language Model" (ICML 2024) §4 and Finlayson et al.,
// "Logits of API-Protected LLMs Leak Proprietary Information" (2024) §3
// exploit.
type hiddenModel struct {
	tokVocab
	h     int
	scale float64
	w     []float64 // V×h, row-major
	seed  uint64
	cache map[string][]float64
}

func newHiddenModel(seed uint64, h, v int) *hiddenModel {
	r := newRand(seed, 2)
	m := &hiddenModel{tokVocab: newTokVocab(v), h: h, scale: 3, w: make([]float64, v*h), seed: seed, cache: map[string][]float64{}}
	for i := range m.w {
		m.w[i] = r.NormFloat64()
	}
	return m
}

// Logits computes W·g(prompt); results are cached per prompt as an
// inference server's prefix cache would.
func (m *hiddenModel) Logits(prompt string, dst []float64) error {
	if z, ok := m.cache[prompt]; ok {
		copy(dst, z)
		return nil
	}
	hs := fnv.New64a()
	hs.Write([]byte(prompt))
	r := newRand(m.seed^hs.Sum64(), 3)
	g := make([]float64, m.h)
	for i := range g {
		g[i] = m.scale / math.Sqrt(float64(m.h)) * r.NormFloat64()
	}
	z := make([]float64, m.v)
	for i := range z {
		row := m.w[i*m.h : (i+1)*m.h]
		var s float64
		for j, v := range g {
			s += row[j] * v
		}
		z[i] = s
	}
	m.cache[prompt] = z
	copy(dst, z)
	return nil
}

// carliniResult is one attack run.
type carliniResult struct {
	policy   Policy
	strategy string
	ok       bool
	reason   string // why full vectors could not be assembled
	queries  int
	perVec   int // queries per logit vector
	vectors  int
	estimate int     // ĥ
	gap      float64 // s_ĥ / s_ĥ+1
	needed   int     // vectors until ĥ first equalled h (0: never)
	tail     float64 // s_h+1 / s_1: the noise floor relative to the signal
	// partial-information counts when full vectors are out of reach
	alternatives int
	distinct     int // distinct tokens seen in partial mode
	prompts      int // prompts queried in partial mode
	probeQueries int
	sv           []float64
}

// probe asks once, with a +100 bias on a token the model would not choose,
// for as many alternatives as OpenAI allows; it tells the attacker whether
// logit_bias is honoured and how many alternatives come back.
func probe(api *API, m *hiddenModel, logprobs bool) (biasOK bool, alts int, err error) {
	q := Query{Prompt: "probe", LogitBias: []Bias{{Token: m.v - 1, Value: maxBias}}}
	if logprobs {
		q.TopLogprobs = maxTopLogprobs
	}
	r, err := api.Query(q)
	if err != nil {
		return false, 0, err
	}
	return r.Chosen == m.Token(m.v-1), len(r.Top), nil
}

func prompts(n int) []string {
	p := make([]string, n)
	for i := range p {
		p[i] = "Continue the story, part " + strconv.Itoa(i)
	}
	return p
}

// topKAttack assembles full logit vectors from top-k logprobs and
// logit_bias (Carlini et al. §5.3, Finlayson et al. §3.1): each query biases
// a reference token and k−1 others by +100 so exactly they fill the top-k,
// and within the biased set logprob differences equal logit differences.
func topKAttack(ctx context.Context, api *API, m *hiddenModel, n int, prog *Task) (carliniResult, [][]float64, error) {
	res := carliniResult{strategy: "top-k logprobs + logit_bias"}
	biasOK, alts, err := probe(api, m, true)
	if err != nil {
		return res, nil, err
	}
	res.alternatives = alts
	res.probeQueries = 1
	if !biasOK || alts < 2 {
		switch {
		case !biasOK:
			res.reason = "logit_bias not honoured"
		default:
			res.reason = fmt.Sprintf("%d alternatives returned (need ≥ 2)", alts)
		}
		// What remains: the unbiased top-k of each prompt.
		seen := make([]bool, m.v)
		for _, p := range prompts(n) {
			r, err := api.Query(Query{Prompt: p, TopLogprobs: maxTopLogprobs})
			if err != nil {
				return res, nil, err
			}
			for _, t := range r.Top {
				if id, ok := m.TokenID(t.Token); ok {
					seen[id] = true
				}
			}
			if r.HasLogprob {
				if id, ok := m.TokenID(r.Chosen); ok {
					seen[id] = true
				}
			}
			prog.Add(1)
		}
		for _, s := range seen {
			if s {
				res.distinct++
			}
		}
		res.prompts = n
		res.queries = api.Stats().Queries
		return res, nil, nil
	}
	group := alts - 1
	var rows [][]float64
	for _, p := range prompts(n) {
		if ctx.Err() != nil {
			return res, nil, ctx.Err()
		}
		y := make([]float64, m.v)
		for i := range y {
			y[i] = math.NaN()
		}
		y[0] = 0
		for start := 1; start < m.v; start += group {
			end := min(start+group, m.v)
			bias := []Bias{{Token: 0, Value: maxBias}}
			for t := start; t < end; t++ {
				bias = append(bias, Bias{Token: t, Value: maxBias})
			}
			r, err := api.Query(Query{Prompt: p, TopLogprobs: alts, LogitBias: bias})
			if err != nil {
				return res, nil, err
			}
			ref := math.NaN()
			for _, e := range r.Top {
				if e.Token == m.Token(0) {
					ref = e.Logprob
				}
			}
			for _, e := range r.Top {
				if id, ok := m.TokenID(e.Token); ok && id >= start && id < end {
					y[id] = e.Logprob - ref
				}
			}
		}
		rows = append(rows, y)
		prog.Add(1)
	}
	res.queries = api.Stats().Queries
	res.perVec = (m.v - 1 + group - 1) / group
	return res, rows, nil
}

// logprobFreeAttack assembles full logit vectors from the chosen token alone
// (Carlini et al. §6, "logprob-free" attack): for each token t a binary
// search finds the smallest bias B* that makes t the greedy choice; then
// z_t + B* = z_top, so z_t − z_top = −B*. It requests no logprobs, so
// policies that drop logit_bias only together with logprobs do not stop it.
func logprobFreeAttack(ctx context.Context, api *API, m *hiddenModel, n, steps int, prog *Task) (carliniResult, [][]float64, error) {
	res := carliniResult{strategy: "logprob-free (bias binary search)"}
	biasOK, _, err := probe(api, m, false)
	if err != nil {
		return res, nil, err
	}
	res.probeQueries = 1
	if !biasOK {
		res.reason = "logit_bias not honoured"
		res.queries = api.Stats().Queries
		return res, nil, nil
	}
	var rows [][]float64
	for _, p := range prompts(n) {
		if ctx.Err() != nil {
			return res, nil, ctx.Err()
		}
		r, err := api.Query(Query{Prompt: p})
		if err != nil {
			return res, nil, err
		}
		top, ok := m.TokenID(r.Chosen)
		if !ok {
			return res, nil, fmt.Errorf("unknown token %q", r.Chosen)
		}
		y := make([]float64, m.v)
		for t := range y {
			if t == top {
				continue
			}
			lo, hi := 0.0, float64(maxBias)
			for range steps {
				mid := (lo + hi) / 2
				r, err := api.Query(Query{Prompt: p, LogitBias: []Bias{{Token: t, Value: mid}}})
				if err != nil {
					return res, nil, err
				}
				if r.Chosen == m.Token(t) {
					hi = mid
				} else {
					lo = mid
				}
			}
			y[t] = -(lo + hi) / 2
		}
		// Re-reference to token 0 so every row shares one reference.
		ref := y[0]
		for t := range y {
			y[t] -= ref
		}
		rows = append(rows, y)
		prog.Add(1)
	}
	res.queries = api.Stats().Queries
	res.perVec = 1 + (m.v-1)*steps
	return res, rows, nil
}

// estimateHidden centres each logit vector (removing the unknown additive
// shift that logprobs and references leave) and returns the singular values
// of the stacked vectors and the index of the largest log-gap between
// consecutive singular values: the estimated hidden size.
func estimateHidden(rows [][]float64) (h int, gap float64, sv []float64, ok bool) {
	n, v := len(rows), len(rows[0])
	a := mat.NewDense(n, v, nil)
	for i, r := range rows {
		var mean float64
		for _, x := range r {
			mean += x
		}
		mean /= float64(v)
		for j, x := range r {
			if math.IsNaN(x) {
				return 0, 0, nil, false
			}
			a.Set(i, j, x-mean)
		}
	}
	var svd mat.SVD
	if !svd.Factorize(a, mat.SVDNone) {
		return 0, 0, nil, false
	}
	sv = svd.Values(nil)
	best := 0.0
	for i := 0; i+1 < len(sv); i++ {
		lo := math.Max(sv[i+1], 1e-300)
		if g := math.Log(sv[i]) - math.Log(lo); g > best {
			best, h = g, i+1
		}
	}
	return h, math.Exp(best), sv, true
}

func finishCarlini(res *carliniResult, rows [][]float64, h int) {
	if rows == nil {
		return
	}
	res.vectors = len(rows)
	est, gap, sv, ok := estimateHidden(rows)
	if !ok {
		res.reason = "incomplete vectors"
		return
	}
	res.ok = true
	res.estimate, res.gap, res.sv = est, gap, sv
	if h < len(sv) {
		res.tail = sv[h] / sv[0]
	}
	for n := h + 1; n <= len(rows); n++ {
		if e, _, _, ok := estimateHidden(rows[:n]); ok && e == h {
			res.needed = n
			break
		}
	}
}

// RunCarlini runs the hidden-dimension recovery under every policy.
func RunCarlini(ctx context.Context, seed uint64, p CarliniParams, prog *Task) (Section, error) {
	return runCarlini(ctx, &pool{sem: make(chan struct{}, 1)}, seed, p, prog)
}

// runCarlini runs one job per policy and attack on pl. Each job builds its
// own copy of the model (same seed, same weights) so jobs share nothing.
func runCarlini(ctx context.Context, pl *pool, seed uint64, p CarliniParams, prog *Task) (Section, error) {
	n := p.Hidden + p.ExtraVectors
	var free []Policy
	for _, name := range p.LogprobFree {
		for _, pol := range p.Policies {
			if pol.Name == name {
				free = append(free, pol)
			}
		}
	}
	prog.Grow((len(p.Policies) + len(free)) * n)
	topk := make([]carliniResult, len(p.Policies))
	lpf := make([]carliniResult, len(free))
	var jobs []func() error
	for i, pol := range p.Policies {
		jobs = append(jobs, func() error {
			m := newHiddenModel(seed, p.Hidden, p.Vocab)
			api := NewAPI(m, pol, APIOptions{Stream: true, Session: "carlini-attacker", Seed: seed + uint64(i)})
			res, rows, err := topKAttack(ctx, api, m, n, prog)
			if err != nil {
				return fmt.Errorf("top-k attack, %s: %w", pol.Name, err)
			}
			res.policy = pol
			finishCarlini(&res, rows, p.Hidden)
			topk[i] = res
			return nil
		})
	}
	for i, pol := range free {
		jobs = append(jobs, func() error {
			m := newHiddenModel(seed, p.Hidden, p.Vocab)
			api := NewAPI(m, pol, APIOptions{Stream: true, Session: "carlini-attacker", Seed: seed + 1000 + uint64(i)})
			res, rows, err := logprobFreeAttack(ctx, api, m, n, p.BisectSteps, prog)
			if err != nil {
				return fmt.Errorf("logprob-free attack, %s: %w", pol.Name, err)
			}
			res.policy = pol
			finishCarlini(&res, rows, p.Hidden)
			lpf[i] = res
			return nil
		})
	}
	if err := pl.all(ctx, jobs...); err != nil {
		return Section{}, err
	}
	return carliniSection(seed, p, n, topk, lpf), nil
}

func carliniRow(r carliniResult, h, v int) []string {
	if !r.ok {
		partial := "—"
		if r.prompts > 0 {
			partial = fmt.Sprintf("%d alternatives per prompt: logprobs of %d distinct tokens over %d prompts (%.1f%% of V); no full vector",
				r.alternatives, r.distinct, r.prompts, 100*float64(r.distinct)/float64(v))
		}
		return []string{r.policy.Name, "no: " + r.reason, itoa(r.queries), "—", "0", "—", "—", "—", "—", partial}
	}
	needed := "never"
	if r.needed > 0 {
		needed = fmt.Sprintf("%d vectors = %d queries", r.needed, r.needed*r.perVec+r.probeQueries)
	}
	verdict := "h recovered"
	if r.estimate != h {
		verdict = "wrong h"
	}
	return []string{r.policy.Name, "yes", itoa(r.queries), itoa(r.perVec), itoa(r.vectors), itoa(r.estimate), fmtSci(r.gap), fmtSci(r.tail), needed, verdict}
}

func carliniSection(seed uint64, p CarliniParams, n int, topk, lpf []carliniResult) Section {
	s := Section{
		Title: "Hidden-dimension recovery (Carlini et al. 2024; Finlayson et al. 2024)",
		Intro: []string{
			"A toy language model computes logits = W·g(prompt) with W a random V×h matrix, so every full logit vector lies in an " +
				"h-dimensional subspace. The attacker assembles full logit vectors (up to an additive shift) for n > h prompts, centres " +
				"them, stacks them and reads h off the largest gap between consecutive singular values. Responses are streamed " +
				"(`stream: true`) and cut into random chunks before the SSE rewriter, as Envoy delivers them.",
			"Top-k attack: each query biases the reference token and k−1 others by +100 so that exactly they fill the top-k; " +
				"within the biased set logprob differences are logit differences, so one vector costs ⌈(V−1)/(k−1)⌉ queries. " +
				"Logprob-free attack: no logprobs requested; a binary search on the bias of each token finds where it overtakes the " +
				"greedy choice, so one vector costs 1 + (V−1)·steps queries and is immune to any rewriting of logprobs.",
		},
		Params: [][2]string{
			{"seed", fmt.Sprint(seed)},
			{"hidden size h", itoa(p.Hidden)},
			{"vocabulary V", itoa(p.Vocab)},
			{"logits", "W ~ N(0,1)^{V×h}, g ~ N(0, 9/h)^h (logit sd ≈ 3), no bias term"},
			{"vectors collected n", itoa(n)},
			{"top_logprobs requested", "20 (OpenAI's maximum)"},
			{"logit_bias value", "+100 (OpenAI's maximum)"},
			{"logprob-free search steps", fmt.Sprintf("%d (resolution %.2g)", p.BisectSteps, float64(maxBias)/math.Exp2(float64(p.BisectSteps)))},
		},
	}
	header := []string{"policy", "full vectors?", "queries", "queries / vector", "vectors", "ĥ", "gap s_ĥ/s_ĥ+1", "noise floor s_h+1/s_1", "queries until ĥ = h", "result"}
	t1 := Table{Title: "Top-k logprobs + logit_bias attack", Header: header}
	for _, r := range topk {
		t1.Rows = append(t1.Rows, carliniRow(r, p.Hidden, p.Vocab))
	}
	t1.Notes = []string{"\"queries until ĥ = h\" counts the probe query plus the vectors needed before the largest singular-value gap first sat at the true h; " +
		"a gap near 1 means no visible rank: the attacker cannot tell h."}
	t2 := Table{Title: "Logprob-free attack (chosen token only)", Header: header}
	for _, r := range lpf {
		t2.Rows = append(t2.Rows, carliniRow(r, p.Hidden, p.Vocab))
	}
	s.Tables = []Table{t1, t2}

	fig := Figure{
		File:   "carlini-spectrum.svg",
		Title:  fmt.Sprintf("Singular values of stacked logit vectors (h = %d)", p.Hidden),
		XLabel: "index",
		YLabel: "singular value / largest",
		LogY:   true,
	}
	for _, r := range topk {
		if !r.ok {
			continue
		}
		ser := Series{Name: r.policy.Name}
		for i, v := range r.sv {
			ser.X = append(ser.X, float64(i+1))
			ser.Y = append(ser.Y, v/r.sv[0])
		}
		fig.Series = append(fig.Series, ser)
	}
	s.Figures = []Figure{fig}
	s.Findings = carliniFindings(topk, lpf, p.Hidden)
	return s
}

func carliniFindings(topk, lpf []carliniResult, h int) []string {
	var out []string
	var ok, wrong, no []string
	for _, r := range topk {
		switch {
		case !r.ok:
			no = append(no, fmt.Sprintf("%s (%s)", r.policy.Name, r.reason))
		case r.estimate == h:
			ok = append(ok, r.policy.Name)
		default:
			wrong = append(wrong, fmt.Sprintf("%s (ĥ = %d)", r.policy.Name, r.estimate))
		}
	}
	if len(ok) > 0 {
		out = append(out, fmt.Sprintf("Top-k attack recovers h = %d exactly under: %s.", h, strings.Join(ok, ", ")))
	}
	if len(wrong) > 0 {
		out = append(out, "Top-k attack misses h under: "+strings.Join(wrong, ", ")+".")
	}
	if len(no) > 0 {
		out = append(out, "Top-k attack cannot assemble full vectors under: "+strings.Join(no, ", ")+
			"; the attacker keeps only each prompt's unbiased top-k (or less), scattered over the vocabulary, which gives no rank estimate. "+
			"Where logit_bias is still honoured without logprobs, the logprob-free attack below remains open.")
	}
	for _, r := range lpf {
		if r.ok {
			out = append(out, fmt.Sprintf("Logprob-free attack under %s: ĥ = %d with %d queries (%d per vector) — rewriting logprobs does not stop it; only refusing logit_bias does.",
				r.policy.Name, r.estimate, r.queries, r.perVec))
		} else {
			out = append(out, fmt.Sprintf("Logprob-free attack under %s: impossible (%s), %d queries spent.", r.policy.Name, r.reason, r.queries))
		}
	}
	return out
}
