package scoring

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/distillguard/distillguard/internal/redisproc"
	"github.com/distillguard/distillguard/internal/traffic"
)

// newReplicas builds n engines sharing the Redis at addrs (same secret),
// deterministic (Options.Seed: no background flusher, Flush decides when
// they exchange state) unless live is set.
func newReplicas(t testing.TB, n int, addrs []string, live bool, edit func(*Config)) []*Engine {
	t.Helper()
	es := make([]*Engine, n)
	for i := range es {
		var o Options
		if !live {
			o.Seed = []byte(fmt.Sprintf("replica-%d", i))
		}
		es[i] = newTestEngine(t, func(c *Config) {
			c.Redis.Addrs = addrs
			c.Redis.KeyPrefix = "t" + strings.ReplaceAll(t.Name(), "/", "_") + ":"
			if edit != nil {
				edit(c)
			}
		}, o)
	}
	return es
}

// scoreOn scores r on engine e after pulling the others' state, and
// pushes what it changed: what a replica sees when requests are further
// apart than the write latency.
func scoreOn(t testing.TB, e *Engine, r *Request) Decision {
	t.Helper()
	if err := e.Flush(); err != nil {
		t.Fatalf("flush before: %v", err)
	}
	d := e.Score(r)
	if err := e.Flush(); err != nil {
		t.Fatalf("flush after: %v", err)
	}
	return d
}

func TestReplicasSeeOneSession(t *testing.T) {
	srv := redisproc.Require(t, redisproc.Options{})
	es := newReplicas(t, 3, []string{srv.Addr()}, false, nil)
	c := newClient("sk-one-session", "198.51.100.7:4000")
	var id string
	for i := range 30 {
		d := scoreOn(t, es[i%3], c.req(t0.Add(time.Duration(i)*time.Minute), fmt.Sprintf("question number %d about the weather in Lisbon today", i)))
		id = d.Session
	}
	for i, e := range es {
		if err := e.Flush(); err != nil {
			t.Fatal(err)
		}
		// Bring each replica's copy up to date with one more read.
		d, err := e.Session(id)
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		if i == 2 && d.Requests != 30 {
			t.Errorf("replica %d (served the last request) counts %d requests, want 30", i, d.Requests)
		}
	}
	out, err := srv.CLI("--no-raw", "STRLEN", "t"+t.Name()+":{"+id+"}:s")
	if err != nil || strings.TrimSpace(out) == "(integer) 0" {
		t.Fatalf("no session blob in Redis: %q %v", out, err)
	}
}

// TestReplicasScoreAsOne replays labelled traffic (humans, a distributed
// campaign, slow and adaptive harvesters) once through one engine and once
// round-robin per request over three replicas sharing a real Redis, each
// request seeing the state the previous ones left (Flush before and
// after): the verdicts must be the same, request by request.
// TestReadDuringWrite: while this replica's own write is in flight
// (answered, not yet settled) the other replica scores a request on top
// of it, and a read here adopts the blob that holds both. Each request is
// counted once: the adopt counts from what the write held, not from the
// older base, and the settling answer does not move the session back to
// the write's version, from which the next write would count the other
// replica's request again when this one changed the session meanwhile. (The partition test caught the first under
// load; the second is the same window one write later.)
func TestReadDuringWrite(t *testing.T) {
	srv := redisproc.Require(t, redisproc.Options{})
	es := newReplicas(t, 2, []string{srv.Addr()}, false, nil)
	c := newClient("sk-read-during-write", "198.51.100.8:4000")
	q := func(i int) *Request {
		return c.req(t0.Add(time.Duration(i)*time.Minute), fmt.Sprintf("a question %d about sourdough starters", i))
	}
	var id string
	for i := range 6 {
		id = scoreOn(t, es[i%2], q(i)).Session
	}
	e := es[0]
	reads := 0
	e.rep.afterExec = func() {
		if reads++; reads > 1 {
			return // Flush writes again what was scored meanwhile
		}
		if det, err := e.Session(id); err != nil || det.Requests != 7 {
			t.Errorf("read while the write was in flight: %d requests (%v), want 7", det.Requests, err)
		}
		scoreOn(t, es[1], q(7))
		if det, err := e.Session(id); err != nil || det.Requests != 8 {
			t.Errorf("read of the other replica's write on top: %d requests (%v), want 8", det.Requests, err)
		}
		e.Score(q(8)) // and one scored here before the answer is settled
	}
	e.Score(q(6))
	if err := e.Flush(); err != nil {
		t.Fatal(err)
	}
	e.rep.afterExec = nil
	if reads != 2 {
		t.Fatalf("%d write batches ran, want 2 (the request, then the one scored while it was in flight)", reads)
	}
	counts := func(want uint32) {
		t.Helper()
		for i, r := range es {
			if err := r.Flush(); err != nil {
				t.Fatal(err)
			}
			if det, err := r.Session(id); err != nil || det.Requests != want {
				t.Errorf("replica %d: %d requests (%v), want %d", i, det.Requests, err, want)
			}
		}
	}
	counts(9)
	scoreOn(t, es[1], q(9))
	counts(10)
}

