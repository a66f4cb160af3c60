package scoring

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// run sends n requests from c, one every gap, and returns the last decision.
func run(e *Engine, c *client, start time.Time, gap time.Duration, n int, prompt func(i int) string, edit ...func(*Request)) Decision {
	var d Decision
	for i := 0; i < n; i++ {
		d = e.Score(c.req(start.Add(time.Duration(i)*gap), prompt(i), edit...))
	}
	return d
}

func TestSignalLogitBias(t *testing.T) {
	cases := []struct {
		name     string
		edit     []func(*Request)
		minS     float64
		maxS     float64
		minTier  Verdict
		maxTier  Verdict
		requests int
	}{
		// Carlini et al. 2024: 300 biased tokens, top 20 logprobs, 1 token.
		{"vocabulary sweep", []func(*Request){withLogitBias(300), withLogprobs(20), withMaxTokens(1)}, 0.8, 1, Throttle, Block, 5},
		{"first request", []func(*Request){withLogitBias(300), withLogprobs(20), withMaxTokens(1)}, 0.5, 1, Degrade, Block, 1},
		{"label constraint", []func(*Request){withLogitBias(2)}, 0.05, 0.2, Allow, Allow, 5},
		{"none", nil, 0, 0, Allow, Allow, 5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newTestEngine(t, nil)
			d := run(e, newClient("sk-lb", "198.51.100.10:5000"), t0, 30*time.Second, c.requests, distinctPrompt, c.edit...)
			if s := strength(d, "logit_bias"); s < c.minS || s > c.maxS {
				t.Errorf("logit_bias strength %.3f, want [%.2f, %.2f]", s, c.minS, c.maxS)
			}
			if d.Verdict < c.minTier || d.Verdict > c.maxTier {
				t.Errorf("verdict %v, want %v..%v (score %.3f)", d.Verdict, c.minTier, c.maxTier, d.Score)
			}
		})
	}
}

func TestSignalLogprobs(t *testing.T) {
	cases := []struct {
		name       string
		edit       []func(*Request)
		minS, maxS float64
	}{
		{"top 20, one token", []func(*Request){withLogprobs(20), withMaxTokens(1)}, 0.8, 1},
		{"echo prompt logprobs", []func(*Request){withLogprobs(5), func(r *Request) { r.Echo = true }}, 0.85, 1},
		{"soft labels, top 5", []func(*Request){withLogprobs(5)}, 0.45, 0.6},
		{"top 3 for a confidence display", []func(*Request){withLogprobs(3)}, 0.04, 0.07},
		{"top 2 for confidence", []func(*Request){withLogprobs(2)}, 0.02, 0.05},
		{"n=8 samples", []func(*Request){func(r *Request) { r.N = 8 }}, 0.1, 0.2},
		{"plain", nil, 0, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newTestEngine(t, nil)
			d := run(e, newClient("sk-lp", "198.51.100.11:5000"), t0, time.Minute, 20, distinctPrompt, c.edit...)
			if s := strength(d, "logprobs"); s < c.minS || s > c.maxS {
				t.Errorf("logprobs strength %.3f, want [%.2f, %.2f]", s, c.minS, c.maxS)
			}
		})
	}
}

// reasoning prompts in several languages around one English question.
var cotForms = map[string]string{
	"en": "Solve this step by step and show your reasoning: %s",
	"es": "Resuelve paso a paso y explica tu razonamiento: %s",
	"fr": "Résous étape par étape et explique ton raisonnement : %s",
	"de": "Löse Schritt für Schritt: %s",
	"zh": "请一步一步地解决下面的问题，并说明推理过程：%s",
	"ja": "次の問題をステップバイステップで解いてください：%s",
	"ko": "다음 문제를 단계별로 풀어 주세요: %s",
	"ru": "Реши шаг за шагом: %s",
	"ar": "حل المسألة التالية خطوة بخطوة: %s",
	"hi": "निम्नलिखित प्रश्न को चरण दर चरण हल करें: %s",
}

func TestSignalReasoning(t *testing.T) {
	question := func(i int) string { return distinctPrompt(i) + "?" }
	langs := func(ls ...string) func(int) string {
		return func(i int) string { return fmt.Sprintf(cotForms[ls[i%len(ls)]], question(i)) }
	}
	cases := []struct {
		name       string
		prompt     func(int) string
		minS, maxS float64
	}{
		{"english only", langs("en"), 0.3, 0.4},
		{"chinese only", langs("zh"), 0.3, 0.4},
		{"arabic and hindi", langs("ar", "hi"), 0.5, 0.6},
		{"eight languages", langs("en", "es", "fr", "de", "zh", "ja", "ru", "ar"), 0.9, 1},
		{"korean japanese russian spanish", langs("ko", "ja", "ru", "es"), 0.9, 1},
		{"no demand", question, 0, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newTestEngine(t, nil)
			d := run(e, newClient("sk-cot", "198.51.100.12:5000"), t0, 10*time.Minute, 24, c.prompt)
			if s := strength(d, "reasoning"); s < c.minS || s > c.maxS {
				t.Errorf("reasoning strength %.3f, want [%.2f, %.2f]", s, c.minS, c.maxS)
			}
		})
	}
}

