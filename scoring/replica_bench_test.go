package scoring

import (
	"fmt"
	"testing"
	"time"

	"github.com/distillguard/distillguard/internal/redisproc"
)

// BenchmarkReplicatedScore scores requests of established sessions on two
// replicas in turn (each request finds the other replica's write), on a
// real redis-server, against the same traffic in process: the CPU and
// allocations replicated mode adds per request, the read included.
func BenchmarkReplicatedScore(b *testing.B) {
	srv := redisproc.Require(b, redisproc.Options{})
	const sessions = 512
	run := func(b *testing.B, es []*Engine) {
		b.ReportAllocs()
		t0 := time.Date(2025, 3, 3, 0, 0, 0, 0, time.UTC)
		i := 0
		for b.Loop() {
			e := es[i%len(es)]
			r := benchRequest(fmt.Sprintf("sk-rep-%d", i%sessions), fmt.Sprintf("question %d about the tides and the moon, explained for a child", i), t0.Add(time.Duration(i)*time.Millisecond))
			e.Prefetch(r)
			e.Score(r)
			i++
		}
	}
	b.Run("in-memory", func(b *testing.B) {
		e := newTestEngine(b, nil)
		run(b, []*Engine{e})
	})
	b.Run("replicated", func(b *testing.B) {
		mk := func() *Engine {
			return newTestEngine(b, func(c *Config) { c.Redis.Addrs = []string{srv.Addr()}; c.Redis.KeyPrefix = "bench:" })
		}
		run(b, []*Engine{mk(), mk()})
	})
}
