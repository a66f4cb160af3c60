package scoring

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/distillguard/distillguard/internal/traffic"
)

// decisionDiff describes how two decisions differ, bit for bit, or "".
func decisionDiff(a, b Decision) string {
	switch {
	case a.Verdict != b.Verdict:
		return fmt.Sprintf("verdict %v vs %v", a.Verdict, b.Verdict)
	case math.Float64bits(a.Score) != math.Float64bits(b.Score):
		return fmt.Sprintf("score %v vs %v", a.Score, b.Score)
	case a.Session != b.Session:
		return fmt.Sprintf("session %s vs %s", a.Session, b.Session)
	case a.Shadow != b.Shadow:
		return fmt.Sprintf("shadow %v vs %v", a.Shadow, b.Shadow)
	case len(a.Signals) != len(b.Signals):
		return fmt.Sprintf("%d signals vs %d", len(a.Signals), len(b.Signals))
	}
	for i := range a.Signals {
		x, y := a.Signals[i], b.Signals[i]
		if x.Name != y.Name || math.Float64bits(x.Value) != math.Float64bits(y.Value) ||
			math.Float64bits(x.Contribution) != math.Float64bits(y.Contribution) {
			return fmt.Sprintf("signal %d: %+v vs %+v", i, x, y)
		}
	}
	return ""
}

// evictions is what an engine's bounded tables dropped.
type evictions struct {
	mainEvicted, mainRejected int64
	probEvicted, probRejected int64
	clusters, quarantine      int64
}

func evictionsOf(t *testing.T, e *Engine) evictions {
	t.Helper()
	main, ok1 := e.main.(*sampledTier)
	prob, ok2 := e.prob.(*sampledTier)
	if !ok1 || !ok2 {
		t.Fatalf("a seeded engine must keep sessions in sampled tiers, got %T and %T", e.main, e.prob)
	}
	var ev evictions
	main.mu.Lock()
	ev.mainEvicted, ev.mainRejected = main.evicted, main.rejected
	main.mu.Unlock()
	prob.mu.Lock()
	ev.probEvicted, ev.probRejected = prob.evicted, prob.rejected
	prob.mu.Unlock()
	e.clusters.mu.Lock()
	ev.clusters = e.clusters.evicted
	e.clusters.mu.Unlock()
	e.quarantine.mu.Lock()
	ev.quarantine = e.quarantine.evicted
	e.quarantine.mu.Unlock()
	return ev
}