func TestSignalNearDuplicate(t *testing.T) {
	sweep := func(i int) string {
		return fmt.Sprintf("Would you approve a loan for an applicant with an annual income of $%d and a credit score of %d? Answer only yes or no.", 20000+i*1000, 500+i)
	}
	cjkSweep := func(i int) string {
		return fmt.Sprintf("这条评论是正面还是负面的？评论：这家餐厅的菜%s，服务也%s。只回答正面或负面。", []string{"很好", "一般", "太差", "不错"}[i%4], []string{"很慢", "很快", "很好", "一般"}[(i/4)%4])
	}
	cases := []struct {
		name       string
		prompt     func(int) string
		minS, maxS float64
	}{
		{"numeric sweep", sweep, 0.7, 1},
		{"chinese word sweep", cjkSweep, 0.4, 1},
		{"distinct prompts", distinctPrompt, 0, 0.01},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newTestEngine(t, nil)
			d := run(e, newClient("sk-dup", "198.51.100.13:5000"), t0, 20*time.Second, 40, c.prompt)
			if s := strength(d, "near_duplicate"); s < c.minS || s > c.maxS {
				t.Errorf("near_duplicate strength %.3f, want [%.2f, %.2f]", s, c.minS, c.maxS)
			}
		})
	}
}

func TestSignalCampaignTemplates(t *testing.T) {
	wrappers := map[string]string{
		"alpaca":  "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n%s\n\n### Response:",
		"chinese": "以下是描述任务的指令。请写出恰当完成该请求的回答，并尽可能详细地解释。\n\n指令：%s",
		"none":    "%s",
	}
	for name, w := range wrappers {
		t.Run(name, func(t *testing.T) {
			e := newTestEngine(t, nil)
			// Eight accounts each reuse the wrapper a few times.
			for a := 0; a < 8; a++ {
				c := newClient(fmt.Sprintf("sk-campaign-%d", a), fmt.Sprintf("%d.0.%d.9:4000", 11+a, a))
				run(e, c, t0.Add(time.Duration(a)*time.Minute), 3*time.Minute, 4, func(i int) string { return fmt.Sprintf(w, distinctPrompt(100*a+i)) })
			}
			// A new, unrelated account using it.
			c := newClient("sk-newcomer", "93.184.216.34:4000")
			d := run(e, c, t0.Add(time.Hour), 3*time.Minute, 3, func(i int) string { return fmt.Sprintf(w, distinctPrompt(5000+i)) })
			s := strength(d, "campaign")
			if name == "none" {
				if s != 0 {
					t.Fatalf("campaign strength %.3f without a shared template", s)
				}
				return
			}
			if s < 0.5 {
				t.Fatalf("campaign strength %.3f for a shared %s template, want >= 0.5", s, name)
			}
		})
	}
	// A template reused by a single session is not a campaign...
	own := "You are my study buddy for the exam next week. Please look at the following note and tell me what I should memorise from it, in plain words.\n\n%s"
	e := newTestEngine(t, nil)
	d := run(e, newClient("sk-alone", "93.184.216.35:4000"), t0, time.Minute, 30, func(i int) string {
		return fmt.Sprintf(own, distinctPrompt(i))
	})
	if s := strength(d, "campaign"); s != 0 {
		t.Fatalf("campaign strength %.3f for one session's own template", s)
	}
	// ... but a published distillation format is evidence even for one
	// session, short of flagging it alone.
	e = newTestEngine(t, nil)
	d = run(e, newClient("sk-alpaca", "93.184.216.36:4000"), t0, time.Minute, 30, func(i int) string {
		return fmt.Sprintf(wrappers["alpaca"], distinctPrompt(i))
	})
	if s := strength(d, "campaign"); s < 0.5 {
		t.Fatalf("campaign strength %.3f for a session sending the Alpaca format, want >= 0.5", s)
	}
}

