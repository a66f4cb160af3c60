package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/extproc/envoytest"
	"github.com/distillguard/distillguard/internal/traffic"
	"github.com/distillguard/distillguard/scoring"
)

// The honest-user cost: the labelled production-like traffic of
// internal/traffic (every family, attacks included, so that clusters,
// cohorts and templates are what they would be) replayed through the same
// rig twice, with standing on (the configuration measured) and off (the
// server as it was before probation), and every chat answer that asked
// for logprobs compared with the raw model's answer to the request as the
// client sent it.

// HonestParams size the honest-user measurement.
type HonestParams struct {
	// Scale multiplies the generated accounts (traffic.Options.Scale); 0
	// skips the measurement.
	Scale float64
}

// promptModel is the honest traffic's model: next-token logits drawn from
// a generator keyed by the prompt, so answers are a deterministic function
// of what reaches the upstream and comparable with the raw answer.
type promptModel struct {
	tokVocab
	seed uint64
}

func (m promptModel) Logits(prompt string, dst []float64) error {
	h := fnv.New64a()
	h.Write([]byte(prompt))
	r := newRand(m.seed^h.Sum64(), 6)
	for i := range dst {
		dst[i] = 2.5 * r.NormFloat64()
	}
	return nil
}

// honestReq is one replayed request's outcome in the two runs.
type honestReq struct {
	fam, account   string
	attack         bool
	t              time.Time
	top            int // top_logprobs asked (-1: no logprobs)
	on, off        econOutcome
	onResp, offRsp Response
	raw            Response
	compared       bool // a chat answer of the simulated model, parsed in all three
	bodiesDiffer   bool // the answers with standing on and off differ
}

type honestResult struct {
	requests int
	scale    float64
	stand    scoring.Standing
	fams     []honestFamily
}

// honestFamily sums up one benign family.
type honestFamily struct {
	name                                 string
	accounts                             int
	requests, asked                      int // requests, of which asked for logprobs
	probation, askedProbation            int // requests answered in probation
	earned, lost                         int // accounts that earned standing; lost it afterwards
	toStanding                           []int
	daysToStanding                       []float64
	estAsked, estCompared, estDiff       int // established (standing) requests asking logprobs; compared; differing from standing off
	estDelta                             float64
	estDeltaN                            int
	estAltsKept, estAltsAsked            int
	newAltsKept, newAltsAsked, newLPKept int
	refusedOn, refusedOff                int
	flagged                              int // requests degraded or worse (standing on)
}

