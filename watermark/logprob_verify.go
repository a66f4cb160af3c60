package watermark

import (
	"errors"
	"fmt"
	"math"
)

// ProbeContext is what the verifier computes a probe's context signal h
// from: the probe prompt's text (TextContext), or, when Features is set,
// the probe's numeric features (VectorContext). The provider chooses the
// probes, so it knows them; they must be the contexts the mark used.
type ProbeContext struct {
	Text     string    `json:"prompt,omitempty"`
	Features []float64 `json:"features,omitempty"`
}

// LogprobResult is the test of a suspect's logprobs against a key.
type LogprobResult struct {
	KeyID     string `json:"key_id"`
	Probes    int    `json:"probes"`
	Positions int    `json:"positions"`
	// Tokens is the number of distinct tokens scored, Observations the
	// alternatives behind them.
	Tokens       int  `json:"tokens"`
	Observations int  `json:"observations"`
	Reference    bool `json:"reference"`
	// Z is the statistic sum_w s(w) c_w over sqrt(sum_w c_w^2) (see
	// LogprobSample.Score).
	Z float64 `json:"z"`
	// PValue bounds P(Z >= observed) under the null for any values c_w:
	// min(1, exp(-Z^2/2), 3.18 (1 - Phi(Z))), conservative by
	// construction. PValueNormal is 1 - Phi(Z), the central-limit value,
	// for comparison.
	PValue       float64 `json:"p_value"`
	PValueNormal float64 `json:"p_value_normal"`
	Method       string  `json:"method"`
}

// MethodRademacher names the logprob test.
const MethodRademacher = "keyed token-sign randomisation, Hoeffding / Bentkus-Dzindzalieta tail bound (conservative)"

// ErrNoLogprobs is returned when the input holds no alternatives to score.
var ErrNoLogprobs = errors.New("watermark: no top_logprobs alternatives to score")

type lpObs struct {
	probe int32
	token int32
	y     float64
}

// LogprobSample holds a suspect's answers to probes, reduced to one value
// per returned alternative (all but the first of each position): its
// logprob minus, with a reference (the provider's own unmarked model's
// answers to the same probes, same order), the reference's logprob for the
// same token at the same probe and position; without one, the suspect's
// logprob alone. Values are centred within their position, so shifts
// common to a position (normalisation) cancel.
type LogprobSample struct {
	tokens    []string
	contexts  []ProbeContext
	obs       []lpObs
	probes    int
	positions int
	reference bool
}

// NewLogprobSample aggregates suspect positions; reference may be nil;
// contexts[i] is probe i's context (every probe number in suspect must
// have one).
func NewLogprobSample(suspect, reference []LogprobPosition, contexts []ProbeContext) (*LogprobSample, error) {
	type pk struct{ probe, index int }
	type refPos struct {
		first string
		lp    map[string]float64
	}
	var ref map[pk]refPos
	if reference != nil {
		ref = make(map[pk]refPos, len(reference))
		for _, p := range reference {
			if len(p.Top) == 0 {
				continue
			}
			m := make(map[string]float64, len(p.Top))
			for _, t := range p.Top {
				if _, dup := m[t.Token]; !dup {
					m[t.Token] = t.Logprob
				}
			}
			ref[pk{p.Probe, p.Index}] = refPos{first: p.Top[0].Token, lp: m}
		}
	}
	ls := &LogprobSample{reference: reference != nil, contexts: contexts}
	idx := map[string]int32{}
	probes := map[int]bool{}
	var ys []float64
	var toks []int32
	for _, p := range suspect {
		if len(p.Top) < 2 {
			continue
		}
		if p.Probe < 0 || p.Probe >= len(contexts) {
			return nil, fmt.Errorf("watermark: no probe context for probe %d (%d given)", p.Probe, len(contexts))
		}
		var rp refPos
		if ref != nil {
			var ok bool
			if rp, ok = ref[pk{p.Probe, p.Index}]; !ok {
				continue
			}
		}
		ys, toks = ys[:0], toks[:0]
		seen := map[string]bool{p.Top[0].Token: true}
		for _, t := range p.Top[1:] {
			if seen[t.Token] {
				continue // a repeated token is one alternative
			}
			seen[t.Token] = true
			y := t.Logprob
			if ref != nil {
				r, ok := rp.lp[t.Token]
				if !ok || t.Token == rp.first {
					continue
				}
				y -= r
			}
			if math.IsNaN(y) || math.IsInf(y, 0) {
				continue
			}
			i, ok := idx[t.Token]
			if !ok {
				i = int32(len(ls.tokens))
				idx[t.Token] = i
				ls.tokens = append(ls.tokens, t.Token)
			}
			ys = append(ys, y)
			toks = append(toks, i)
		}
		if len(ys) < 2 {
			continue
		}
		var mean float64
		for _, y := range ys {
			mean += y
		}
		mean /= float64(len(ys))
		for i, y := range ys {
			ls.obs = append(ls.obs, lpObs{probe: int32(p.Probe), token: toks[i], y: y - mean})
		}
		ls.positions++
		probes[p.Probe] = true
	}
	ls.probes = len(probes)
	if len(ls.obs) == 0 {
		return nil, ErrNoLogprobs
	}
	return ls, nil
}

