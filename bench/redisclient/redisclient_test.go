package redisclient

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"

	"github.com/distillguard/distillguard/internal/redisproc"
)

// The write script distillguard runs (scoring/replica.go): compare the
// blob's header, write, or answer with the newer blob.
const cas = `local cur = redis.call('GET', KEYS[1])
if ARGV[4] == '1' or ((not cur) and ARGV[1] == '') or (cur and string.sub(cur, 5, 20) == ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
if not cur then return 0 end
return cur`

const (
	sessions  = 4096
	blobBytes = 600
	batch     = 64
)

func key(i int) string { return fmt.Sprintf("bench:{%032x}:s", i) }

func sha() string {
	s := sha1.Sum([]byte(cas))
	return hex.EncodeToString(s[:])
}

func setup(b *testing.B) string {
	srv := redisproc.Require(b, redisproc.Options{})
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{srv.Addr()}, DisableCache: true})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	blob := make([]byte, blobBytes)
	cmds := make(rueidis.Commands, 0, sessions)
	for i := range sessions {
		cmds = append(cmds, c.B().Set().Key(key(i)).Value(rueidis.BinaryString(blob)).Build())
	}
	for _, r := range c.DoMulti(ctx, cmds...) {
		if err := r.Error(); err != nil {
			b.Fatal(err)
		}
	}
	if err := c.Do(ctx, c.B().ScriptLoad().Script(cas).Build()).Error(); err != nil {
		b.Fatal(err)
	}
	return srv.Addr()
}

// BenchmarkGet: concurrent session reads, 32 goroutines per core.
func BenchmarkGet(b *testing.B) {
	addr := setup(b)
	b.Run("rueidis", func(b *testing.B) {
		c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		b.SetParallelism(32)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				i++
				if _, err := c.Do(context.Background(), c.B().Get().Key(key(i%sessions)).Build()).AsBytes(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("go-redis", func(b *testing.B) {
		c := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 64})
		defer c.Close()
		b.SetParallelism(32)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				i++
				if _, err := c.Get(context.Background(), key(i%sessions)).Bytes(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkFlush: one write-behind batch per op.
func BenchmarkFlush(b *testing.B) {
	addr := setup(b)
	blob := string(make([]byte, blobBytes))
	delta := string(make([]byte, 2048))
	b.Run("rueidis", func(b *testing.B) {
		c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		sum := sha()
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			cmds := make(rueidis.Commands, 0, batch+2)
			for j := range batch {
				cmds = append(cmds, c.B().Evalsha().Sha1(sum).Numkeys(1).Key(key((i*batch+j)%sessions)).Arg("", blob, "60000", "1").Build())
			}
			cmds = append(cmds, c.B().Xadd().Key("bench:{agg}:log").Maxlen().Almost().Threshold("1000").Id("*").FieldValue().FieldValue("d", delta).Build(),
				c.B().Xread().Count(16).Streams().Key("bench:{agg}:log").Id("$").Build())
			for _, r := range c.DoMulti(context.Background(), cmds...) {
				if err := r.Error(); err != nil && !rueidis.IsRedisNil(err) {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("go-redis", func(b *testing.B) {
		c := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 64})
		defer c.Close()
		sum := sha()
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			p := c.Pipeline()
			for j := range batch {
				p.EvalSha(context.Background(), sum, []string{key((i*batch + j) % sessions)}, "", blob, "60000", "1")
			}
			p.XAdd(context.Background(), &redis.XAddArgs{Stream: "bench:{agg}:log", MaxLen: 1000, Approx: true, Values: []any{"d", delta}})
			p.XRead(context.Background(), &redis.XReadArgs{Streams: []string{"bench:{agg}:log", "$"}, Count: 16, Block: -1})
			if _, err := p.Exec(context.Background()); err != nil && err != redis.Nil {
				b.Fatal(err)
			}
		}
	})
}