// runHonest replays the traffic with standing on and off.
func runHonest(ctx context.Context, pl *pool, seed uint64, p EconomicsParams, _ *coverSource, prog *Task) (*honestResult, error) {
	if p.Honest.Scale <= 0 {
		return nil, nil
	}
	reqs, err := traffic.Generate(traffic.Options{CorpusDir: p.CorpusDir, Seed: seed, Scale: p.Honest.Scale})
	if err != nil {
		return nil, err
	}
	prog.Grow(2 * len(reqs) / 1000)
	on := *p.Config
	on.Scoring.Secret = labSecret(seed, 0)
	off := on
	off.Scoring.Standing.Enabled = false
	out := make([]honestReq, len(reqs))
	replay := func(cfg *config.Config, standing bool) error {
		m := promptModel{tokVocab: newTokVocab(32), seed: seed}
		rig, err := startRig(cfg, false, m, reqs[0].Time)
		if err != nil {
			return err
		}
		defer rig.close()
		rig.up.other = &envoytest.Upstream{Seed: seed}
		for i := range reqs {
			if i%256 == 0 && ctx.Err() != nil {
				return ctx.Err()
			}
			r := &reqs[i]
			h := http.Header{}
			for k, v := range r.Header {
				h.Set(k, v)
			}
			o, err := rig.do(ctx, exchange{at: r.Time, id: identity{addr: r.SourceAddress}, header: h, path: r.Path, body: r.Body, keepBody: true})
			if err != nil {
				return fmt.Errorf("request %d (%s): %w", r.Seq, r.Account, err)
			}
			if standing {
				out[i].on = o
			} else {
				out[i].off = o
			}
			if i%1000 == 999 {
				prog.Add(1)
			}
		}
		return nil
	}
	if err := pl.all(ctx, func() error { return replay(&on, true) }, func() error { return replay(&off, false) }); err != nil {
		return nil, err
	}
	raw := NewAPI(promptModel{tokVocab: newTokVocab(32), seed: seed}, Policy{}, APIOptions{})
	var buf []byte
	for i := range reqs {
		r := &reqs[i]
		h := &out[i]
		h.fam, h.account, h.attack, h.t, h.top = r.Family, r.Account, r.Attack, r.Time, -1
		var w wireRequest
		if r.Path != traffic.PathChat || json.Unmarshal(r.Body, &w) != nil {
			continue
		}
		if w.Logprobs {
			h.top = 0
			if w.TopLogprobs != nil {
				h.top = *w.TopLogprobs
			}
		}
		h.bodiesDiffer = h.on.answered && h.off.answered && string(h.on.body) != string(h.off.body)
		if h.top < 0 {
			continue
		}
		var err error
		if buf, err = raw.serve(buf[:0], r.Body); err != nil {
			continue // a shape the simulated server does not read: the mock answered
		}
		parse := func(b []byte) (Response, error) {
			if w.Stream {
				return parseSSE(b)
			}
			return parseCompletion(b)
		}
		var e1, e2, e3 error
		h.raw, e1 = parse(buf)
		if h.on.answered {
			h.onResp, e2 = parse(h.on.body)
		}
		if h.off.answered {
			h.offRsp, e3 = parse(h.off.body)
		}
		h.compared = e1 == nil && e2 == nil && e3 == nil && h.on.answered
	}
	return summariseHonest(out, p), nil
}

func summariseHonest(reqs []honestReq, p EconomicsParams) *honestResult {
	res := &honestResult{requests: len(reqs), scale: p.Honest.Scale, stand: p.Config.Scoring.Standing}
	type acct struct {
		n                int
		first            time.Time
		earned, lost     bool
		earnedAt         int
		earnedAfterHours float64
	}
	byFam := map[string]*honestFamily{}
	accts := map[string]*acct{}
	var order []string
	for i := range reqs {
		h := &reqs[i]
		if h.attack {
			continue
		}
		f := byFam[h.fam]
		if f == nil {
			f = &honestFamily{name: h.fam}
			byFam[h.fam] = f
			order = append(order, h.fam)
		}
		a := accts[h.account]
		if a == nil {
			a = &acct{first: h.t}
			accts[h.account] = a
			f.accounts++
		}
		a.n++
		f.requests++
		asked := h.top >= 0
		if asked {
			f.asked++
		}
		refused := func(o econOutcome) bool {
			return o.status == http.StatusTooManyRequests || o.status == http.StatusForbidden
		}
		if refused(h.on) {
			f.refusedOn++
		}
		if refused(h.off) {
			f.refusedOff++
		}
		if h.on.verdict >= scoring.Degrade {
			f.flagged++
		}
		standing := h.on.verdict == scoring.Allow && !h.on.probation && !refused(h.on)
		switch {
		case h.on.probation:
			f.probation++
			if asked {
				f.askedProbation++
			}
			if a.earned {
				a.lost = true
			}
			if asked && h.compared {
				f.newAltsAsked += len(h.raw.Top)
				f.newAltsKept += len(h.onResp.Top)
				if h.onResp.HasLogprob {
					f.newLPKept++
				}
			}
		case standing:
			if !a.earned {
				a.earned, a.earnedAt = true, a.n
				a.earnedAfterHours = h.t.Sub(a.first).Hours()
			}
			if asked {
				f.estAsked++
			}
			if asked && h.compared {
				f.estCompared++
				if h.bodiesDiffer {
					f.estDiff++
				}
				if h.onResp.HasLogprob && h.raw.HasLogprob {
					f.estDelta += math.Abs(h.onResp.Logprob - h.raw.Logprob)
					f.estDeltaN++
				}
				f.estAltsAsked += len(h.raw.Top)
				f.estAltsKept += len(h.onResp.Top)
			}
		}
	}
	// Account outcomes, in a fixed order.
	names := make([]string, 0, len(accts))
	for n := range accts {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		a := accts[n]
		fam := n[:strings.LastIndexByte(n, '/')]
		f := byFam[fam]
		if f == nil {
			continue
		}
		if a.earned {
			f.earned++
			f.toStanding = append(f.toStanding, a.earnedAt)
			f.daysToStanding = append(f.daysToStanding, a.earnedAfterHours/24)
		}
		if a.lost {
			f.lost++
		}
	}
	for _, fam := range traffic.Families() {
		if f := byFam[fam.Name]; f != nil {
			res.fams = append(res.fams, *f)
		}
	}
	_ = order
	return res
}

