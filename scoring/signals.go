package scoring

import (
	"cmp"
	"math"
	"slices"
)

// Signals. Each has a strength in [0,1] computed from the session state and
// a weight; the score combines them (see combine). Automation signals say
// "a program is sending this" and are capped together below the degrade
// threshold: applications, agents, batch jobs and retrieval pipelines are
// programs too. Harvesting signals say "this program is collecting model
// outputs to train on".
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
	sigProbe
	sigCohort
	sigScripted
	sigCadence
	sigOutput
	sigGeneration
	numSignals
	firstHarvest = sigLogitBias
)

var signalNames = [numSignals]string{
	"near_duplicate", "volume", "single_turn", "regularity", "novelty",
	"logit_bias", "logprobs", "reasoning", "campaign", "cluster",
	"probe", "cohort", "scripted_chat", "cadence", "output", "generation",
}

// defaultWeights were tuned on the traffic generator (eval_test.go). A
// weight below the degrade threshold means the signal cannot flag on its
// own; one below the throttle threshold that it cannot throttle on its own.
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
	sigCluster:    0.25,
	sigProbe:      0.5,
	sigCohort:     0.7,
	sigScripted:   0.55,
	sigCadence:    0.5,
	sigOutput:     0.25,
	sigGeneration: 0.45,
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

// ramp maps x linearly from 0 at lo to 1 at hi.
func ramp(x, lo, hi float64) float64 { return clamp01((x - lo) / (hi - lo)) }

// signalParams are the engine constants the strengths depend on.
type signalParams struct {
	volumeH, burstH float64 // hours
	half            halfLives
	freshAge        int64 // nanoseconds: sessions younger than this are fresh
}

// view is what computeStrengths reads besides the session: the decayed
// counters at the evaluation time and the cross-account figures of the
// request.
type view struct {
	c      [numCounters]float32
	langs  int     // languages written in (current and previous epoch)
	cot    int     // reasoning-demand languages
	spread float64 // cluster spread reaching the session
	cohort float64 // burst strength of the session's cohort (0 when not fresh)
	now    int64
}