// TestCampaignOneRequestPerKey: a flood of keys each sending one request
// with a shared template becomes a campaign after a few keys, and later
// keys are flagged on their first request.
func TestCampaignOneRequestPerKey(t *testing.T) {
	e := newTestEngine(t, nil)
	w := "You are a world-class expert. Complete the task below as thoroughly and accurately as possible, explain your answer in detail and list every assumption you make.\n\nTask: %s"
	flagged := 0
	for k := 0; k < 60; k++ {
		c := newClient(fmt.Sprintf("sk-one-%d", k), fmt.Sprintf("%d.%d.7.9:4000", 20+k%50, k))
		d := e.Score(c.req(t0.Add(time.Duration(k)*10*time.Second), fmt.Sprintf(w, distinctPrompt(k))))
		if k >= 20 && d.Verdict >= Degrade {
			flagged++
		}
	}
	if flagged < 36 {
		t.Fatalf("%d of the last 40 one-request keys flagged, want >= 36", flagged)
	}
	// The same number of people sending one common opening each and then
	// conversing is no campaign.
	e = newTestEngine(t, nil)
	p := "I want you to act as a travel guide. I will write you my location and you will suggest a place to visit near my location, with opening hours and a short history. %s"
	for k := 0; k < 60; k++ {
		c := newClient(fmt.Sprintf("sk-persona-%d", k), fmt.Sprintf("%d.%d.8.9:4000", 20+k%50, k))
		at := t0.Add(time.Duration(k) * 10 * time.Minute)
		first := fmt.Sprintf(p, distinctPrompt(k))
		d := e.Score(c.req(at, first, withTurns(1, 0, "")))
		if d.Verdict >= Degrade {
			t.Fatalf("persona user %d flagged on its opening: %+v", k, d)
		}
		d = e.Score(c.req(at.Add(time.Minute), distinctPrompt(1000+k), withTurns(2, 1, first)))
		if d.Verdict >= Degrade {
			t.Fatalf("persona user %d flagged on its follow-up: %+v", k, d)
		}
	}
}

func TestSignalClusterSpread(t *testing.T) {
	e := newTestEngine(t, nil)
	// Six probing accounts from one /24 are flagged on their own evidence.
	for a := 0; a < 6; a++ {
		c := newClient(fmt.Sprintf("sk-probe-%d", a), fmt.Sprintf("185.220.100.%d:5000", 10+a))
		d := run(e, c, t0.Add(time.Duration(a)*time.Second), time.Second, 5, distinctPrompt, withLogitBias(300), withLogprobs(20), withMaxTokens(1))
		if d.Verdict < Degrade {
			t.Fatalf("prober %d not flagged: %+v", a, d)
		}
	}
	cases := []struct {
		name string
		addr string
		min  float64
		max  float64
	}{
		{"same /24, innocent request", "185.220.100.77:6000", 0.5, 1},
		{"other /24", "185.220.109.77:6000", 0, 0},
	}
	for _, c := range cases {
		cl := newClient("sk-"+c.name, c.addr)
		cl.ua = "curl/8.5.0" // a different client, so only the IP links it
		d := e.Score(cl.req(t0.Add(time.Minute), "what is the weather like in lisbon in may"))
		if s := strength(d, "cluster"); s < c.min || s > c.max {
			t.Errorf("%s: cluster strength %.3f, want [%.2f, %.2f]", c.name, s, c.min, c.max)
		}
		// A link alone never flags: its weight stays below the degrade
		// threshold, so it only adds to a session's own evidence.
		if d.Verdict != Allow {
			t.Errorf("%s: verdict %v, want allow (a link alone does not flag)", c.name, d.Verdict)
		}
		if c.min > 0 && d.Score < 0.1 {
			t.Errorf("%s: score %.3f, want the cluster to add to it", c.name, d.Score)
		}
	}
}

func TestSignalsAutomation(t *testing.T) {
	// A scheduler: one request every 2 s, single-turn, all novel.
	e := newTestEngine(t, nil)
	d := run(e, newClient("sk-bot", "198.51.100.20:5000"), t0, 2*time.Second, 200, distinctPrompt, withMaxTokens(1024))
	for _, c := range []struct {
		name string
		min  float64
	}{{"volume", 0.9}, {"regularity", 0.8}, {"single_turn", 0.9}, {"novelty", 0.9}} {
		if s := strength(d, c.name); s < c.min {
			t.Errorf("scheduler: %s strength %.3f, want >= %.2f", c.name, s, c.min)
		}
	}
	if d.Verdict != Degrade {
		t.Errorf("automation alone: verdict %v (score %.3f), want degrade (capped below throttle)", d.Verdict, d.Score)
	}

	// A person: multi-turn conversations, irregular gaps, over a day.
	e = newTestEngine(t, nil)
	c := newClient("sk-person", "198.51.100.21:5000")
	rng := rand.New(rand.NewPCG(1, 2))
	at := t0
	for i := 0; i < 30; i++ {
		turn := i % 3
		at = at.Add(time.Duration(float64(40*time.Second) * math.Exp(1.5*rng.NormFloat64())))
		if turn == 0 {
			at = at.Add(time.Duration(rng.IntN(5)) * time.Hour)
		}
		d = e.Score(c.req(at, distinctPrompt(i), withMessages(1+2*turn)))
	}
	for _, name := range []string{"volume", "regularity", "single_turn", "novelty"} {
		if s := strength(d, name); s > 0.2 {
			t.Errorf("person: %s strength %.3f, want <= 0.2", name, s)
		}
	}
	if d.Verdict != Allow {
		t.Errorf("person: verdict %v (score %.3f)", d.Verdict, d.Score)
	}
}

