package scoring

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestToolLoopIsNotNearDuplicate: an agent's tool loop re-sends the same
// user turn with tool calls and results after it; that is neither a
// near-duplicate query nor a probe, however long the loop.
func TestToolLoopIsNotNearDuplicate(t *testing.T) {
	e := newTestEngine(t, nil)
	c := newClient("sk-agent", "198.51.100.60:5000")
	task := "Fix the failing test in internal/cache/lru.go and run the whole suite afterwards."
	var d Decision
	at := t0
	for task := 0; task < 10; task++ {
		prompt := fmt.Sprintf("Task %d: %s", task, distinctPrompt(task))
		d = e.Score(c.req(at, prompt, withToolLoop(0), func(r *Request) { r.AfterUser, r.ToolTurns = 0, 0 }))
		for step := 1; step <= 12; step++ {
			at = at.Add(4 * time.Second)
			d = e.Score(c.req(at, prompt, withToolLoop(step)))
		}
		at = at.Add(20 * time.Minute)
	}
	_ = task
	for _, name := range []string{"near_duplicate", "probe", "scripted_chat"} {
		if s := strength(d, name); s > 0.05 {
			t.Errorf("tool loop: %s strength %.3f, want ~0", name, s)
		}
	}
	if d.Verdict != Allow {
		t.Errorf("tool loop: verdict %v (score %.3f, %+v)", d.Verdict, d.Score, d.Signals)
	}
	// The same user turn re-sent without tool results is a near duplicate.
	e = newTestEngine(t, nil)
	d = run(e, c, t0, 5*time.Second, 40, func(int) string { return task })
	if s := strength(d, "near_duplicate"); s < 0.5 {
		t.Errorf("re-sent prompt: near_duplicate %.3f, want >= 0.5", s)
	}
}

// TestProbeSignal: variations of one prompt with a few tokens changed are
// probes; exact re-sends and new questions after a fixed template are not.
func TestProbeSignal(t *testing.T) {
	words := []string{"nice", "rude", "clever", "lazy", "kind", "awful", "weird", "honest"}
	cases := []struct {
		name     string
		prompt   func(i int) string
		min, max float64
	}{
		{"one word varies", func(i int) string {
			return fmt.Sprintf("Is the following sentence toxic? Answer yes or no. Sentence: you are such a %s and %s person", words[i%8], words[(i/8)%8])
		}, 0.5, 1},
		{"exact re-send", func(int) string {
			return "Is the following sentence toxic? Answer yes or no. Sentence: you are such a nice person"
		}, 0, 0.05},
		{"template with new content", func(i int) string {
			return "Use the context to answer the question. If you do not know, say so.\n\nContext: " + distinctPrompt(i) + "\n\nQuestion: " + distinctPrompt(1000+i)
		}, 0, 0.05},
	}
	for _, c := range cases {
		e := newTestEngine(t, nil)
		d := run(e, newClient("sk-probe", "198.51.100.61:5000"), t0, 2*time.Second, 60, c.prompt)
		if s := strength(d, "probe"); s < c.min || s > c.max {
			t.Errorf("%s: probe strength %.3f, want [%.2f, %.2f]", c.name, s, c.min, c.max)
		}
	}
}

// TestScriptedChat: conversations opened every few minutes, each with
// canned follow-ups, are scripted; a person's conversations are not.
func TestScriptedChat(t *testing.T) {
	canned := []string{"Can you explain that in more detail?", "Can you give me another example?", "What are the key points to remember?"}
	e := newTestEngine(t, nil)
	c := newClient("sk-dressed", "198.51.100.62:5000")
	at := t0
	var d Decision
	for conv := 0; conv < 12; conv++ {
		first := distinctPrompt(conv) + "?"
		d = e.Score(c.req(at, first, withTurns(1, 0, "")))
		for k, f := range canned {
			at = at.Add(70 * time.Second)
			d = e.Score(c.req(at, f, withTurns(2+k, 1+k, first)))
		}
		at = at.Add(2 * time.Minute)
	}
	if s := strength(d, "scripted_chat"); s < 0.5 || d.Verdict < Degrade {
		t.Errorf("dressed chat: scripted_chat %.3f, verdict %v, want >= 0.5 and flagged", s, d.Verdict)
	}
	e = newTestEngine(t, nil)
	at = t0
	for conv := 0; conv < 4; conv++ {
		first := distinctPrompt(conv) + "?"
		d = e.Score(c.req(at, first, withTurns(1, 0, "")))
		for k := 0; k < 3; k++ {
			at = at.Add(90 * time.Second)
			d = e.Score(c.req(at, distinctPrompt(100*conv+k), withTurns(2+k, 1+k, first)))
		}
		at = at.Add(6 * time.Hour)
	}
	if s := strength(d, "scripted_chat"); s > 0.05 || d.Verdict != Allow {
		t.Errorf("person: scripted_chat %.3f, verdict %v", s, d.Verdict)
	}
}

