package scoring

import (
	"cmp"
	"math"
	"math/bits"
	"slices"
)

// Signals. Each has a strength in [0,1] computed from the session state and
// a weight; the score combines them (see combine). Automation signals say
// "a program is sending this", harvesting signals say "this program is
// collecting model outputs".
const (
	// automation
	sigNearDup = iota
	sigVolume
	sigSingleTurn
	sigRegularity
	sigNovelty
	// harvesting
	sigLogitBias
	sigLogprobs
	sigReasoning
	sigCampaign
	sigCluster
	numSignals
	firstHarvest = sigLogitBias
)

var signalNames = [numSignals]string{
	"near_duplicate", "volume", "single_turn", "regularity", "novelty",
	"logit_bias", "logprobs", "reasoning", "campaign", "cluster",
}

// defaultWeights were tuned on the traffic generator (eval_test.go).
var defaultWeights = [numSignals]float64{
	sigNearDup:    0.5,
	sigVolume:     0.6,
	sigSingleTurn: 0.4,
	sigRegularity: 0.5,
	sigNovelty:    0.3,
	sigLogitBias:  0.95,
	sigLogprobs:   0.6,
	sigReasoning:  0.7,
	sigCampaign:   0.7,
	sigCluster:    0.6,
}

// fireLevel is the strength at which a signal counts as fired (metric).
const fireLevel = 0.5

// SignalNames lists the signal names, automation first.
func SignalNames() []string { return append([]string(nil), signalNames[:]...) }

func signalIndex(name string) int {
	for i, n := range signalNames {
		if n == name {
			return i
		}
	}
	return -1
}

// strengths are the per-signal strengths of one evaluation.
type strengths [numSignals]float64

// conf is the confidence that n observations show a stable share: 0 for
// none, 1/2 at k, approaching 1.
func conf(n, k float64) float64 {
	if n <= 0 {
		return 0
	}
	return n / (n + k)
}

// signalParams are the engine constants the strengths depend on.
type signalParams struct {
	volumeH, burstH float64 // hours
}

// computeStrengths derives the signal strengths from a session's counters.
// It is a pure function of the state so the admin API can explain a score
// after the fact. now and first are request-time nanoseconds.
func computeStrengths(s *session, p *signalParams, langs int, cluster float64) strengths {
	c := &s.c
	n := float64(c.n)
	var st strengths

	// near_duplicate: how much of each prompt the session had already sent
	// (template sweeps ~0.9, templated harvesting 0.2-0.5, people < 0.1).
	if c.dupN > 0 {
		avg := float64(c.dup / c.dupN)
		st[sigNearDup] = clamp01((avg-0.15)/0.6) * conf(float64(c.dupN), 5)
	}

	// volume: request and token rates over the volume and burst windows,
	// corrected for the window not yet being full in a young session
	// (a decayed count of a steady rate r after T is r*H/ln2*(1-2^(-T/H))).
	age := math.Max(float64(s.last-s.first)/3.6e12, 1.0/60) // hours, at least a minute
	rate := func(count float32, h float64) float64 {
		warm := 1 - math.Exp2(-age/h)
		return float64(count) * math.Ln2 / (h * warm)
	}
	reqRate := math.Max(rate(c.volLong, p.volumeH), rate(c.volShort, p.burstH))
	tokRate := rate(c.tokLong, p.volumeH)
	st[sigVolume] = math.Max(clamp01((reqRate-90)/360), clamp01((tokRate-50_000)/200_000)) * conf(n, 10)

	// single_turn: share of requests without conversation history; people
	// start conversations too, so only a share above 60% counts.
	st[sigSingleTurn] = clamp01((float64(c.single/c.n)-0.6)/0.35) * conf(n, 10)

	// regularity: the spread of ln(inter-arrival) — a scheduler keeps it
	// below 0.3, Poisson arrivals give 1.28, people more.
	if c.iaN >= 2 {
		mean := float64(c.iaS / c.iaN)
		sd := math.Sqrt(math.Max(float64(c.iaQ/c.iaN)-mean*mean, 0))
		st[sigRegularity] = clamp01((1.0-sd)/0.7) * conf(float64(c.iaN), 8)
	}

	// novelty: share of never-seen shingles, counted only once a session has
	// sent many requests within the content half-life: breadth at volume.
	st[sigNovelty] = clamp01((float64(c.novel/c.n)-0.5)/0.4) * clamp01((n-20)/80)

	// logit_bias: average strength, gaining confidence over a few requests.
	if c.lbN > 0 {
		st[sigLogitBias] = clamp01(float64(c.lb/c.n)) * (0.5 + 0.5*conf(float64(c.lbN), 3))
	}

	// logprobs: average harvest intensity (top_logprobs, echo, max_tokens 1, n).
	st[sigLogprobs] = clamp01(float64(c.lp/c.n)) * conf(n, 2)

	// reasoning: step-by-step demands, by share of the session's requests
	// or by count (so mixing in other traffic does not hide a steady stream
	// of them), stronger with every extra language the session writes in
	// (0.35 for one, full from four).
	langF := 0.35 + 0.65*clamp01(float64(langs-1)/3)
	cotShare := float64(c.cot / c.n)
	cot := math.Max(clamp01(cotShare/0.8)*conf(n, 3), clamp01(float64(c.cot-2)/10)*clamp01((cotShare-0.03)/0.1))
	st[sigReasoning] = cot * langF

	// campaign: requests reusing a template that many sessions reuse, by
	// share, or by count when they are a steady part of the session (not
	// the odd templated question in a large, varied workload).
	tmplShare := float64(c.tmpl / c.n)
	st[sigCampaign] = math.Max(clamp01(tmplShare/0.6)*conf(n, 1), clamp01(float64(c.tmpl-2)/8)*clamp01((tmplShare-0.05)/0.1))

	st[sigCluster] = cluster
	for i := range st {
		st[i] = clamp01(st[i])
	}
	return st
}

