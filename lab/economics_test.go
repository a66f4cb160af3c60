package lab

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/internal/corpus/corpustest"
	"github.com/distillguard/distillguard/internal/traffic"
	"github.com/distillguard/distillguard/scoring"
)

func TestParseNumbers(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []float64
	}{
		{"Classify the record: 1.5 -2 3e-05", []float64{1.5, -2, 3e-05}},
		{"Record -> 0.25, -1.75; 4. Yes or no?", []float64{0.25, -1.75, 4}},
		{"Here are the measurements .5 | +2 | -0.125E+2. Answer", []float64{0.5, 2, -12.5}},
		{"no numbers - at all.", nil},
		{"trailing sign -", nil},
	} {
		got, _ := parseNumbers(tc.in, len(tc.want))
		if len(got) != len(tc.want) {
			t.Errorf("%q: %v, want %v", tc.in, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%q: %v, want %v", tc.in, got, tc.want)
			}
		}
	}
	// Every wording and number format of the harness round-trips exactly.
	x := []float64{-1.2345678901234, 0.5, 3e-7, 42}
	for _, heldOut := range []bool{false, true} {
		for wi, w := range recordWrappers(heldOut) {
			for style := 0; style < 4; style++ {
				p := strings.Replace(w, "%s", formatNumbers(x, style), 1)
				got, ok := parseNumbers(p, len(x))
				if !ok {
					t.Fatalf("wrapper %d style %d: %q read as %v", wi, style, p, got)
				}
				for i := range x {
					if got[i] != x[i] {
						t.Fatalf("wrapper %d style %d: %v, want %v", wi, style, got, x)
					}
				}
			}
		}
	}
}

func TestCheckpointGrid(t *testing.T) {
	got := checkpointGrid(21, 21*8)
	want := []int{21, 32, 42, 63, 84, 126, 168}
	if len(got) != len(want) {
		t.Fatalf("grid %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("grid %v, want %v", got, want)
		}
	}
}

func TestFitAdaptive(t *testing.T) {
	d := 6
	m := newLogistic(3, d)
	r := newRand(3, 9)
	xs := gaussians(r, 60, d)
	held := gaussians(r, 2000, d)
	obs := make([]tramerObs, len(xs))
	two := make([]bool, len(xs))
	for i, x := range xs {
		z := m.margin(x)
		obs[i] = tramerObs{label: math.Copysign(1, z), z: z, finite: true}
		two[i] = true
	}
	// Exact margins: the equations win and the model is recovered.
	if sc := scoreTramer(m, fitAdaptive(xs[:d+1], obs[:d+1], two[:d+1], d), held); sc.paramErr > 1e-9 {
		t.Fatalf("exact margins: parameter error %g", sc.paramErr)
	}
	// Labels only: the label fit, well short of exact.
	for i := range obs {
		obs[i].finite, two[i] = false, false
	}
	sc := scoreTramer(m, fitAdaptive(xs, obs, two, d), held)
	if sc.agreement < 0.8 || sc.agreement > 0.995 || sc.paramErr < 1e-3 {
		t.Fatalf("labels only: agreement %.4f, parameter error %g", sc.agreement, sc.paramErr)
	}
}

// TestRigHonoursWhatReachesTheUpstream: through the whole server, a new
// identity's request loses its logprobs on the way in (the upstream is
// asked for none) and an established one's keeps them, capped; through
// the raw rig everything reaches the model.
func TestRigHonoursWhatReachesTheUpstream(t *testing.T) {
	ctx := context.Background()
	start := traffic.DefaultStart()
	cfg := *config.Default()
	cfg.Scoring.Standing.Requests, cfg.Scoring.Standing.Age = 3, time.Second
	m := newHiddenModel(5, 8, 32)
	q := Query{Prompt: "Continue the story, part 7", TopLogprobs: 10}
	for _, tc := range []struct {
		name      string
		raw       bool
		asks      int // requests the identity sends before the one checked
		top       int // top_logprobs that reach the upstream (-1: none)
		alts      int // alternatives the client gets
		probation bool
	}{
		{"raw API", true, 0, 10, 10, false},
		{"new identity", false, 0, -1, 0, true},
		{"established identity", false, 5, 5, 5, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rig, err := startRig(&cfg, tc.raw, m, start)
			if err != nil {
				t.Fatal(err)
			}
			defer rig.close()
			id := identity{token: "sk-rig-" + tc.name, addr: "198.51.100.20:4444", ua: "OpenAI/Python 1.51.0"}
			at := start
			for i := 0; i < tc.asks; i++ {
				at = at.Add(time.Minute)
				if _, err := rig.do(ctx, exchange{at: at, id: id, body: appendRequest(nil, Query{Prompt: chatLike(i)}, false)}); err != nil {
					t.Fatal(err)
				}
			}
			out, err := rig.do(ctx, exchange{at: at.Add(time.Minute), id: id, body: appendRequest(nil, q, true), stream: true})
			if err != nil {
				t.Fatal(err)
			}
			if !out.answered || out.upstreamTop != tc.top || len(out.resp.Top) != tc.alts || out.probation != tc.probation {
				t.Fatalf("answered %v, upstream top_logprobs %d, alternatives %d, probation %v; want top %d, alternatives %d, probation %v",
					out.answered, out.upstreamTop, len(out.resp.Top), out.probation, tc.top, tc.alts, tc.probation)
			}
			if !tc.raw && out.verdict != scoring.Allow {
				t.Fatalf("verdict %v", out.verdict)
			}
		})
	}
}

