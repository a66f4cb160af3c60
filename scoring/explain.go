package scoring

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// explainText says in words why the session scores what it does: the
// signals that contribute most, each with the evidence behind it. Called
// with the stripe lock held (it reads the session).
func (e *Engine) explainText(s *session, st *strengths, contrib *[numSignals]float64, tr *trusted) string {
	sc := s.c.scalesAt(s.last, &e.params.half)
	c := s.c.decayed(&sc)
	n := float64(c[cN])
	text := math.Max(float64(c[cText]), 1e-9)
	type part struct {
		w float64
		s string
	}
	var parts []part
	pct := func(x float64) int { return int(math.Round(100 * clamp01(x))) }
	for i := 0; i < numSignals; i++ {
		if contrib[i] < 0.01 {
			continue
		}
		var d string
		switch i {
		case sigNearDup:
			d = fmt.Sprintf("near_duplicate: on average %d%% of each new prompt was sent before", pct(float64(c[cDup]/max(c[cDupN], 1e-9))))
		case sigVolume:
			d = fmt.Sprintf("volume: %.0f requests in the last hour (decayed)", c[vVol])
		case sigSingleTurn:
			d = fmt.Sprintf("single_turn: %d%% of requests carry no conversation", pct(float64(c[cSingle])/n))
		case sigRegularity:
			d = "regularity: requests arrive on a schedule"
		case sigNovelty:
			d = fmt.Sprintf("novelty: %d%% of prompt text never seen before, at volume", pct(float64(c[cNovel])/text))
		case sigLogitBias:
			d = fmt.Sprintf("logit_bias: %.0f requests with logit_bias", c[cLbN])
		case sigLogprobs:
			d = fmt.Sprintf("logprobs: asks for up to %d alternatives per token (intensity %.2f per request)", s.ev.maxTop, float64(c[cLp])/n)
		case sigReasoning:
			d = fmt.Sprintf("reasoning: %d%% of prompts demand step-by-step reasoning, in %s", pct(float64(c[cCot])/text),
				strings.Join(langList(s.cotLangs|s.cotPrev), ", "))
			if c[cCotMixed] > 0 {
				d += fmt.Sprintf(" (%d%% translated around content in another language)", pct(float64(c[cCotMixed]/c[cCot])))
			}
		case sigCampaign:
			if s.ev.tmplSessions > 0 {
				what := "template"
				if s.ev.appShared {
					what = "system prompt / tools"
				}
				d = fmt.Sprintf("campaign: %s shared by %.0f accounts in the last %s, %d%% of which ever held a conversation",
					what, s.ev.tmplSessions, e.cfg.CampaignWindow, pct(float64(s.ev.tmplConv/max(s.ev.tmplSessions, 1e-9))))
			} else {
				d = fmt.Sprintf("campaign: %d%% of prompts in a published distillation format", pct(float64(c[cKnown])/text))
			}
		case sigCluster:
			d = fmt.Sprintf("cluster: linked by network block or client fingerprint to accounts flagged on their own evidence (spread %.2f)", s.spread)
		case sigProbe:
			d = fmt.Sprintf("probe: %.0f prompts are an earlier one with a few tokens changed", c[cProbe])
		case sigCohort:
			d = fmt.Sprintf("cohort: one of %.0f accounts created within %s that started the same single-turn requests (%.1f expected from the usual rate)",
				s.ev.cohortFresh, freshAge, s.ev.cohortBase)
			if l := langList(s.ev.cohortLangs); len(l) > 1 {
				d += ", reasoning demands across the cohort in " + strings.Join(l, ", ")
			}
		case sigScripted:
			d = fmt.Sprintf("scripted_chat: %.1f conversations opened in the last hour, %d%% of follow-ups sent word for word before",
				c[vConv], pct(float64(c[cFolRec]/max(c[cFol], 1e-9))))
		case sigCadence:
			d = fmt.Sprintf("cadence: one conversation partner active in %d of the last 24 hours", s.hours.activeWithin(s.last, 24))
		case sigGeneration:
			d = fmt.Sprintf("generation: single-turn prompts on a schedule asking for long sampled completions (demand %.2f per request)", float64(c[cGen])/n)
		case sigOutput:
			d = fmt.Sprintf("output: %.0f output tokens delivered (decayed over %s)", c[cOut], time.Duration(e.params.half.content))
		}
		parts = append(parts, part{contrib[i], d})
	}
	// Largest contribution first, at most four.
	for i := 1; i < len(parts); i++ {
		for j := i; j > 0 && parts[j].w > parts[j-1].w; j-- {
			parts[j], parts[j-1] = parts[j-1], parts[j]
		}
	}
	if len(parts) > 4 {
		parts = parts[:4]
	}
	out := make([]string, 0, len(parts)+1)
	for _, p := range parts {
		out = append(out, p.s)
	}
	if tr != nil {
		switch {
		case tr.allowAlways:
			out = append(out, "trusted identity "+tr.name+": allowed always")
		case tr.thresholds != nil:
			out = append(out, fmt.Sprintf("trusted identity %s: thresholds %g/%g/%g", tr.name, tr.thresholds.Degrade, tr.thresholds.Throttle, tr.thresholds.Block))
		}
	}
	if len(out) == 0 {
		return "no signal contributes"
	}
	return strings.Join(out, "; ")
}

// ObserveResponse folds what a response delivered into its session: the
// output tokens (reasoning included) add to the session's forward-decayed
// output counter, which the output signal turns into tokens per day. An
// unknown session (expired, evicted, or never scored) is ignored. It never
// blocks on anything but the session's stripe lock.
func (e *Engine) ObserveResponse(session string, u Usage) {
	if e.closed.Load() || u.CompletionTokens <= 0 {
		return
	}
	id, err := parseSessionID(session)
	if err != nil {
		e.m.badInput(badNoIdentity)
		return
	}
	s, ok := e.cached(session)
	if !ok {
		return
	}
	t := u.Time.UnixNano()
	if u.Time.IsZero() {
		t = e.clock().UnixNano()
	}
	st := &e.stripes[id[0]]
	st.Lock()
	defer st.Unlock()
	if s.requests == 0 {
		return
	}
	// The response of a request belongs to the request's time: a response
	// observed before the session's last request is counted at it.
	t = max(t, s.last)
	s.c.rebase(t, &e.params.half)
	w := s.c.scalesAt(t, &e.params.half)
	s.c.add(cOut, float32(min(u.CompletionTokens, 1<<24)), &w)
	if e.rep != nil {
		e.rep.markDirty(s)
	}
}
