package scoring

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/distillguard/distillguard/internal/redisproc"
)

// metricSums collects counters and gauges by name and attributes.
func metricSums(t testing.TB, reader *sdkmetric.ManualReader) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	sums := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			var dps []metricdata.DataPoint[int64]
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				dps = d.DataPoints
			case metricdata.Gauge[int64]:
				dps = d.DataPoints
			}
			for _, dp := range dps {
				key := m.Name
				for _, kv := range dp.Attributes.ToSlice() {
					key += "," + string(kv.Key) + "=" + kv.Value.String()
				}
				sums[key] += dp.Value
			}
		}
	}
	return sums
}

// liveReplicas are replicas with background flushers (ristretto caches, as
// in production), a short call deadline and a quick breaker.
func liveReplicas(t *testing.T, n int, addrs []string) ([]*Engine, []*sdkmetric.ManualReader) {
	t.Helper()
	es := make([]*Engine, n)
	rs := make([]*sdkmetric.ManualReader, n)
	for i := range es {
		rs[i] = sdkmetric.NewManualReader()
		es[i] = newTestEngine(t, func(c *Config) {
			c.Redis.Addrs = addrs
			c.Redis.KeyPrefix = "live:"
			c.Redis.CallTimeout = 20 * time.Millisecond
			c.Redis.Breaker = RedisBreaker{Failures: 3, OpenFor: 200 * time.Millisecond, HalfOpenProbes: 1}
		}, Options{MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(rs[i]))})
	}
	return es, rs
}

// harvest is a harvester's request: logit_bias with top-20 logprobs and
// one token (blocked on its first requests).
func harvest(c *client, i int) *Request {
	return c.req(t0.Add(time.Duration(i)*time.Second), fmt.Sprintf("probe %d of the vocabulary: continue the text", i), withLogitBias(300), withLogprobs(20), withMaxTokens(1))
}