func chatLike(i int) string {
	return []string{"What should I cook tonight with leeks?", "Tell me about the tides in Brittany", "Any tips for a first marathon?",
		"Why is the sea salty?", "Suggest a board game for four", "How do I descale a kettle?"}[i%6]
}

// TestEconomicsSmall runs the harness at a small scale: the raw attack
// costs d+1 queries; identities that rotate every request stay in
// probation, where their records with logprobs are refused.
func TestEconomicsSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the end-to-end harness")
	}
	su := DefaultSetups(0.1)[0]
	su.TramerDim, su.TramerBudgetX = 6, 12
	var strategies []Strategy
	for _, s := range Strategies() {
		if s.Name == "one account" || s.Name == "rotate every 1" || s.Name == "rotate every 3 + paraphrase" {
			strategies = append(strategies, s)
		}
	}
	p := EconomicsParams{Secrets: 1, Strategies: strategies, Attacks: []string{AttackTramer}, Setups: []EconSetup{su}}
	sec, err := RunEconomics(context.Background(), &pool{sem: make(chan struct{}, 2)}, 7, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	rep := &Report{Sections: []Section{sec}}
	head := findTable(t, rep, EconomicsTableTitle)
	for _, s := range strategies {
		if got := cellOf(t, head, s.Name, AttackTramer); !strings.HasPrefix(got, "never") {
			t.Errorf("%s: %q, want never within the budget", s.Name, got)
		}
	}
	if !strings.Contains(strings.Join(head.Notes, " "), "99.9% held-out agreement from 7 queries") {
		t.Errorf("raw note: %q", head.Notes)
	}
	detail := findTable(t, rep, "Equation solving, tuned configuration")
	if got := cellOf(t, detail, "rotate every 1", "accounts"); got != itoa(7*12) {
		t.Errorf("rotate every 1 used %s accounts, want one per query (%d)", got, 7*12)
	}
	// Every query is a numeric record asked with logprobs from an identity
	// in probation: refused (throttled), so the rotation buys nothing.
	if got := cellOf(t, detail, "rotate every 1", "refused"); got != itoa(7*12) {
		t.Errorf("rotate every 1: %s refused, want every query (%d)", got, 7*12)
	}
}

// TestAgedAccountsWarmUp: an aged identity has the configured standing
// before its first harvest query, so its first answer carries margins.
func TestAgedAccountsWarmUp(t *testing.T) {
	dir := corpustest.Require(t)
	cover, err := loadCover(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := *config.Default()
	cfg.Scoring.Standing.Requests, cfg.Scoring.Standing.Age = 6, 2*time.Hour
	m := newLogistic(2, 6)
	start := traffic.DefaultStart()
	rig, err := startRig(&cfg, false, recordModel{inner: m, d: 6}, start)
	if err != nil {
		t.Fatal(err)
	}
	defer rig.close()
	st := Strategy{Name: "aged", Aged: true, RotateEvery: 3, Gap: 20 * time.Second}
	c := newEconClient(rig, st, 1, start, cover, warmupOf(&cfg), recordWrappers(false))
	resp, out, ok, err := c.ask(context.Background(), Query{Prompt: c.record([]float64{1, -2, 0.5, 0.25, 3, -1}, 0), TopLogprobs: 2}, false)
	if err != nil || !ok {
		t.Fatalf("ask: %v %v", ok, err)
	}
	if out.probation || len(resp.Top) != 2 {
		t.Fatalf("aged identity answered in probation %v with %d alternatives", out.probation, len(resp.Top))
	}
	if c.stats.benign < 8*6 || c.t.Sub(start) < 2*time.Hour {
		t.Fatalf("warm-up: %d benign requests over %s, want at least 48 over 2h", c.stats.benign, c.t.Sub(start))
	}
}

func TestSummariseHonest(t *testing.T) {
	t0 := traffic.DefaultStart()
	asked := func(i int, prob bool, v scoring.Verdict) honestReq {
		h := honestReq{fam: "benign-confidence", account: "benign-confidence/000", t: t0.Add(time.Duration(i) * time.Hour), top: 3, compared: true,
			on: econOutcome{status: 200, answered: true, verdict: v, probation: prob}, off: econOutcome{status: 200, answered: true}}
		h.raw = Response{HasLogprob: true, Logprob: -0.5, Top: []TokenLogprob{{"a", -0.5}, {"b", -1}, {"c", -2}}}
		if !prob {
			h.onResp = Response{HasLogprob: true, Logprob: -0.5, Top: h.raw.Top[:3]}
		}
		return h
	}
	reqs := []honestReq{asked(0, true, scoring.Allow), asked(1, true, scoring.Allow), asked(7, false, scoring.Allow), asked(8, false, scoring.Allow),
		asked(9, true, scoring.Allow)}
	reqs[3].bodiesDiffer = true
	reqs = append(reqs, honestReq{fam: "attack-softlabel", account: "attack-softlabel/000", attack: true, top: 20})
	p := EconomicsParams{Config: config.Default(), Honest: HonestParams{Scale: 1}}
	res := summariseHonest(reqs, p)
	if len(res.fams) != 1 {
		t.Fatalf("families %d, want the benign one", len(res.fams))
	}
	f := res.fams[0]
	if f.accounts != 1 || f.requests != 5 || f.asked != 5 || f.askedProbation != 3 || f.earned != 1 || f.lost != 1 ||
		f.estAsked != 2 || f.estDiff != 1 || f.toStanding[0] != 3 || f.daysToStanding[0] != 7.0/24 || f.estDelta != 0 || f.estAltsKept != 6 {
		t.Fatalf("summary %+v", f)
	}
}