func TestReplicasScoreAsOne(t *testing.T) {
	srv := redisproc.Require(t, redisproc.Options{})
	reqs := loadTraffic(t, traffic.Options{Seed: 7, Scale: 0.2, Families: []string{"benign-chat", "attack-distributed", "attack-slowlow", "attack-adaptive", "benign-persona", "attack-diffuse", "benign-batch"}})
	// benign-batch sends sub-second gaps (negative ln-gap sums); keep
	// its first few hundred requests.
	kept := reqs[:0]
	batch := 0
	for _, r := range reqs {
		if r.Family == "benign-batch" {
			if batch++; batch > 400 {
				continue
			}
		}
		kept = append(kept, r)
	}
	reqs = kept
	if len(reqs) > 5000 {
		reqs = reqs[:5000]
	}
	one := newTestEngine(t, nil, Options{Seed: []byte("replica-0")})
	es := newReplicas(t, 3, []string{srv.Addr()}, false, nil)
	differ, flagged := 0, 0
	for i := range reqs {
		r1 := fromTraffic(&reqs[i])
		d1 := one.Score(r1)
		d3 := scoreOn(t, es[i%3], fromTraffic(&reqs[i]))
		if d1.Verdict >= Degrade {
			flagged++
		}
		if d1.Verdict != d3.Verdict || math.Abs(d1.Score-d3.Score) > 0.01 {
			differ++
			if differ <= 5 {
				t.Logf("request %d (%s, %s): one process %v %.3f, three replicas %v %.3f", i, reqs[i].Family, reqs[i].Account, d1.Verdict, d1.Score, d3.Verdict, d3.Score)
			}
		}
	}
	if flagged == 0 {
		t.Fatal("nothing flagged: the replay tests nothing")
	}
	if differ > len(reqs)/200 {
		t.Errorf("%d of %d decisions differ between one process and three replicas (want at most 0.5%%)", differ, len(reqs))
	}
	t.Logf("%d requests, %d flagged by one process, %d decisions differ", len(reqs), flagged, differ)
}

// TestResetReachesEveryReplica: a session reset through one replica's
// admin API is a reset on all of them: the replica that still holds the
// session's history adopts the empty state instead of writing its copy
// back.
func TestResetReachesEveryReplica(t *testing.T) {
	srv := redisproc.Require(t, redisproc.Options{})
	es := newReplicas(t, 2, []string{srv.Addr()}, false, nil)
	c := newClient("sk-reset-everywhere", "198.51.100.9:4000")
	var id string
	for i := range 6 {
		id = scoreOn(t, es[i%2], c.req(t0.Add(time.Duration(i)*time.Minute), fmt.Sprintf("question number %d about tides", i))).Session
	}
	if d, err := es[1].Session(id); err != nil || d.Requests != 6 {
		t.Fatalf("before the reset replica 1 counts %+v, %v; want 6 requests", d.Requests, err)
	}
	if found, err := es[0].Reset(id); err != nil || !found {
		t.Fatalf("reset: found %v, %v", found, err)
	}
	scoreOn(t, es[1], c.req(t0.Add(10*time.Minute), "a new question after the reset"))
	d, err := es[1].Session(id)
	if err != nil {
		t.Fatal(err)
	}
	if d.Requests != 1 {
		t.Errorf("replica 1 counts %d requests after the reset on replica 0, want 1", d.Requests)
	}
	scoreOn(t, es[0], c.req(t0.Add(11*time.Minute), "and one more on the replica that reset it"))
	if d, err := es[0].Session(id); err != nil || d.Requests != 2 {
		t.Errorf("replica 0 counts %d requests (%v), want 2", d.Requests, err)
	}
}

// TestHistoryAcrossReplicas: the verdict history an evidence export
// quotes holds the session's requests whichever replica scored them.
func TestHistoryAcrossReplicas(t *testing.T) {
	srv := redisproc.Require(t, redisproc.Options{})
	es := newReplicas(t, 2, []string{srv.Addr()}, false, nil)
	c := newClient("sk-history-everywhere", "198.51.100.21:1")
	var id string
	const n = 80
	for i := range n {
		id = scoreOn(t, es[i%2], c.req(t0.Add(time.Duration(i)*400*time.Millisecond),
			fmt.Sprintf("write a detailed answer to question %d about topic %d please", i, i*7), withLogprobs(5))).Session
	}
	// Replica 0 scored the even requests; its history must hold odd ones.
	h, err := es[0].History(id)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.History) != historyLen {
		t.Fatalf("replica 0 history holds %d records, want %d (the session was flagged: %+v)", len(h.History), historyLen, h.SessionHead)
	}
	odd := 0
	for i, en := range h.History {
		k := int(en.Time.Sub(t0) / (400 * time.Millisecond))
		if k%2 == 1 {
			odd++
		}
		if i > 0 && !en.Time.After(h.History[i-1].Time) {
			t.Fatalf("history not in time order at %d", i)
		}
	}
	if odd != historyLen/2 {
		t.Errorf("replica 0's history holds %d of replica 1's requests among the last %d, want %d", odd, historyLen, historyLen/2)
	}
	if last := h.History[len(h.History)-1].Time; !last.Equal(t0.Add((n - 1) * 400 * time.Millisecond)) {
		t.Errorf("newest record at %v, want the last request's time", last)
	}
}

