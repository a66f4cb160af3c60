package scoring

import (
	"fmt"
	"testing"
	"time"

	"github.com/distillguard/distillguard/internal/redisproc"
)

// BenchmarkReplicatedScore scores requests of established sessions on two
// replicas in turn (each request finds the other replica's write), on a
// real redis-server, against the same traffic in process.
//
//   - replicated: the read started and waited for in the loop, so ns/op
//     is dominated by the Redis round trip;
//   - replicated-prefetched: each read started 64 requests ahead (as the
//     server starts it at the request headers, Envoy's round trip to send
//     the body letting it finish): the CPU replicated mode adds to a
//     request's path, to set against in-memory.
func BenchmarkReplicatedScore(b *testing.B) {
	srv := redisproc.Require(b, redisproc.Options{})
	const sessions = 512
	t0 := time.Date(2025, 3, 3, 0, 0, 0, 0, time.UTC)
	req := func(i int) *Request {
		return benchRequest(fmt.Sprintf("sk-rep-%d", i%sessions), fmt.Sprintf("question %d about the tides and the moon, explained for a child", i), t0.Add(time.Duration(i)*time.Millisecond))
	}
	run := func(b *testing.B, es []*Engine, ahead int) {
		b.ReportAllocs()
		for i := range ahead {
			es[i%len(es)].Prefetch(req(i))
		}
		i := 0
		for b.Loop() {
			e := es[i%len(es)]
			r := req(i)
			if ahead > 0 {
				es[(i+ahead)%len(es)].Prefetch(req(i + ahead))
			} else {
				e.Prefetch(r)
			}
			e.Score(r)
			i++
		}
	}
	mk := func(prefix string) func() *Engine {
		return func() *Engine {
			return newTestEngine(b, func(c *Config) { c.Redis.Addrs = []string{srv.Addr()}; c.Redis.KeyPrefix = prefix })
		}
	}
	b.Run("in-memory", func(b *testing.B) {
		run(b, []*Engine{newTestEngine(b, nil)}, 64)
	})
	b.Run("replicated", func(b *testing.B) {
		m := mk("bench:")
		run(b, []*Engine{m(), m()}, 0)
	})
	b.Run("replicated-prefetched", func(b *testing.B) {
		m := mk("benchp:")
		run(b, []*Engine{m(), m()}, 64)
	})
}