// waitFlush retries Flush until Redis answers (the breaker half-opens
// after open_for, the client reconnects).
func waitFlush(t *testing.T, e *Engine) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for e.Flush() != nil {
		if time.Now().After(deadline) {
			t.Fatal("Redis did not come back within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRedisKilledAndRestartedEmpty: Redis dies mid-replay, the replicas
// keep answering within the deadline on local state, and when it comes
// back empty they rewrite what they know: history held in Redis alone is
// lost, verdicts are not.
func TestRedisKilledAndRestartedEmpty(t *testing.T) {
	srv := redisproc.Require(t, redisproc.Options{})
	es, rs := liveReplicas(t, 2, []string{srv.Addr()})
	c := newClient("sk-killed", "203.0.113.9:7000")
	var d Decision
	for i := range 20 {
		e := es[i%2]
		waitFlush(t, e)
		d = e.Score(harvest(c, i))
		waitFlush(t, e)
	}
	if d.Verdict != Block {
		t.Fatalf("harvester not blocked before the failure: %v %.3f", d.Verdict, d.Score)
	}
	srv.Kill()
	var slowest time.Duration
	for i := 20; i < 60; i++ {
		start := time.Now()
		d = es[i%2].Score(harvest(c, i))
		slowest = max(slowest, time.Since(start))
		if d.Verdict != Block {
			t.Fatalf("request %d with Redis down: %v, want block (no flapping)", i, d.Verdict)
		}
	}
	// The deadline is 20 ms and the breaker opens after 3 failures; a
	// request never waits for Redis much longer than the deadline.
	if slowest > 250*time.Millisecond {
		t.Errorf("slowest request with Redis down took %v", slowest)
	}
	sums := metricSums(t, rs[0])
	if sums["distillguard.redis.breaker.state"] != 2 && sums["distillguard.redis.fallbacks,reason=breaker_open"] == 0 {
		t.Errorf("breaker never opened: %v", sums)
	}
	if sums["distillguard.redis.fallbacks,reason=disconnected"]+sums["distillguard.redis.fallbacks,reason=error"]+
		sums["distillguard.redis.fallbacks,reason=timeout"]+sums["distillguard.redis.fallbacks,reason=breaker_open"] == 0 {
		t.Errorf("no fallback counted: %v", sums)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	for i := 60; i < 70; i++ {
		e := es[i%2]
		waitFlush(t, e)
		if d = e.Score(harvest(c, i)); d.Verdict != Block {
			t.Fatalf("request %d after the restart: %v, want block", i, d.Verdict)
		}
		waitFlush(t, e)
	}
	out, err := srv.CLI("--raw", "EXISTS", "live:{"+d.Session+"}:s")
	if err != nil || strings.TrimSpace(out) != "1" {
		t.Fatalf("session not rewritten after the restart: %q %v", out, err)
	}
	det, err := es[1].Session(d.Session)
	if err != nil {
		t.Fatal(err)
	}
	if det.Requests < 40 {
		t.Errorf("replica 1 counts %d requests after the restart: local history was lost", det.Requests)
	}
}

// TestRedisPartitioned: the server stops answering (SIGSTOP, connections
// open, as in a partition); requests stay within the deadline, the
// breaker opens; when it answers again the queued changes are written.
func TestRedisPartitioned(t *testing.T) {
	srv := redisproc.Require(t, redisproc.Options{})
	es, rs := liveReplicas(t, 2, []string{srv.Addr()})
	c := newClient("sk-partition", "203.0.113.10:7000")
	var d Decision
	for i := range 10 {
		e := es[i%2]
		waitFlush(t, e)
		d = e.Score(c.req(t0.Add(time.Duration(i)*time.Minute), fmt.Sprintf("an ordinary question %d about cooking rice", i)))
		waitFlush(t, e)
	}
	if err := srv.Pause(); err != nil {
		t.Fatal(err)
	}
	var slowest time.Duration
	for i := 10; i < 40; i++ {
		start := time.Now()
		es[0].Score(c.req(t0.Add(time.Duration(i)*time.Minute), fmt.Sprintf("an ordinary question %d about cooking rice", i)))
		slowest = max(slowest, time.Since(start))
	}
	if slowest > 250*time.Millisecond {
		t.Errorf("slowest request with Redis paused took %v", slowest)
	}
	sums := metricSums(t, rs[0])
	if sums["distillguard.redis.fallbacks,reason=timeout"] == 0 || sums["distillguard.redis.fallbacks,reason=breaker_open"] == 0 {
		t.Errorf("timeouts and breaker not counted: %v", sums)
	}
	if err := srv.Resume(); err != nil {
		t.Fatal(err)
	}
	waitFlush(t, es[0])
	waitFlush(t, es[1])
	// Catch-up: replica 1 sees what replica 0 scored during the partition.
	es[1].Score(c.req(t0.Add(41*time.Minute), "one more question about cooking rice"))
	det, err := es[1].Session(d.Session)
	if err != nil {
		t.Fatal(err)
	}
	if det.Requests != 41 {
		t.Errorf("after the partition replica 1 counts %d requests, want 41", det.Requests)
	}
}

// TestReplicasOnCluster: a 3-node Redis Cluster; the session's slot moves
// to another node mid-way (MOVED), and the client follows it.
func TestReplicasOnCluster(t *testing.T) {
	cl := redisproc.RequireCluster(t, 3)
	es, _ := liveReplicas(t, 3, cl.Addrs())
	c := newClient("sk-cluster", "203.0.113.11:7000")
	var d Decision
	send := func(from, to int) {
		for i := from; i < to; i++ {
			e := es[i%3]
			waitFlush(t, e)
			d = e.Score(c.req(t0.Add(time.Duration(i)*time.Minute), fmt.Sprintf("question %d about the history of Rome", i)))
			waitFlush(t, e)
		}
	}
	send(0, 12)
	key := "live:{" + d.Session + "}:s"
	slot, owner, err := cl.SlotOf(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.MoveSlot(slot, owner, (owner+1)%3); err != nil {
		t.Fatal(err)
	}
	send(12, 24)
	det, err := es[2].Session(d.Session)
	if err != nil {
		t.Fatal(err)
	}
	if det.Requests != 24 {
		t.Errorf("replica 2 counts %d requests, want 24", det.Requests)
	}
	_, now, err := cl.SlotOf(key)
	if err != nil || now == owner {
		t.Errorf("slot did not move: owner %d, was %d (%v)", now, owner, err)
	}
}

// TestCampaignAcrossReplicasAndSnapshot: eight accounts share a wrapper,
// each account's requests on another replica; a newcomer on any replica
// is flagged for the campaign, and so is one on a replica that starts
// afterwards (it loads the snapshot of the merged sketches).
func TestCampaignAcrossReplicasAndSnapshot(t *testing.T) {
	srv := redisproc.Require(t, redisproc.Options{})
	// A wrapper of the campaign's own (not a published format, which
	// would count against a session on its own).
	const w = "Acting as the corpus builder for our tuning set, answer the item below in full detail, then restate the answer as a numbered list of key facts.\n\nItem: %s"
	mk := func() *Engine {
		return newTestEngine(t, func(c *Config) {
			c.Redis.Addrs = []string{srv.Addr()}
			c.Redis.KeyPrefix = "snap:"
			c.Redis.SnapshotInterval = time.Second
		})
	}
	es := []*Engine{mk(), mk(), mk()}
	n := 0
	for a := 0; a < 8; a++ {
		c := newClient(fmt.Sprintf("sk-campaign-%d", a), fmt.Sprintf("%d.0.%d.9:4000", 11+a, a))
		for i := 0; i < 4; i++ {
			e := es[n%3]
			n++
			waitFlush(t, e)
			e.Score(c.req(t0.Add(time.Duration(a)*time.Minute+time.Duration(i)*3*time.Minute), fmt.Sprintf(w, distinctPrompt(100*a+i))))
			waitFlush(t, e)
		}
	}
	newcomer := func(e *Engine, token string) float64 {
		c := newClient(token, "93.184.216.34:4000")
		var d Decision
		for i := 0; i < 3; i++ {
			waitFlush(t, e)
			d = e.Score(c.req(t0.Add(time.Hour+time.Duration(i)*3*time.Minute), fmt.Sprintf(w, distinctPrompt(5000+i))))
			waitFlush(t, e)
		}
		return strength(d, "campaign")
	}
	for i, e := range es {
		if s := newcomer(e, fmt.Sprintf("sk-newcomer-%d", i)); s < 0.5 {
			t.Errorf("replica %d: campaign strength %.3f for a newcomer, want >= 0.5", i, s)
		}
	}
	// Replica 0 writes the snapshot (its first flush did, and again one
	// snapshot_interval later); a replica started now loads it.
	time.Sleep(1100 * time.Millisecond)
	waitFlush(t, es[0])
	if out, err := srv.CLI("--raw", "EXISTS", "snap:{agg}:snap"); err != nil || strings.TrimSpace(out) != "1" {
		t.Fatalf("no snapshot in Redis: %q %v", out, err)
	}
	// Trim the log to nothing: the history must come from the snapshot.
	if _, err := srv.CLI("XTRIM", "snap:{agg}:log", "MAXLEN", "0"); err != nil {
		t.Fatal(err)
	}
	late := mk()
	if s := newcomer(late, "sk-newcomer-late"); s < 0.5 {
		t.Errorf("a replica started after the campaign: campaign strength %.3f, want >= 0.5 (snapshot not loaded)", s)
	}
	alone := newTestEngine(t, nil)
	if s := newcomer(alone, "sk-newcomer-alone"); s != 0 {
		t.Errorf("a process without the shared state sees campaign strength %.3f: the test proves nothing", s)
	}
}

// TestWriteDelayBatchesWrites: writes queued within write_delay of the
// last batch go out together in the next one, and an idle replica writes
// at once. The delay (2 s) is far longer than scoring ten requests takes,
// and flush_interval (10 s) keeps the aggregate ticker out of the window.
func TestWriteDelayBatchesWrites(t *testing.T) {
	srv := redisproc.Require(t, redisproc.Options{})
	reader := sdkmetric.NewManualReader()
	e := newTestEngine(t, func(c *Config) {
		c.Redis.Addrs = []string{srv.Addr()}
		c.Redis.KeyPrefix = "delay:"
		c.Redis.FlushInterval = 10 * time.Second
		c.Redis.WriteDelay = 2 * time.Second
	}, Options{MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))})
	const okBatches = "distillguard.redis.flush.batches,result=ok"
	waitWritten := func(ids ...string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for _, id := range ids {
			for {
				out, err := srv.CLI("EXISTS", "delay:{"+id+"}:s")
				if err == nil && strings.TrimSpace(out) == "1" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("session %s not written within 15s (%q, %v)", id, out, err)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	first := e.Score(newClient("sk-delay-first", "198.51.100.20:1000").req(t0, "what is the capital of Portugal")).Session
	waitWritten(first)
	before := metricSums(t, reader)[okBatches]
	var ids []string
	for i := range 10 {
		c := newClient(fmt.Sprintf("sk-delay-%d", i), fmt.Sprintf("198.51.100.%d:1000", 30+i))
		ids = append(ids, e.Score(c.req(t0, fmt.Sprintf("question %d about tide tables in Porto", i))).Session)
	}
	waitWritten(ids...)
	if got := metricSums(t, reader)[okBatches] - before; got != 1 {
		t.Errorf("ten sessions queued within write_delay went out in %d batches, want 1", got)
	}
}