// TestScoreMonotoneInSignals: raising any one signal never lowers the score
// (property over random strength vectors).
func TestScoreMonotoneInSignals(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	w := defaultWeights
	for trial := 0; trial < 20000; trial++ {
		var st strengths
		for i := range st {
			if rng.IntN(3) > 0 {
				st[i] = rng.Float64()
			}
		}
		base, contrib := combine(&st, &w, 0.5, -1)
		sum := 0.0
		for _, c := range contrib {
			sum += c
		}
		if math.Abs(sum-base) > 1e-9 || base < 0 || base > 1 {
			t.Fatalf("score %.6f, contributions sum %.6f", base, sum)
		}
		i := rng.IntN(numSignals)
		up := st
		up[i] = math.Min(1, st[i]+rng.Float64()*(1-st[i]))
		if s, _ := combine(&up, &w, 0.5, -1); s < base-1e-12 {
			t.Fatalf("raising %s from %.3f to %.3f lowered the score %.6f -> %.6f", signalNames[i], st[i], up[i], base, s)
		}
	}
}

// TestEngineScoreMonotoneInHarvestInputs: with the same history, a request
// asking for more (alternatives, biased tokens, languages) never scores lower.
func TestEngineScoreMonotoneInHarvestInputs(t *testing.T) {
	history := func(e *Engine, c *client) {
		run(e, c, t0, 30*time.Second, 6, distinctPrompt)
	}
	final := func(edit func(*Request), prompt string) float64 {
		e := newTestEngine(t, nil)
		c := newClient("sk-mono", "198.51.100.30:5000")
		history(e, c)
		return e.Score(c.req(t0.Add(time.Hour), prompt, edit)).Score
	}
	prev := -1.0
	for _, top := range []int{0, 1, 2, 5, 10, 20} {
		s := final(withLogprobs(top), distinctPrompt(77))
		if s < prev {
			t.Fatalf("top_logprobs %d scored %.3f < %.3f", top, s, prev)
		}
		prev = s
	}
	prev = -1
	for _, n := range []int{0, 1, 5, 20, 100, 300} {
		s := final(withLogitBias(n), distinctPrompt(77))
		if s < prev {
			t.Fatalf("logit_bias size %d scored %.3f < %.3f", n, s, prev)
		}
		prev = s
	}
	prev = -1
	for _, p := range []string{distinctPrompt(77), fmt.Sprintf(cotForms["en"], distinctPrompt(77)), fmt.Sprintf(cotForms["zh"], distinctPrompt(77))} {
		s := final(func(*Request) {}, p)
		if s < prev {
			t.Fatalf("prompt %q scored %.3f < %.3f", p, s, prev)
		}
		prev = s
	}
}

func TestHarvestIntensityTable(t *testing.T) {
	cases := []struct {
		r    Request
		want float64
	}{
		{Request{}, 0},
		{Request{Logprobs: true}, 0},
		{Request{Logprobs: true, TopLogprobs: 2}, 0.04},
		{Request{Logprobs: true, TopLogprobs: 3}, 0.06},
		{Request{Logprobs: true, TopLogprobs: 5}, 0.55},
		{Request{Logprobs: true, TopLogprobs: 10}, 0.70},
		{Request{Logprobs: true, TopLogprobs: 20, MaxTokens: 1}, 1},
		{Request{Logprobs: true, TopLogprobs: 5, Echo: true}, 1},
		{Request{N: 8}, 0.15},
		{Request{Logprobs: true, TopLogprobs: 50}, 1},
	}
	for _, c := range cases {
		if got := harvestIntensity(&c.r); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("%+v: %.3f, want %.3f", c.r, got, c.want)
		}
	}
	if s := logitBiasStrength(&Request{LogitBiasSize: 300, Logprobs: true}); s != 1 {
		t.Errorf("300 biased tokens with logprobs: %.3f, want 1", s)
	}
	if a, b := logitBiasStrength(&Request{LogitBiasSize: 5}), logitBiasStrength(&Request{LogitBiasSize: 5, Logprobs: true}); !(0 < a && a < b) {
		t.Errorf("logit bias without logprobs %.3f should be weaker than with %.3f", a, b)
	}
}

func TestSignalNamesAreUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, n := range SignalNames() {
		if seen[n] || strings.TrimSpace(n) != n || n == "" {
			t.Fatalf("bad or duplicate signal name %q", n)
		}
		seen[n] = true
		if signalIndex(n) < 0 {
			t.Fatalf("signalIndex(%q) < 0", n)
		}
	}
}
