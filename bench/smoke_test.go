package bench

import (
	"context"
	"testing"
	"time"

	"github.com/distillguard/distillguard/config"
)

// TestSmoke is the CI smoke run: both servers in process on loopback, every
// scenario of the matrix for a moment each; any failed message fails it.
func TestSmoke(t *testing.T) {
	noopAddr := serveInProcess(t, NewNoop())
	for _, sc := range DefaultScenarios(4000) {
		t.Run(sc.Name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(sc.Config))
			if err != nil {
				t.Fatal(err)
			}
			dgAddr := serveConfig(t, cfg, nil)
			wl, err := BuildWorkload(sc.Workload, 1)
			if err != nil {
				t.Fatal(err)
			}
			// Scaled down so the race detector's goroutine limit and the
			// shared CI cores are not the subject of the test.
			conc, rate := min(sc.Concurrency, 64), sc.Rate
			if sc.Concurrency > conc && rate > 0 {
				rate = rate * float64(conc) / float64(sc.Concurrency)
			}
			for _, srv := range []struct{ name, addr string }{{NameNoop, noopAddr}, {NameDistillguard, dgAddr}} {
				res, err := Run(context.Background(), LoadConfig{
					Addr: srv.addr, Concurrency: conc, Warmup: 50 * time.Millisecond, Duration: 300 * time.Millisecond,
					Rate: rate, Mode: sc.Mode, Workload: wl, Seed: 1, DistinctSessions: sc.DistinctSessions,
				})
				if err != nil {
					t.Fatal(err)
				}
				if res.Errors != 0 {
					t.Fatalf("%s: %d errors: %v", srv.name, res.Errors, res.ErrorSamples)
				}
				if res.Messages == 0 {
					t.Fatalf("%s: no message measured", srv.name)
				}
				if srv.name == NameDistillguard && res.Rejected > 0 && !sc.DistinctSessions {
					t.Errorf("distillguard rejected %d exchanges with scoring off", res.Rejected)
				}
				t.Logf("%-12s %7d msgs %8.0f msg/s p50 %v p99 %v rejected %d", srv.name, res.Messages, res.MessagesPerSec(),
					res.Latency.Quantile(0.5), res.Latency.Quantile(0.99), res.Rejected)
			}
		})
	}
}