// TestDeterministicReplay replays labelled traffic twice, through two
// engines built with the same Options.Seed, and requires bit-identical
// decisions for every request. The state is kept small so that every
// bounded table evicts: the probation or the main session tier (one case
// each), the link clusters and the quarantine list.
func TestDeterministicReplay(t *testing.T) {
	scale := 0.3
	if testing.Short() {
		scale = 0.1
	}
	reqs := loadTraffic(t, traffic.Options{Seed: 20250505, Scale: scale})
	// One-shot keys between the labelled requests, as a key flood would
	// send them: they churn the probation tier.
	var flood []traffic.Request
	for i := range reqs {
		flood = append(flood, reqs[i])
		if i%3 == 0 {
			f := reqs[i]
			f.Header = map[string]string{"authorization": fmt.Sprintf("Bearer sk-flood-%d", i), "user-agent": "curl/8.5.0"}
			f.SourceAddress = fmt.Sprintf("198.51.%d.%d:40000", i/250%250, i%250)
			f.Account, f.Family = "flood", "flood"
			flood = append(flood, f)
		}
	}
	parsed := make([]*Request, len(flood))
	for i := range flood {
		parsed[i] = fromTraffic(&flood[i])
	}

	for _, tc := range []struct {
		name           string
		probationShare float64
		// which tier must have evicted (or rejected) entries
		wantMain, wantProb bool
	}{
		{name: "probation_churn", probationShare: 0.02, wantProb: true},
		{name: "main_churn", probationShare: 0.92, wantMain: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.MemoryBytes = 1 << 20
			cfg.ProbationShare = tc.probationShare
			cfg.MaxClusters = 16
			cfg.QuarantineEntries = 16
			cfg.IndexSize = 8
			opts := Options{Seed: []byte("determinism-test-seed")}
			run := func() ([]Decision, *Engine) {
				e, err := New(cfg, opts)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { e.Close() })
				out := make([]Decision, len(parsed))
				for i, r := range parsed {
					out[i] = e.Score(r)
				}
				return out, e
			}
			a, ea := run()
			b, eb := run()
			bad := 0
			for i := range a {
				if d := decisionDiff(a[i], b[i]); d != "" {
					if bad++; bad <= 5 {
						t.Errorf("request %d (%s, %s): %s", i, flood[i].Family, flood[i].Account, d)
					}
				}
			}
			if bad > 0 {
				t.Fatalf("%d of %d decisions differ between two engines with the same seed", bad, len(a))
			}

			eva, evb := evictionsOf(t, ea), evictionsOf(t, eb)
			if eva != evb {
				t.Errorf("evictions differ: %+v vs %+v", eva, evb)
			}
			if sa, sb := ea.Stats(), eb.Stats(); sa != sb {
				t.Errorf("final state differs: %+v vs %+v", sa, sb)
			}
			t.Logf("%d requests, evictions %+v, final %+v", len(a), eva, ea.Stats())
			if tc.wantProb && eva.probEvicted+eva.probRejected == 0 {
				t.Errorf("probation tier never evicted: the replay does not exercise eviction")
			}
			if tc.wantMain && eva.mainEvicted+eva.mainRejected == 0 {
				t.Errorf("main tier never evicted: the replay does not exercise eviction")
			}
			if eva.clusters == 0 {
				t.Errorf("cluster table never evicted")
			}
			if eva.quarantine == 0 {
				t.Errorf("quarantine list never evicted")
			}
			flagged := 0
			for _, d := range a {
				if d.Verdict >= Degrade {
					flagged++
				}
			}
			if flagged == 0 {
				t.Errorf("no request flagged: the replay compares trivial decisions")
			}
		})
	}
}

// TestSeedDerivesKeys checks which keys Options.Seed fixes: without a
// configured secret the session ids follow the seed; with one they follow
// the secret alone; without a seed they are random per engine.
func TestSeedDerivesKeys(t *testing.T) {
	at := time.Date(2025, 3, 3, 9, 0, 0, 0, time.UTC)
	idOf := func(secret string, seed []byte) string {
		cfg := DefaultConfig()
		cfg.Secret = secret
		e, err := New(cfg, Options{Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		return e.Score(newClient("sk-seed-test", "203.0.113.9:5000").req(at, "hello there")).Session
	}
	const secret = "a-configured-secret-of-some-length"
	for _, tc := range []struct {
		name     string
		a, b     string
		wantSame bool
	}{
		{"same seed", idOf("", []byte("s1")), idOf("", []byte("s1")), true},
		{"other seed", idOf("", []byte("s1")), idOf("", []byte("s2")), false},
		{"secret wins over seed", idOf(secret, []byte("s1")), idOf(secret, []byte("s2")), true},
		{"secret without seed", idOf(secret, nil), idOf(secret, nil), true},
		{"no seed: random per engine", idOf("", nil), idOf("", nil), false},
	} {
		if got := tc.a == tc.b; got != tc.wantSame {
			t.Errorf("%s: ids %s and %s, want equal=%v", tc.name, tc.a, tc.b, tc.wantSame)
		}
	}
}

// TestUnseededEngineUsesRistretto: production engines keep ristretto.
func TestUnseededEngineUsesRistretto(t *testing.T) {
	e := newTestEngine(t, nil)
	if _, ok := e.main.(ristrettoTier); !ok {
		t.Errorf("main tier is %T, want ristrettoTier", e.main)
	}
	if _, ok := e.prob.(ristrettoTier); !ok {
		t.Errorf("probation tier is %T, want ristrettoTier", e.prob)
	}
}