func (h *honestResult) tables() []Table {
	if h == nil {
		return nil
	}
	t1 := Table{
		Title: "Honest-user cost: brand-new users (probation)",
		Header: []string{"family", "accounts", "requests", "asked for logprobs", "requests in probation", "of which asked for logprobs",
			"logprobs returned in probation", "alternatives returned in probation", "earned standing (accounts)",
			"requests to standing (median)", "days to standing (median)", "lost standing again (accounts)"},
		Notes: []string{fmt.Sprintf("Production-like traffic of internal/traffic (scale %g, %d requests, attack families included) replayed "+
			"through the rig under the first secret. Standing: %d clean requests over %s. An account earns standing at its first "+
			"request answered at allow outside probation. Requests in probation keep their text; what they lose is logprobs, "+
			"alternatives, n > 1 and logit_bias.", h.scale, h.requests, h.stand.Requests, h.stand.Age)},
	}
	t2 := Table{
		Title: "Honest-user cost: established users (standing earned)",
		Header: []string{"family", "requests with standing that asked for logprobs", "compared with the raw model", "answers different from the server without probation",
			"mean |Δ logprob| vs raw (chosen)", "alternatives kept vs raw", "refused (standing on / off)", "requests degraded or worse"},
		Notes: []string{"\"the server without probation\" is the same configuration with scoring.standing.enabled false, replayed on the " +
			"same traffic: for an established user the two answer byte for byte the same. The |Δ logprob| and alternatives are " +
			"the allow tier's own cost (rounding to 2 decimals, at most 5 alternatives), unchanged by probation."},
	}
	for _, f := range h.fams {
		lpKept, altKept := "—", "—"
		if n := f.askedProbation; n > 0 && f.newAltsAsked+f.newLPKept >= 0 {
			lpKept = fmt.Sprintf("%d of %d", f.newLPKept, n)
			altKept = fmt.Sprintf("%d of %d", f.newAltsKept, f.newAltsAsked)
		}
		t1.Rows = append(t1.Rows, []string{f.name, itoa(f.accounts), itoa(f.requests), itoa(f.asked), itoa(f.probation), itoa(f.askedProbation),
			lpKept, altKept, fmt.Sprintf("%d of %d", f.earned, f.accounts), fmtCount(quantileInt(f.toStanding, 0.5)),
			fmtMedianDays(f.daysToStanding), itoa(f.lost)})
		delta := "—"
		if f.estDeltaN > 0 {
			delta = fmtSci(f.estDelta / float64(f.estDeltaN))
		}
		alts := "—"
		if f.estAltsAsked > 0 {
			alts = fmtPct(float64(f.estAltsKept) / float64(f.estAltsAsked))
		}
		t2.Rows = append(t2.Rows, []string{f.name, itoa(f.estAsked), itoa(f.estCompared), itoa(f.estDiff), delta, alts,
			fmt.Sprintf("%d / %d", f.refusedOn, f.refusedOff), itoa(f.flagged)})
	}
	return []Table{t1, t2}
}

func fmtMedianDays(d []float64) string {
	if len(d) == 0 {
		return "—"
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return fmt.Sprintf("%.1f", s[(len(s)-1)/2])
}
