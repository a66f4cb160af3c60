package scoring

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

func TestNextTierHysteresis(t *testing.T) {
	e := newTestEngine(t, nil) // degrade 0.3, throttle 0.6, block 0.8, hysteresis 0.1
	cases := []struct {
		name   string
		scores []float64
		want   []Verdict
	}{
		{"climbs at once", []float64{0.1, 0.35, 0.65, 0.85}, []Verdict{Allow, Degrade, Throttle, Block}},
		{"no flapping at the edge", []float64{0.31, 0.29, 0.31, 0.25, 0.21}, []Verdict{Degrade, Degrade, Degrade, Degrade, Degrade}},
		{"steps down past the margin", []float64{0.31, 0.19}, []Verdict{Degrade, Allow}},
		{"throttle holds to 0.5", []float64{0.62, 0.51, 0.49, 0.19}, []Verdict{Throttle, Throttle, Degrade, Allow}},
		{"jump straight to allow", []float64{0.65, 0.05}, []Verdict{Throttle, Allow}},
	}
	for _, c := range cases {
		s := &session{}
		for i, sc := range c.scores {
			s.tier = e.nextTier(s, sc, t0.UnixNano(), e.cfg.Thresholds)
			if s.tier != c.want[i] {
				t.Errorf("%s: after score %.2f (step %d) tier %v, want %v", c.name, sc, i, s.tier, c.want[i])
			}
		}
	}
}

func TestQuarantineAndDecayBack(t *testing.T) {
	e := newTestEngine(t, func(c *Config) { c.Quarantine = 2 * time.Hour })
	c := newClient("sk-prober", "198.51.100.40:5000")
	d := run(e, c, t0, time.Second, 30, distinctPrompt, withLogitBias(300), withLogprobs(20), withMaxTokens(1))
	if d.Verdict != Block {
		t.Fatalf("prober verdict %v (score %.3f), want block", d.Verdict, d.Score)
	}
	// Inside the quarantine a harmless request stays blocked even after the
	// score has decayed well below the block level.
	d = e.Score(c.req(t0.Add(90*time.Minute), "hello there, what time is it in tokyo"))
	if d.Verdict != Block {
		t.Fatalf("inside quarantine: %v", d.Verdict)
	}
	// Days later the counters have decayed: the session is allowed again,
	// stepping down through hysteresis.
	var tiers []Verdict
	for day := 1; day <= 8; day++ {
		d = e.Score(c.req(t0.Add(time.Duration(day)*24*time.Hour), distinctPrompt(1000+day), withMessages(3)))
		tiers = append(tiers, d.Verdict)
	}
	if tiers[len(tiers)-1] != Allow {
		t.Fatalf("after a week of quiet: tiers %v, want to end at allow", tiers)
	}
	for i := 1; i < len(tiers); i++ {
		if tiers[i] > tiers[i-1] {
			t.Fatalf("tier went back up while behaving: %v", tiers)
		}
	}
}

func TestQuarantineSurvivesEviction(t *testing.T) {
	e := newTestEngine(t, nil)
	c := newClient("sk-evicted", "198.51.100.41:5000")
	if d := run(e, c, t0, time.Second, 30, distinctPrompt, withLogitBias(300), withLogprobs(20), withMaxTokens(1)); d.Verdict != Block {
		t.Fatalf("verdict %v", d.Verdict)
	}
	id := e.Score(c.req(t0.Add(31*time.Second), "x")).Session
	// Drop the state as an eviction would.
	e.main.Del(id)
	e.prob.Del(id)
	e.main.Wait()
	e.prob.Wait()
	if d := e.Score(c.req(t0.Add(40*time.Minute), "hello, what is the capital of peru")); d.Verdict != Block {
		t.Fatalf("evicted blocked session came back as %v", d.Verdict)
	}
}

func TestShadowMode(t *testing.T) {
	e := newTestEngine(t, func(c *Config) { c.Shadow = true })
	d := run(e, newClient("sk-shadow", "198.51.100.42:5000"), t0, time.Second, 20, distinctPrompt, withLogitBias(300), withLogprobs(20), withMaxTokens(1))
	if !d.Shadow || d.Verdict != Block || d.Score < 0.8 {
		t.Fatalf("shadow decision %+v: want Shadow with the would-be verdict block", d)
	}
	d = e.Score(newClient("sk-other", "198.51.100.43:5000").req(t0, "hi"))
	if !d.Shadow || d.Verdict != Allow {
		t.Fatalf("shadow decision for a clean request %+v", d)
	}
}

