package bench

import (
	"strings"
	"testing"
	"time"
)

// BenchmarkRewriteFloor is the in-process cost per response body message of
// the rewrite alone (mutate.SSEStream + mutate.Rewriter, no gRPC) for the
// matrix scenarios: what a proxy-embedded build would pay.
func BenchmarkRewriteFloor(b *testing.B) {
	for _, sc := range DefaultScenarios(1) {
		switch sc.Name {
		case "passthrough", "default-top5", "default-mix", "degrade-top5", "json-100k", "embeddings-3072":
		default:
			continue
		}
		b.Run(sc.Name, func(b *testing.B) {
			wl, err := BuildWorkload(sc.Workload, 1)
			if err != nil {
				b.Fatal(err)
			}
			p, err := sc.outputPolicy()
			if err != nil {
				b.Fatal(err)
			}
			var xs []*exchange
			for _, v := range wl.exchanges {
				xs = append(xs, v...)
			}
			var dst []byte
			var msgs, bytes int
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				x := xs[i%len(xs)]
				dst = rewriteExchange(x, p, uint64(i), 1<<20, dst)
				msgs += len(x.raw)
				for _, r := range x.raw {
					bytes += len(r)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(msgs), "ns/msg")
			b.ReportMetric(float64(bytes)/float64(msgs), "B-in/msg")
		})
	}
}

func TestRewriteFloorMeasures(t *testing.T) {
	wl, err := BuildWorkload(WorkloadSpec{Kind: KindStream, Tokens: 20}, 1)
	if err != nil {
		t.Fatal(err)
	}
	sc := DefaultScenarios(1)[1]
	p, err := sc.outputPolicy()
	if err != nil {
		t.Fatal(err)
	}
	if p.MaxAlternatives != 5 || p.RoundDecimals != 2 {
		t.Errorf("default allow policy resolved to %+v, want round 2 / cap 5", p)
	}
	f := RewriteFloor(wl, p, 20*time.Millisecond)
	if f.Messages < 24 || f.NsPerMsg <= 0 {
		t.Errorf("floor %+v", f)
	}
}

func TestScenarioConfigsResolve(t *testing.T) {
	for _, sc := range DefaultScenarios(1000) {
		p, err := sc.outputPolicy()
		if err != nil {
			t.Fatalf("%s: %v", sc.Name, err)
		}
		if sc.Name == "degrade-top5" && (p.MaxAlternatives != 0 || p.Perturb == 0) {
			t.Errorf("degrade scenario's allow tier is %+v, want the degrade tier", p)
		}
	}
	if _, err := SelectScenarios(DefaultScenarios(1), "nope"); err == nil || !strings.Contains(err.Error(), "default-top5") {
		t.Errorf("unknown scenario error %v should list the known ones", err)
	}
}