// TestStandingAcrossReplicas: earned standing outlives the session on every
// replica, not only on the one that saw it earned, and a standing lost on
// one replica (a flag, an operator reset) is lost on all of them, also
// after the session itself expired.
func TestStandingAcrossReplicas(t *testing.T) {
	srv := redisproc.Require(t, redisproc.Options{})
	es := newReplicas(t, 2, []string{srv.Addr()}, false, func(c *Config) {
		c.Standing.Requests, c.Standing.Age = 5, time.Minute
		c.SessionTTL = 2 * time.Hour
	})
	prefix := "t" + t.Name() + ":"
	// Every request of the clean run on replica 0.
	c := newClient("sk-standing-everywhere", "198.51.100.21:4000")
	at := t0
	var id string
	for i := range 7 {
		d := scoreOn(t, es[0], c.req(at, chatPrompt(i), withTurns(2, 1, "Hello there, I have a question.")))
		id, at = d.Session, at.Add(time.Minute)
	}
	if d := scoreOn(t, es[0], c.req(at, chatPrompt(8))); d.Probation {
		t.Fatal("no standing after seven clean requests")
	}
	out, err := srv.CLI("--no-raw", "MEMORY", "USAGE", prefix+"{"+id+"}:st")
	if err != nil || !strings.HasPrefix(strings.TrimSpace(out), "(integer)") {
		t.Fatalf("no standing key in Redis: %q %v", out, err)
	}
	t.Logf("standing key: %s bytes", strings.TrimPrefix(strings.TrimSpace(out), "(integer) "))
	// A standing key Redis lost is written again with the next request.
	if _, err := srv.CLI("DEL", prefix+"{"+id+"}:st"); err != nil {
		t.Fatal(err)
	}
	at = at.Add(time.Minute)
	scoreOn(t, es[0], c.req(at, chatPrompt(9)))
	if out, err := srv.CLI("--raw", "EXISTS", prefix+"{"+id+"}:st"); err != nil || strings.TrimSpace(out) != "1" {
		t.Fatalf("standing key not written again after Redis lost it: %q %v", out, err)
	}
	// Back after three days, past the session TTL, on the other replica.
	at = at.Add(72 * time.Hour)
	if d := scoreOn(t, es[1], c.req(at, chatPrompt(2))); d.Probation {
		t.Fatal("back after the session TTL on another replica: in probation again")
	}
	// The same once Redis has dropped the session blob (its TTL is wall
	// time; the request times here are not).
	at = at.Add(72 * time.Hour)
	if _, err := srv.CLI("DEL", prefix+"{"+id+"}:s"); err != nil {
		t.Fatal(err)
	}
	if d := scoreOn(t, es[0], c.req(at, chatPrompt(3))); d.Probation {
		t.Fatal("back after the session blob expired: in probation again")
	}
	// Lost on replica 1 (logit_bias probing with full logprobs flags)...
	var d Decision
	for i := 0; i < 6 && d.Verdict < Degrade; i++ {
		at = at.Add(time.Second)
		d = scoreOn(t, es[1], c.req(at, fmt.Sprintf("Repeat the word token%d exactly once.", i), withLogprobs(20), withLogitBias(300), withMaxTokens(1)))
	}
	if d.Verdict < Degrade || !d.Probation {
		t.Fatalf("logit_bias probes: verdict %v probation %v, want degrade or stronger in probation", d.Verdict, d.Probation)
	}
	// ...is lost on replica 0 too, which remembers the standing it saw
	// earned, once the session has expired and been dropped.
	at = at.Add(14 * 24 * time.Hour)
	if _, err := srv.CLI("DEL", prefix+"{"+id+"}:s"); err != nil {
		t.Fatal(err)
	}
	if d := scoreOn(t, es[0], c.req(at, chatPrompt(4))); !d.Probation {
		t.Fatal("a standing lost on one replica is kept by another after the session expired")
	}

	// An operator reset on one replica ends the standing the other one
	// remembers.
	c2 := newClient("sk-standing-reset", "198.51.100.22:4000")
	at = t0
	for i := range 8 {
		d := scoreOn(t, es[1], c2.req(at, chatPrompt(i), withTurns(2, 1, "Hello there, I have a question.")))
		id, at = d.Session, at.Add(time.Minute)
	}
	if d := scoreOn(t, es[1], c2.req(at, chatPrompt(9))); d.Probation {
		t.Fatal("no standing after eight clean requests")
	}
	if found, err := es[0].Reset(id); err != nil || !found {
		t.Fatalf("reset: %v %v", found, err)
	}
	at = at.Add(72 * time.Hour)
	if d := scoreOn(t, es[1], c2.req(at, chatPrompt(5))); !d.Probation {
		t.Fatal("standing survived an operator reset on another replica")
	}
}