func TestIdentity(t *testing.T) {
	e := newTestEngine(t, func(c *Config) { c.ClientIPHeader = "x-forwarded-for"; c.TrustedHops = 1 })
	plain := newTestEngine(t, nil)
	id := func(e *Engine, hdr map[string]string, addr string) string {
		r := &Request{Time: t0, Header: func(n string) string { return hdr[n] }, SourceAddress: addr, Prompt: "hi", Messages: 1}
		return e.Score(r).Session
	}
	a := id(e, map[string]string{"authorization": "Bearer sk-alpha"}, "1.2.3.4:1")
	cases := []struct {
		name string
		e    *Engine
		hdr  map[string]string
		addr string
		same bool
	}{
		{"same token, other address", e, map[string]string{"authorization": "Bearer sk-alpha"}, "5.6.7.8:2", true},
		{"scheme is case-insensitive", e, map[string]string{"authorization": "bearer   sk-alpha"}, "", true},
		{"other token", e, map[string]string{"authorization": "Bearer sk-beta"}, "1.2.3.4:1", false},
		{"api key is another source", e, map[string]string{"x-api-key": "sk-alpha"}, "1.2.3.4:1", false},
	}
	for _, c := range cases {
		if got := id(c.e, c.hdr, c.addr); (got == a) != c.same {
			t.Errorf("%s: id %s vs %s, same=%v want %v", c.name, got, a, got == a, c.same)
		}
	}
	if strings.Contains(a, "alpha") || len(a) != 32 {
		t.Errorf("session id %q should be 32 hex digits of HMAC", a)
	}
	// Without credentials the client IP identifies; the forwarded header
	// counts only when configured, and then its trusted (rightmost) entry.
	xff := map[string]string{"x-forwarded-for": "6.6.6.6, 9.9.9.9"}
	if id(e, xff, "10.0.0.1:1") != id(e, nil, "9.9.9.9:7") {
		t.Error("trusted hop entry of x-forwarded-for not used as client IP")
	}
	if id(e, map[string]string{"x-forwarded-for": "6.6.6.6, 9.9.9.9"}, "10.0.0.1:1") == id(e, nil, "6.6.6.6:7") {
		t.Error("client-supplied (untrusted) x-forwarded-for entry used")
	}
	if id(plain, xff, "10.0.0.1:1") != id(plain, nil, "10.0.0.1:9") {
		t.Error("x-forwarded-for used although no header is configured")
	}
	if id(plain, nil, "[2001:db8::1]:443") != id(plain, nil, "2001:db8::1") {
		t.Error("IPv6 forms of one address give different ids")
	}
	// Keyed: another secret gives other ids.
	other := newTestEngine(t, func(c *Config) { c.Secret = "another-secret-another-secret-x" })
	if id(other, map[string]string{"authorization": "Bearer sk-alpha"}, "") == a {
		t.Error("session ids do not depend on the secret")
	}
}

func TestClockSkewAndBadInputNeverPanic(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	e := newTestEngine(t, nil, Options{MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))})
	c := newClient("sk-skew", "198.51.100.50:5000")
	e.Score(c.req(t0, "first"))
	e.Score(c.req(t0.Add(-time.Hour), "from the past"))
	e.Score(c.req(time.Time{}, "no time: the clock is used"))
	e.Score(c.req(t0, "bad \xff\xfe utf8"))
	e.Score(c.req(t0, strings.Repeat("x", 1<<20)))
	e.Score(&Request{}) // no header func, no body
	e.Score(nil)        // nothing at all
	e.Score(&Request{Time: t0.Add(100 * 365 * 24 * time.Hour), Header: func(string) string { return "" }, SourceAddress: "garbage"})
	got := badInputCounts(t, reader)
	for _, reason := range []string{badClockBackward, badInvalidUTF8, badTruncated, badNoIdentity} {
		if got[reason] == 0 {
			t.Errorf("bad_input{reason=%s} not counted: %v", reason, got)
		}
	}
}

func badInputCounts(t *testing.T, reader sdkmetric.Reader) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "distillguard.scoring.bad_input" {
				continue
			}
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				v, _ := dp.Attributes.Value("reason")
				out[v.AsString()] += dp.Value
			}
		}
	}
	return out
}