// TestResponseObserver: output tokens reported for a session raise its
// output signal; unknown sessions and bad ids are ignored.
func TestResponseObserver(t *testing.T) {
	e := newTestEngine(t, nil)
	var obs ResponseObserver = e
	c := newClient("sk-out", "198.51.100.63:5000")
	d := e.Score(c.req(t0, "hello there"))
	obs.ObserveResponse("not-a-session", Usage{CompletionTokens: 1000})
	obs.ObserveResponse("00000000000000000000000000000000", Usage{CompletionTokens: 1000})
	for i := 0; i < 24; i++ {
		at := t0.Add(time.Duration(i) * time.Hour)
		d = e.Score(c.req(at, distinctPrompt(i), withMessages(3)))
		obs.ObserveResponse(d.Session, Usage{Time: at, CompletionTokens: 150_000})
	}
	sd, err := e.Session(d.Session)
	if err != nil {
		t.Fatal(err)
	}
	if sd.Counts["output_tokens"] < 1e6 {
		t.Errorf("output tokens %.0f after 3.6M delivered in a day, want > 1M (decayed)", sd.Counts["output_tokens"])
	}
	d = e.Score(c.req(t0.Add(24*time.Hour), "and one more", withMessages(3)))
	if s := strength(d, "output"); s < 0.5 {
		t.Errorf("output strength %.3f at 3.6M tokens a day, want >= 0.5", s)
	}
	if d.Verdict != Allow {
		t.Errorf("output alone flagged the session: %v (%.3f)", d.Verdict, d.Score)
	}
}

// TestTrustedIdentities: matching by session id, header value and JWT
// claim; allow-always and per-identity thresholds.
func TestTrustedIdentities(t *testing.T) {
	payload := func(claims map[string]any) string {
		b, _ := json.Marshal(claims)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	probe := []func(*Request){withLogitBias(300), withLogprobs(20), withMaxTokens(1)}
	probeID := func() string {
		e := newTestEngine(t, nil)
		return e.Score(newClient("sk-partner", "198.51.100.70:5000").req(t0, "x")).Session
	}()
	e := newTestEngine(t, func(c *Config) {
		c.JWTPayloadHeader = "x-jwt-payload"
		c.Trusted = []Trusted{
			{Name: "partner", Sessions: []string{probeID}, AllowAlways: true},
			{Name: "tenant", Header: "x-tenant", Values: []string{"acme"}, Thresholds: &Thresholds{Degrade: 0.9, Throttle: 0.995, Block: 0.999, Hysteresis: 0.05}},
			{Name: "research", Claim: "org.team", ClaimValues: []string{"evals"}, AllowAlways: true},
		}
	})
	cases := []struct {
		name    string
		c       *client
		trusted string
		want    Verdict
	}{
		{"session id", newClient("sk-partner", "198.51.100.70:5000"), "partner", Allow},
		{"header", &client{token: "sk-acme", addr: "198.51.100.71:5000", ua: "x", hdr: map[string]string{"x-tenant": "acme"}}, "tenant", Degrade},
		{"claim", &client{token: "sk-research", addr: "198.51.100.72:5000", ua: "x",
			hdr: map[string]string{"x-jwt-payload": payload(map[string]any{"org": map[string]any{"team": "evals"}})}}, "research", Allow},
		{"other claim", &client{token: "sk-other", addr: "198.51.100.73:5000", ua: "x",
			hdr: map[string]string{"x-jwt-payload": payload(map[string]any{"org": map[string]any{"team": "growth"}})}}, "", Block},
		{"nobody", newClient("sk-nobody", "198.51.100.74:5000"), "", Block},
	}
	for _, c := range cases {
		d := run(e, c.c, t0, time.Second, 20, distinctPrompt, probe...)
		if d.Trusted != c.trusted {
			t.Errorf("%s: trusted %q, want %q", c.name, d.Trusted, c.trusted)
		}
		// The tenant's own thresholds keep the prober below throttle.
		if c.want == Degrade && d.Verdict > Degrade {
			t.Errorf("%s: verdict %v (score %.3f), want at most degrade", c.name, d.Verdict, d.Score)
		}
		if c.want != Degrade && d.Verdict != c.want {
			t.Errorf("%s: verdict %v (score %.3f), want %v", c.name, d.Verdict, d.Score, c.want)
		}
	}
	bad := DefaultConfig()
	bad.Trusted = []Trusted{{Name: "x", Claim: "org"}, {Sessions: []string{"nothex"}}}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "claim_values") || !strings.Contains(err.Error(), "name is required") {
		t.Errorf("bad trusted entries: %v", err)
	}
}

// TestExplanations: the audit line and the admin view say why, with the
// evidence.
func TestExplanations(t *testing.T) {
	var buf bytes.Buffer
	e := newTestEngine(t, nil, Options{Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	c := newClient("sk-explain", "198.51.100.80:5000")
	langs := []string{"en", "es", "fr", "de", "zh", "ja", "ru", "ar"}
	d := run(e, c, t0, time.Minute, 16, func(i int) string { return fmt.Sprintf(cotForms[langs[i%len(langs)]], distinctPrompt(i)+"?") })
	if d.Verdict < Degrade {
		t.Fatalf("reasoning harvester not flagged: %+v", d)
	}
	var rec struct {
		Explanation string `json:"explanation"`
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &rec); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(rec.Explanation, "reasoning:") || !strings.Contains(rec.Explanation, "step-by-step") || !strings.Contains(rec.Explanation, "zh") {
		t.Errorf("audit explanation %q lacks the reasoning evidence", rec.Explanation)
	}
	sd, err := e.Session(d.Session)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(sd.Explanation, "reasoning:") {
		t.Errorf("admin explanation %q", sd.Explanation)
	}
}