// computeStrengths derives the signal strengths from a session's counters.
// It is a pure function of the state, so the admin API can explain a score
// after the fact.
func computeStrengths(s *session, p *signalParams, v *view) strengths {
	c := &v.c
	n := float64(c[cN])
	var st strengths
	if n <= 0 {
		return st
	}
	text := float64(c[cText])

	// near_duplicate: how much of each newly written turn the session had
	// already sent (template sweeps ~0.9, templated harvesting 0.2-0.5,
	// people < 0.1). A tool loop re-sending its user turn is not counted.
	if c[cDupN] > 0 {
		avg := float64(c[cDup] / c[cDupN])
		st[sigNearDup] = ramp(avg, 0.15, 0.75) * conf(float64(c[cDupN]), 5)
	}

	// volume: request and token rates over the volume and burst windows,
	// corrected for the window not yet being full in a young session
	// (a decayed count of a steady rate r after T is r*H/ln2*(1-2^(-T/H))).
	age := math.Max(float64(s.last-s.first)/3.6e12, 1.0/60) // hours, at least a minute
	rate := func(count float32, h float64) float64 {
		warm := 1 - math.Exp2(-age/h)
		return float64(count) * math.Ln2 / (h * warm)
	}
	reqRate := math.Max(rate(c[vVol], p.volumeH), rate(c[bVol], p.burstH))
	tokRate := rate(c[vTok], p.volumeH)
	st[sigVolume] = math.Max(ramp(reqRate, 90, 450), ramp(tokRate, 50_000, 250_000)) * conf(n, 10)

	// single_turn: share of requests without conversation history; people
	// start conversations too, so only a share above 60% counts.
	st[sigSingleTurn] = ramp(float64(c[cSingle])/n, 0.6, 0.95) * conf(n, 10)

	// regularity: the spread of ln(inter-arrival) — a scheduler keeps it
	// below 0.3, Poisson arrivals give 1.28, people more.
	if c[cIaN] >= 2 {
		mean := float64(c[cIaS] / c[cIaN])
		sd := math.Sqrt(math.Max(float64(c[cIaQ]/c[cIaN])-mean*mean, 0))
		st[sigRegularity] = ramp(-sd, -1.0, -0.3) * conf(float64(c[cIaN]), 8)
	}

	// novelty: share of never-seen shingles, counted only once a session has
	// sent many requests within the content half-life: breadth at volume.
	if text > 0 {
		st[sigNovelty] = ramp(float64(c[cNovel])/text, 0.5, 0.9) * ramp(text, 20, 100)
	}

	// logit_bias: average strength, gaining confidence over a few requests.
	if c[cLbN] > 0 {
		st[sigLogitBias] = clamp01(float64(c[cLb])/n) * (0.5 + 0.5*conf(float64(c[cLbN]), 3))
	}

	// logprobs: average harvest intensity (top_logprobs, echo, max_tokens 1, n).
	st[sigLogprobs] = clamp01(float64(c[cLp])/n) * conf(n, 2)

	// reasoning: step-by-step demands, by share of the analysed turns or by
	// count (so mixing in other traffic does not hide a steady stream of
	// them), stronger with every extra language the demands are written in
	// (0.35 for one, full from four) and when a demand is translated around
	// content in another language. Google's threat report on distillation
	// of Gemini describes >100,000 prompts coercing reasoning traces, many
	// of them non-English (GTIG, AI Threat Tracker, February 2026). The
	// languages counted are the demands', not the prompts': over hundreds
	// of prompts the stopword vote picks up stray languages.
	if text > 0 && c[cCot] > 0 {
		langF := 0.35 + 0.65*ramp(float64(v.cot-1), 0, 3)
		mixed := float64(c[cCotMixed] / c[cCot])
		langF = math.Max(langF, 0.35+0.65*mixed)
		share := float64(c[cCot]) / text
		cot := math.Max(ramp(share, 0, 0.8)*conf(text, 3), ramp(float64(c[cCot]), 2, 12)*ramp(share, 0.03, 0.13))
		st[sigReasoning] = cot * langF
	}

	// campaign: requests carrying a template element (wrapper shingles, a
	// system prompt) that many accounts send and almost none of them
	// converse after, by share or by a steady count; and requests in a
	// published distillation format.
	if text > 0 {
		tmplShare := float64(c[cTmpl]) / text
		tm := math.Max(ramp(tmplShare, 0, 0.6)*conf(text, 1), ramp(float64(c[cTmpl]), 2, 10)*ramp(tmplShare, 0.05, 0.15))
		known := ramp(float64(c[cKnown])/text, 0.2, 0.7) * conf(text, 4)
		app := ramp(float64(c[cApp])/n, 0.3, 0.8) * conf(n, 1)
		st[sigCampaign] = math.Max(tm, math.Max(0.8*known, app))
	}

	st[sigCluster] = v.spread

	// probe: share of requests that repeat an earlier prompt of the session
	// except for a few tokens (a number, a word): queries walking a decision
	// boundary. PRADA flags an account whose successive queries sit at
	// abnormally small distances from its earlier ones (Juuti et al.,
	// "PRADA: Protecting against DNN Model Stealing Attacks", EuroS&P 2019);
	// SEAT counts pairs of near-identical queries per account (Zhang et al.,
	// "SEAT: Similarity Encoder by Adversarial Training for Detecting Model
	// Extraction Attack Queries", AISec 2021).
	if text > 0 {
		st[sigProbe] = ramp(float64(c[cProbe])/text, 0.2, 0.6) * ramp(float64(c[cProbe]), 1, 6)
	}

	// cohort: the session is one of a burst of fresh accounts that started
	// the same shape of request in the same hours, and its own requests are
	// single-turn and harvest-shaped (reasoning demands, shared templates,
	// distillation formats, logprobs).
	if v.cohort > 0 {
		shape := 0.0
		if text > 0 {
			shape = math.Max(float64(c[cCot])/text, math.Max(float64(c[cTmpl])/text, float64(c[cKnown])/text))
		}
		shape = math.Max(shape, float64(c[cLp])/n)
		st[sigCohort] = v.cohort * ramp(float64(c[cSingle])/n, 0.5, 0.9) * ramp(shape, 0.2, 0.6)
	}

	// scripted_chat: conversations opened at a rate no person keeps up,
	// each followed by follow-ups the session has sent word for word
	// before: dataset questions dressed as chat with canned follow-ups.
	if c[cFol] > 0 {
		convRate := rate(c[vConv], p.volumeH)
		rec := float64(c[cFolRec] / c[cFol])
		// At least three conversations: a young session's rate estimate
		// is a guess.
		st[sigScripted] = ramp(rec, 0.15, 0.45) * ramp(convRate, 2, 5) * ramp(float64(c[vConv]), 2, 4) * conf(float64(c[cFol]), 6)
	}

	// cadence: one conversation partner (follow-ups continue the previous
	// request's conversation, not many end users' interleaved) active in
	// nearly every hour of the last day: people sleep.
	if c[cFol] > 0 {
		hours := float64(s.hours.activeWithin(v.now, 24))
		seq := float64(c[cFolSeq] / c[cFol])
		st[sigCadence] = ramp(hours, 14, 20) * ramp(seq, 0.5, 0.8) * conf(float64(c[cFol]), 20)
	}

	// output: output tokens delivered per day (ResponseObserver): what a
	// student model is trained on. Agents and applications deliver a lot
	// too, so the weight keeps it below the degrade threshold on its own.
	if c[cOut] > 0 {
		perDay := float64(c[cOut]) * math.Ln2 / (p.half.content / 8.64e13) / rampWarm(age, p.half.content/3.6e12)
		st[sigOutput] = ramp(perDay, 300_000, 2_000_000)
	}

	// generation: a scheduler sending single-turn prompts that ask for
	// long, sampled completions: the shape of distillation data generation
	// (Self-Instruct and Alpaca sampled their training answers at
	// temperature 0.7-1 with budgets of hundreds of tokens; Wang et al.
	// 2023, Taori et al. 2023). Batch classification and evaluation
	// harnesses ask for a few deterministic tokens; people and
	// applications serving them do not keep a schedule.
	if c[cGen] > 0 {
		auto := math.Max(st[sigRegularity], st[sigVolume])
		st[sigGeneration] = ramp(float64(c[cSingle])/n, 0.8, 0.95) * auto * ramp(float64(c[cGen])/n, 0.3, 0.7)
	}

	for i := range st {
		st[i] = clamp01(st[i])
	}
	return st
}