func TestMetrics(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	e := newTestEngine(t, nil, Options{MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))})
	run(e, newClient("sk-metrics", "198.51.100.51:5000"), t0, time.Second, 10, distinctPrompt, withLogitBias(300), withLogprobs(20), withMaxTokens(1))
	run(e, newClient("sk-plain", "198.51.100.52:5000"), t0, time.Minute, 3, distinctPrompt)
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	sums := map[string]int64{}
	// add sums counter and gauge points by name and attributes.
	add := func(name string, dps []metricdata.DataPoint[int64]) {
		for _, dp := range dps {
			key := name
			for _, kv := range dp.Attributes.ToSlice() {
				key += "," + string(kv.Key) + "=" + kv.Value.String()
			}
			sums[key] += dp.Value
		}
	}
	var hist uint64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				add(m.Name, d.DataPoints)
			case metricdata.Gauge[int64]:
				add(m.Name, d.DataPoints)
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					hist += dp.Count
				}
			}
		}
	}
	want := map[string]int64{
		"distillguard.scoring.verdicts,shadow=false,verdict=allow": 3,
		"distillguard.scoring.signal.firings,signal=logit_bias":    10,
	}
	for k, v := range want {
		if sums[k] != v {
			t.Errorf("%s = %d, want %d (all: %v)", k, sums[k], v, sums)
		}
	}
	if sums["distillguard.scoring.verdicts,shadow=false,verdict=block"] == 0 || sums["distillguard.scoring.verdict.changes"] < 2 {
		t.Errorf("block verdicts or verdict changes not counted: %v", sums)
	}
	if hist != 13 {
		t.Errorf("score histogram has %d observations, want 13", hist)
	}
	if n := sums["distillguard.scoring.sessions,tier=main"] + sums["distillguard.scoring.sessions,tier=probation"]; n != 2 {
		t.Errorf("sessions gauge %d, want 2", n)
	}
	if sums["distillguard.scoring.state.bytes,part=sessions"] <= 0 || sums["distillguard.scoring.state.bytes,part=templates"] <= 0 {
		t.Errorf("state bytes not reported: %v", sums)
	}
}

func TestAuditTrail(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	e := newTestEngine(t, nil, Options{Logger: log})
	d := run(e, newClient("sk-audit-secret-token", "198.51.100.53:5000"), t0, time.Second, 10, distinctPrompt, withLogitBias(300), withLogprobs(20), withMaxTokens(1))
	run(e, newClient("sk-quiet", "198.51.100.54:5000"), t0, time.Minute, 5, distinctPrompt)
	if strings.Contains(buf.String(), "sk-audit") || strings.Contains(buf.String(), "198.51.100") {
		t.Fatal("audit trail contains a raw credential or address")
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	var prev = "allow"
	for _, l := range lines {
		var rec struct {
			Msg      string                        `json:"msg"`
			Session  string                        `json:"session"`
			From     string                        `json:"from"`
			To       string                        `json:"to"`
			Requests int                           `json:"requests"`
			Signals  map[string]map[string]float64 `json:"signals"`
		}
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("audit line is not JSON: %q", l)
		}
		if rec.Msg != "scoring verdict changed" || rec.Session != d.Session || rec.From != prev || rec.Requests < 1 {
			t.Fatalf("unexpected audit line %q", l)
		}
		if len(rec.Signals) == 0 || rec.Signals["logit_bias"]["contribution"] <= 0 {
			t.Fatalf("audit line lacks the top signals: %q", l)
		}
		prev = rec.To
	}
	if prev != "block" || len(lines) < 2 || len(lines) > 3 {
		t.Fatalf("want 2-3 changes ending at block, got %d lines:\n%s", len(lines), buf.String())
	}
}

