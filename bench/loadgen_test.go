package bench

import (
	"context"
	"testing"
	"time"
)

func TestRunAgainstNoop(t *testing.T) {
	addr := serveInProcess(t, NewNoop())
	cases := []struct {
		name string
		spec WorkloadSpec
		mode Mode
		rate float64
	}{
		{"streamed-top5", WorkloadSpec{Kind: KindStream, Tokens: 20, Mix: []MixEntry{{5, 1}}}, Streamed, 0},
		{"duplex-mix", WorkloadSpec{Kind: KindStream, Tokens: 20, Mix: []MixEntry{{0, 1}, {5, 1}, {20, 1}}}, FullDuplex, 0},
		{"open-loop", WorkloadSpec{Kind: KindStream, Tokens: 10}, Streamed, 2000},
		{"json", WorkloadSpec{Kind: KindJSON, JSONBytes: 20000}, Streamed, 0},
		{"embeddings", WorkloadSpec{Kind: KindEmbeddings, Dimensions: 256}, Streamed, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wl, err := BuildWorkload(tc.spec, 1)
			if err != nil {
				t.Fatal(err)
			}
			res, err := Run(context.Background(), LoadConfig{
				Addr: addr, Concurrency: 4, Warmup: 50 * time.Millisecond, Duration: 300 * time.Millisecond,
				Rate: tc.rate, Mode: tc.mode, Workload: wl, Seed: 7,
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Errors != 0 {
				t.Fatalf("%d errors: %v", res.Errors, res.ErrorSamples)
			}
			if res.Messages == 0 || res.Exchanges == 0 {
				t.Fatalf("nothing measured: %+v", res)
			}
			if res.Latency.Count != res.Messages {
				t.Errorf("histogram has %d values for %d messages", res.Latency.Count, res.Messages)
			}
			var sum uint64
			for _, h := range res.ByKind {
				sum += h.Count
			}
			if sum != res.Messages {
				t.Errorf("per-kind histograms hold %d values, want %d", sum, res.Messages)
			}
			if p50, p99 := res.Latency.Quantile(0.5), res.Latency.Quantile(0.99); p50 <= 0 || p99 < p50 {
				t.Errorf("p50 %v p99 %v", p50, p99)
			}
			t.Logf("%s: %d msgs %.0f msg/s p50 %v p99 %v", tc.name, res.Messages, res.MessagesPerSec(), res.Latency.Quantile(0.5), res.Latency.Quantile(0.99))
		})
	}
}