// combine turns strengths into a score with per-signal contributions.
//
// Within each group signals combine as a noisy-OR: 1 - prod(1 - w*s). The
// automation group is scaled by automationCap, then the groups combine as a
// noisy-OR too. The score is monotone in every strength. Contributions
// split the score in proportion to each signal's -ln(1 - w*s) (scaled for
// the cap), so they add up to the score.
func combine(st *strengths, w *[numSignals]float64, automationCap float64, skip int) (score float64, contrib [numSignals]float64) {
	var l [numSignals]float64
	var la, lh float64
	for i := 0; i < numSignals; i++ {
		if i == skip {
			continue
		}
		x := math.Min(w[i]*st[i], 0.999999)
		l[i] = -math.Log1p(-x)
		if i < firstHarvest {
			la += l[i]
		} else {
			lh += l[i]
		}
	}
	a := automationCap * (1 - math.Exp(-la))
	h := 1 - math.Exp(-lh)
	score = 1 - (1-a)*(1-h)
	// Attribute: the automation group's log-mass is -ln(1-a), split by l[i].
	laCapped := -math.Log1p(-math.Min(a, 0.999999))
	total := laCapped + lh
	if total <= 0 {
		return score, contrib
	}
	for i := 0; i < numSignals; i++ {
		li := l[i]
		if i < firstHarvest {
			if la > 0 {
				li = laCapped * l[i] / la
			} else {
				li = 0
			}
		}
		contrib[i] = score * li / total
	}
	return score, contrib
}

// explain returns the signals with a non-zero contribution, largest first.
func explain(st *strengths, contrib *[numSignals]float64) []Signal {
	out := make([]Signal, 0, numSignals)
	for i := 0; i < numSignals; i++ {
		if contrib[i] > 0.0005 {
			out = append(out, Signal{Name: signalNames[i], Value: round3(st[i]), Contribution: round3(contrib[i])})
		}
	}
	slices.SortStableFunc(out, func(a, b Signal) int { return cmp.Compare(b.Contribution, a.Contribution) })
	return out
}

// harvestIntensity scores one request's logprob harvesting: the share of
// the 20 alternatives OpenAI returns at most, prompt logprobs through echo
// (the full distribution over the prompt), a single token under a wide view
// of alternatives (what Carlini et al. 2024 need), several samples per
// prompt. https://platform.openai.com/docs/api-reference/chat/create
func harvestIntensity(r *Request) float64 {
	x := 0.0
	if r.Logprobs || r.TopLogprobs > 0 {
		x += math.Min(float64(r.TopLogprobs), 20) / 20
		if r.Echo {
			x += 0.5
		}
		if r.MaxTokens == 1 && r.TopLogprobs >= 5 {
			x += 0.25
		}
	}
	if r.N > 1 {
		x += 0.15 * clamp01(float64(r.N-1)/7)
	}
	return clamp01(x)
}

// logitBiasStrength grows with the number of biased tokens (log scale, full
// at 64): a handful constrains a classifier's labels, hundreds sweep the
// vocabulary. With logprobs the bias recovers logits directly (Carlini et
// al. 2024); without, it still leaks them by binary search.
func logitBiasStrength(r *Request) float64 {
	if r.LogitBiasSize <= 0 {
		return 0
	}
	s := clamp01(math.Log2(1+float64(r.LogitBiasSize)) / math.Log2(65))
	if !(r.Logprobs || r.TopLogprobs > 0) {
		s *= 0.6
	}
	return s
}

// isSingleTurn: no assistant turn in the conversation. Messages counts
// system messages too, so [system, user] is still single-turn.
func isSingleTurn(r *Request) bool { return r.Messages <= 2 }

func popcount(x uint32) int { return bits.OnesCount32(x) }