// TestKeyFlood: a flood of one-shot keys stays within the memory budget and
// does not evict established sessions.
func TestKeyFlood(t *testing.T) {
	flood := 60_000
	if testing.Short() {
		flood = 15_000
	}
	e := newTestEngine(t, func(c *Config) { c.MemoryBytes = 2 << 20 })
	established := make([]*client, 40)
	ids := make([]string, len(established))
	for i := range established {
		established[i] = newClient(fmt.Sprintf("sk-regular-%d", i), fmt.Sprintf("198.51.100.%d:5000", i))
		for j := 0; j < 20; j++ {
			ids[i] = e.Score(established[i].req(t0.Add(time.Duration(j)*time.Minute), distinctPrompt(i*100+j))).Session
		}
	}
	at := t0.Add(time.Hour)
	for i := 0; i < flood; i++ {
		c := newClient(fmt.Sprintf("sk-flood-%d", i), fmt.Sprintf("203.0.%d.%d:1", (i>>8)&255, i&255))
		e.Score(c.req(at, "x"))
		if i%4 == 0 {
			// A quarter of the flood keys come back enough to leave
			// probation and compete for the main tier.
			e.Score(c.req(at, "y"))
			e.Score(c.req(at, "z"))
		}
		if i%1000 == 0 { // the regulars keep using the service
			for _, r := range established {
				e.Score(r.req(at, "still here"))
			}
		}
	}
	e.main.Wait()
	e.prob.Wait()
	kept := 0
	for _, id := range ids {
		if d, err := e.Session(id); err == nil && d.Requests >= 20 {
			kept++
		}
	}
	if kept < len(ids)*9/10 {
		t.Errorf("only %d of %d established sessions survived a flood of %d keys", kept, len(ids), flood)
	}
	if st := e.Stats(); st.SessionBytes > e.cfg.MemoryBytes {
		t.Errorf("session state %d bytes exceeds the %d budget", st.SessionBytes, e.cfg.MemoryBytes)
	}
}

// TestStateBytesAgreeWithHeap: the state-bytes metric matches the heap
// actually used per idle session (within 30%).
func TestStateBytesAgreeWithHeap(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("memory measurement with 100k sessions; run without -short and without -race")
	}
	heap, metric := idleSessionMemory(t, 100_000)
	t.Logf("idle session: %.0f heap bytes, %.0f accounted", heap, metric)
	if heap > 1024 {
		t.Errorf("%.0f heap bytes per idle session, want < 1024", heap)
	}
	if r := metric / heap; r < 0.7 || r > 1.3 {
		t.Errorf("accounted %.0f vs heap %.0f bytes per session: ratio %.2f", metric, heap, r)
	}
}

// FuzzScore: arbitrary prompts, headers, addresses and times never panic
// and always give a score in [0,1] and a known verdict.
func FuzzScore(f *testing.F) {
	f.Add("Bearer sk-1", "1.2.3.4:5", "step by step", int64(0), 0, 0)
	f.Add("", "[::1]:1", "\xff\xfe", int64(-1<<62), 300, 20)
	f.Add("bearer", "garbage", strings.Repeat("日本語 ", 3000), int64(1<<62), -5, -1)
	e, err := New(Config{Secret: "fuzz-secret-fuzz-secret-fuzz-sec"}, Options{})
	if err != nil {
		f.Fatal(err)
	}
	defer e.Close()
	f.Fuzz(func(t *testing.T, auth, addr, prompt string, nanos int64, bias, top int) {
		h := map[string]string{"authorization": auth, "user-agent": prompt[:min(len(prompt), 200)]}
		d := e.Score(&Request{
			Time: time.Unix(0, nanos), Header: func(n string) string { return h[n] }, SourceAddress: addr,
			Prompt: prompt, Messages: bias & 7, LogitBiasSize: bias, TopLogprobs: top, Logprobs: top > 0, MaxTokens: bias,
		})
		if d.Score < 0 || d.Score > 1 || d.Verdict < Allow || d.Verdict > Block || len(d.Session) != 32 {
			t.Fatalf("decision %+v", d)
		}
	})
}

func TestPromotionBucket(t *testing.T) {
	b := tokenBucket{rate: 2, burst: 4, tokens: 4}
	now := t0.UnixNano()
	got := 0
	for i := 0; i < 10; i++ {
		if b.take(now) {
			got++
		}
	}
	if got != 4 {
		t.Fatalf("burst allowed %d, want 4", got)
	}
	if b.take(now - int64(time.Hour)) {
		t.Fatal("time running backwards refilled the bucket")
	}
	now += int64(1500 * time.Millisecond) // 3 tokens at 2/s
	got = 0
	for i := 0; i < 10; i++ {
		if b.take(now) {
			got++
		}
	}
	if got != 3 {
		t.Fatalf("after 1.5 s: %d promotions, want 3", got)
	}
}