// generationDemand is how much one request asks for a long, sampled
// completion: the requested budget (unset counts as half) times the
// sampling temperature (unset is the API default of 1).
// https://platform.openai.com/docs/api-reference/chat/create#chat-create-temperature
func generationDemand(r *Request) float64 {
	budget := 0.5
	if r.MaxTokens > 0 {
		budget = ramp(float64(r.MaxTokens), 200, 1000)
	}
	temp := 1.0
	if r.Temperature != nil {
		temp = ramp(*r.Temperature, 0.25, 0.7)
	}
	return budget * temp
}

// rampWarm is the filled part of a decay window of h hours after age hours.
func rampWarm(age, h float64) float64 { return math.Max(1-math.Exp2(-age/h), 1e-3) }

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

// harvestIntensity scores one request's logprob harvesting. Confidence
// displays ask for two or three alternatives; soft-label harvesting asks
// for five or more on every request (the most OpenAI returns is 20), so the
// intensity stays small up to three and is substantial from five. Prompt
// logprobs through echo (the full distribution over the prompt), a single
// token under a wide view of alternatives (what Carlini et al. 2024 need),
// and several samples per prompt add to it.
// https://platform.openai.com/docs/api-reference/chat/create
func harvestIntensity(r *Request) float64 {
	x := 0.0
	if r.Logprobs || r.TopLogprobs > 0 {
		k := math.Min(float64(r.TopLogprobs), 20)
		switch {
		case k <= 3:
			x += 0.02 * k
		default:
			x += 0.55 + 0.45*(k-5)/15
		}
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

// hasHistory: the conversation carries an earlier exchange (an assistant
// turn, or several user turns). When the body did not say (no messages
// array), Messages > 2 stands in, as before the turn counts existed.
func hasHistory(r *Request) bool {
	if r.UserTurns > 0 || r.AssistantTurns > 0 || r.ToolTurns > 0 {
		return r.AssistantTurns > 0 || r.UserTurns > 1
	}
	return r.Messages > 2
}

// isContinuation: the newest user turn is re-sent with tool calls and tool
// results after it, an agent's loop rather than a new question.
func isContinuation(r *Request) bool { return r.AfterUser > 0 && r.ToolTurns > 0 }
