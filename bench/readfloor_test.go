package bench

import (
	"context"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/distillguard/distillguard/internal/redisproc"
)

// TestReadFloor: the floor refuses every request at its body, as
// distillguard refuses the bench's blocked sessions, and with a client it
// makes exactly one MGET per request, of keys SeedReadFloor stored.
func TestReadFloor(t *testing.T) {
	srv := redisproc.Require(t, redisproc.Options{})
	c, err := rueidis.NewClient(ReadFloorOptions(srv.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	const sessions = 16
	if err := SeedReadFloor(ctx, c, sessions, time.Minute); err != nil {
		t.Fatal(err)
	}
	// The load generator's session keys are the ones stored.
	k, _ := readFloorKeys("Bearer sk-bench-f")
	if v, err := c.Do(ctx, c.B().Get().Key(k).Build()).ToString(); err != nil || len(v) != readFloorBlob {
		t.Fatalf("seeded key %s: %d bytes, %v", k, len(v), err)
	}
	wl, err := BuildWorkload(WorkloadSpec{Kind: KindStream, Tokens: 5, Variants: 1}, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		client rueidis.Client
	}{{"floor", nil}, {"floor+read", c}} {
		t.Run(tc.name, func(t *testing.T) {
			before := mgets(t, c)
			addr := serveInProcess(t, NewReadFloor(tc.client, time.Second))
			res, err := Run(ctx, LoadConfig{Addr: addr, Concurrency: 3, Duration: 10 * time.Second, Exchanges: 30, Workload: wl, Sessions: sessions})
			if err != nil {
				t.Fatal(err)
			}
			if res.Errors != 0 || res.Exchanges < 30 {
				t.Fatalf("%d exchanges, %d errors", res.Exchanges, res.Errors)
			}
			if n := res.ByKind[KindReqBody].Count; n != res.Exchanges || res.ByKind[KindRespHeaders].Count != 0 {
				t.Errorf("%d request bodies and %d response headers for %d exchanges: every request should be refused at its body",
					n, res.ByKind[KindRespHeaders].Count, res.Exchanges)
			}
			want := int64(0)
			if tc.client != nil {
				want = int64(res.Exchanges)
			}
			if got := mgets(t, c) - before; got != want {
				t.Errorf("%d MGETs for %d exchanges, want %d", got, res.Exchanges, want)
			}
		})
	}
}

func mgets(t *testing.T, c rueidis.Client) int64 {
	t.Helper()
	m, err := commandStats(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	return m["mget"]
}

// TestReadFloorFailedRead: a read that cannot reach Redis fails the
// stream; the floor never answers as if it had read.
func TestReadFloorFailedRead(t *testing.T) {
	srv := redisproc.Require(t, redisproc.Options{})
	c, err := rueidis.NewClient(ReadFloorOptions(srv.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	defer c.Close()
	wl, err := BuildWorkload(WorkloadSpec{Kind: KindStream, Tokens: 5, Variants: 1}, 1)
	if err != nil {
		t.Fatal(err)
	}
	addr := serveInProcess(t, NewReadFloor(c, 50*time.Millisecond))
	res, err := Run(context.Background(), LoadConfig{Addr: addr, Concurrency: 1, Duration: 5 * time.Second, Exchanges: 3, Workload: wl})
	if err == nil && res.Errors == 0 {
		t.Fatalf("no error with Redis down: %+v", res)
	}
}