// Tokens is the number of distinct tokens in the sample.
func (ls *LogprobSample) Tokens() int { return len(ls.tokens) }

// Score tests the sample against key k. With h_i the key's context signal
// of probe i and y_iw the centred value of token w at probe i, each token
// seen at three probes or more contributes c_w = sqrt(n_w) corr_w(h, y),
// the correlation of its values with the context signal over the n_w
// probes where it appears (centring per token removes the token's own
// level, which no context explains); the statistic is T = sum_w s(w) c_w
// with the key's token signs, large when
// tokens of group +1 rise with h and those of group -1 fall, as the mark
// makes them. Under the null hypothesis (the suspect never learned from
// this key's marks) the signs s(w) are independent fair coins whatever the
// c_w (they come from a PRF domain of their own, and c_w do not depend on
// them), so T is a weighted Rademacher sum: P(T >= z sqrt(Q)) <=
// exp(-z^2/2) with Q = sum_w c_w^2 (Hoeffding 1963) and <= 3.18 (1 -
// Phi(z)) (Bentkus and Dzindzalieta, "A tight Gaussian bound for weighted
// sums of Rademacher random variables", Bernoulli 2015). PValue is the
// smaller bound: valid for any suspect, no normal approximation assumed.
func (ls *LogprobSample) Score(k *Key) LogprobResult {
	p := lpPRF(k)
	var scratch []byte
	r := LogprobResult{KeyID: k.ID(), Probes: ls.probes, Positions: ls.positions, Tokens: len(ls.tokens),
		Observations: len(ls.obs), Reference: ls.reference, PValue: 1, PValueNormal: 0.5, Method: MethodRademacher}
	h := make([]float64, len(ls.contexts))
	done := make([]bool, len(ls.contexts))
	type acc struct{ n, sh, sy, shy, syy, shh float64 }
	a := make([]acc, len(ls.tokens))
	for _, o := range ls.obs {
		if !done[o.probe] {
			c := &ls.contexts[o.probe]
			if c.Features != nil {
				h[o.probe] = vectorContext(&p, &scratch, c.Features)
			} else {
				h[o.probe] = textContext(&p, &scratch, []byte(c.Text))
			}
			done[o.probe] = true
		}
		hv := h[o.probe]
		t := &a[o.token]
		t.n++
		t.sh += hv
		t.sy += o.y
		t.shy += hv * o.y
		t.syy += o.y * o.y
		t.shh += hv * hv
	}
	// Each token contributes its values' correlation with h over the
	// probes where it appears, times the square root of their number (a
	// per-token z-score). Weighting by covariance instead would let the
	// few tokens that appear in most answers dominate the sum, and the
	// statistic can reach at most the square root of the effective number
	// of tokens; a mark that every token carries is best found with every
	// token counted alike. The weights use the values and h only, never
	// the token signs, so they cannot create a signal under the null.
	var tot, q float64
	for i, t := range a {
		if t.n < 3 {
			continue
		}
		sxx := t.shh - t.sh*t.sh/t.n
		syy := t.syy - t.sy*t.sy/t.n
		if !(sxx > 1e-12 && syy > 1e-12) {
			continue
		}
		c := (t.shy - t.sh*t.sy/t.n) / math.Sqrt(sxx*syy) * math.Sqrt(t.n)
		tot += signOf(p.domainSumString(&scratch, lpDomainToken, ls.tokens[i])) * c
		q += c * c
	}
	if !(q > 0) || math.IsInf(q, 0) || math.IsNaN(tot) {
		return r
	}
	r.Z = tot / math.Sqrt(q)
	r.PValueNormal = normalUpper(r.Z)
	r.PValue = rademacherUpper(r.Z)
	return r
}

// bentkusConstant is 1 / (4 (1 - Phi(sqrt 2))), the optimal constant of
// Bentkus and Dzindzalieta (2015).
const bentkusConstant = 3.1786

// rademacherUpper bounds P(S >= z) for S a weighted Rademacher sum with
// unit variance.
func rademacherUpper(z float64) float64 {
	if z <= 0 {
		return 1
	}
	return math.Min(1, math.Min(math.Exp(-z*z/2), bentkusConstant*normalUpper(z)))
}
