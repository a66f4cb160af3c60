package scoring

import (
	"context"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // the name Redis gives scripts, not a security measure
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
	"github.com/sony/gobreaker/v2"
)

// Replicated mode (scoring.redis.addrs): N distillguard replicas behind
// Envoy, each stream on any replica, share their scoring state through
// Redis (standalone or Redis Cluster; Valkey alike), so a session split
// over replicas is scored as one session and a campaign spread over them
// as one campaign.
//
// What lives where:
//
//   - Sessions: the local ristretto caches stay the hot store. Redis holds
//     one blob per session under <prefix>{<session id>}:s (the hash tag
//     puts everything of a session in one cluster slot). The request path
//     makes one bounded call: an MGET of the session's blob and of the
//     identity's standing key (<prefix>{<session id>}:st, written with
//     the blob when standing is earned or lost: it outlives the session,
//     standingToWrite), merged into the local copy before scoring
//     (replica_state.go). The request's
//     changes are written behind, as soon as the previous write batch is
//     done: one compare-and-set script call per session, many sessions
//     pipelined in one round trip.
//   - Cross-account aggregates (template sketch, cohort sketch, link
//     clusters): pushed every flush_interval as one batch of deltas to the
//     stream <prefix>{agg}:log, from which every replica reads the
//     others' batches (replica_agg.go); one replica at a time writes the
//     merged sketches to <prefix>{agg}:snap every snapshot_interval, from
//     which a starting replica loads the history.
//
// Every key has a TTL: session blobs session_ttl (refreshed by every
// write), the log and the snapshot campaign_window. A session blob is 323
// bytes plus its shingle filters (32 bytes for one or two requests, up to
// 2 x 512 bytes), its writer list (up to 8 x 16 bytes) and, once the
// session was at a tier other than allow, its verdict history (up to 16 x
// 47 bytes, plus prompt bytes when evidence keeps them): MEMORY USAGE on
// the sessions of a replicated lab replay reported 504 to 1,656 bytes,
// median 760, before the history was added (README, Replicated mode).
//
// Failure semantics: every call has a deadline (call_timeout, default
// 30 ms, far under Envoy's 0.5 s message_timeout) and goes through a
// circuit breaker. A failed or skipped read scores the request on local
// state (diluted across replicas, never wrong); unwritten changes stay
// queued (bounded by max_pending) and are written when Redis answers
// again. A Redis that lost its data costs the history it held: a missing
// blob is rewritten from the local copy, the log restarts, and the next
// snapshot is written from a replica's merged sketches.
//
// Client: github.com/redis/rueidis. bench/redisclient measures this access
// pattern (one GET per request from many goroutines, batched
// compare-and-set scripts and stream appends) against a real
// redis-server with rueidis and go-redis/v9: rueidis' automatic
// pipelining puts concurrent GETs from all goroutines on one connection
// without a pool, which gives lower latency at high concurrency, and it
// follows cluster topology (MOVED, ASK) itself. The reads have a client
// (and so a connection per node) of their own, apart from the write
// batches (rueidisBox).
type replica struct {
	e      *Engine
	cfg    RedisConfig
	writer uint64 // this replica's id in blob headers and batches
	seq    atomic.Uint64
	ttl    time.Duration
	aggTTL time.Duration
	manual bool // no background flusher: Flush alone writes (replays)
	log    *slog.Logger

	client atomic.Pointer[rueidisBox]
	casSHA string // SHA-1 of casScript, as EVALSHA names it
	opt    rueidis.ClientOption
	br     *gobreaker.CircuitBreaker[struct{}]
	brSt   atomic.Int64
	m      *replicaMetrics

	mu      sync.Mutex
	pending map[[16]byte]*session
	unsent  [][]byte // aggregate batches a failed flush could not write

	flushMu sync.Mutex // one flush at a time
	// afterExec, when set (tests only), runs after a write batch is
	// answered and before its answers are settled: the window in which
	// a concurrent read may adopt a blob holding a write not yet settled.
	afterExec func()
	lastID    string       // stream position read up to
	loaded    bool         // snapshot loaded (or none existed)
	lastAgg   atomic.Int64 // unix nanoseconds of the last aggregate exchange
	lastSnap  time.Time

	// pre holds the session reads started at request headers
	// (Prefetch), by session id: *prefetch.
	pre     sync.Map
	preN    atomic.Int64
	preDone sync.WaitGroup

	kick chan struct{}
	stop chan struct{}
	done sync.WaitGroup
}

// prefetch is a session read started before the request body arrived.
type prefetch struct {
	done chan struct{}
	at   time.Time
	res  fetched
}

// maxPrefetch bounds the reads in flight or waiting for their request.
const maxPrefetch = 1 << 14

// rueidisBox holds the two clients: reads on the request path (rd) and
// everything else (c: write batches, the aggregate log, snapshots). Each
// auto-pipelines its commands on its own connection per node, and Redis
// answers a connection's commands in order: a request's GET on the
// connection that carries a batch of hundreds of compare-and-set writes
// waits for the whole batch (measured: 2 ms per GET on loopback at 900
// requests/s, all of it behind the batches). On a connection of its own
// it waits for other GETs only.
type rueidisBox struct{ c, rd rueidis.Client }

func netDialer(timeout time.Duration) net.Dialer {
	return net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
}

// Key layout (under cfg.KeyPrefix).
func (r *replica) sessionKey(id string) string { return r.cfg.KeyPrefix + "{" + id + "}:s" }

// standKey holds an identity's earned standing past the session's TTL
// (scoring.standing.remember): the request time it lasts until, in decimal
// nanoseconds, "0" once it was lost. Same slot as the session blob.
func (r *replica) standKey(id string) string { return r.cfg.KeyPrefix + "{" + id + "}:st" }
func (r *replica) logKey() string            { return r.cfg.KeyPrefix + "{agg}:log" }
func (r *replica) snapKey() string           { return r.cfg.KeyPrefix + "{agg}:snap" }
func (r *replica) lockKey() string           { return r.cfg.KeyPrefix + "{agg}:lock" }

// casScript writes ARGV[2] (PX ARGV[3]) when the stored blob's
// incarnation and version (bytes 5..20) are ARGV[1], when there is no blob
// and ARGV[1] is empty, or when ARGV[4] is "1" (the stored blob cannot be
// read); it returns 1 then, and with it writes the standing ARGV[5] to
// KEYS[2] (PX ARGV[6]) unless ARGV[5] is empty. Otherwise it returns 0
// when the key is gone and the stored blob when another replica wrote
// first.
const casScript = `local cur = redis.call('GET', KEYS[1])
if ARGV[4] == '1' or ((not cur) and ARGV[1] == '') or (cur and string.sub(cur, 5, 20) == ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  if ARGV[5] ~= '' then redis.call('SET', KEYS[2], ARGV[5], 'PX', ARGV[6]) end
  return 1
end
if not cur then return 0 end
return cur`

func newReplica(e *Engine, cfg Config, opts Options) (*replica, error) {
	rc := cfg.Redis
	tc, err := rc.tlsConfig()
	if err != nil {
		return nil, err
	}
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	r := &replica{
		e: e, cfg: rc, writer: binary.LittleEndian.Uint64(id[:]) | 1, ttl: cfg.SessionTTL, aggTTL: max(cfg.CampaignWindow, time.Hour),
		manual: len(opts.Seed) > 0, log: e.log, pending: map[[16]byte]*session{}, lastID: "0-0",
		kick: make(chan struct{}, 1), stop: make(chan struct{}), casSHA: scriptSHA(casScript),
	}
	r.opt = rueidis.ClientOption{
		InitAddress: rc.Addrs, Username: rc.Username, Password: rc.Password, SelectDB: rc.DB, TLSConfig: tc,
		ClientName: "distillguard",
		// Server-assisted client-side caching would invalidate on nearly
		// every read (each request's session is rewritten by the replica
		// that served the previous one): off.
		DisableCache: true,
		Dialer:       netDialer(rc.DialTimeout),
		// Failed calls are not retried within a request: the deadline
		// would pass; the breaker and the write queue deal with them.
		DisableRetry:     true,
		ConnWriteTimeout: max(rc.CallTimeout*10, 500*time.Millisecond),
		// Commands issued within 20 µs of each other share one write
		// syscall (rueidis' MaxFlushDelay): under load this is most of
		// the client's CPU, and the request-path read, started at the
		// request headers, has the headers round trip to spare.
		MaxFlushDelay: 20 * time.Microsecond,
	}
	r.br = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        "redis",
		MaxRequests: uint32(rc.Breaker.HalfOpenProbes),
		Timeout:     rc.Breaker.OpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= uint32(rc.Breaker.Failures) },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			r.brSt.Store(int64(to))
			r.log.Warn("scoring: redis circuit breaker", "from", from.String(), "to", to.String())
		},
	})
	if r.m, err = newReplicaMetrics(opts.MeterProvider, r); err != nil {
		return nil, err
	}
	e.trackDeltas()
	if err := r.connect(); err != nil {
		// Start anyway, on local state: Redis may come up after us (a
		// rollout, a restarted pod). The flusher keeps trying.
		r.log.Warn("scoring: redis unreachable at start, scoring on local state until it answers", "addrs", strings.Join(rc.Addrs, ","), "error", err.Error())
	}
	if !r.manual {
		r.done.Add(1)
		go r.run()
	}
	return r, nil
}

// connect builds the client (discovering cluster or standalone) and loads
// the snapshot. The client is kept only if the snapshot could be read.
func (r *replica) connect() error {
	if r.client.Load() != nil {
		return nil
	}
	start := time.Now()
	c, err := rueidis.NewClient(r.opt)
	var rd rueidis.Client
	if err == nil {
		if rd, err = rueidis.NewClient(r.opt); err != nil {
			c.Close()
		}
	}
	if err != nil {
		r.m.call("connect", start, err)
		return err
	}
	r.m.call("connect", start, nil)
	// Load the write script on every node now, so the first writes do not
	// meet NOSCRIPT (they would be queued again, not lost).
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.DialTimeout)
	for _, n := range c.Nodes() {
		_ = n.Do(ctx, n.B().ScriptLoad().Script(casScript).Build()).Error()
	}
	cancel()
	r.client.Store(&rueidisBox{c: c, rd: rd})
	return nil
}

// errNoRedis: not connected yet.
var errNoRedis = errors.New("redis: not connected")

// do runs fn with the call deadline through the breaker. A nil result
// from fn is success; rueidis' nil reply is for fn to interpret.
func (r *replica) do(op string, timeout time.Duration, fn func(ctx context.Context, c rueidis.Client) error) error {
	box := r.client.Load()
	if box == nil {
		r.m.result(op, "disconnected")
		return errNoRedis
	}
	_, err := r.br.Execute(func() (struct{}, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		start := time.Now()
		c := box.c
		if op == "get" {
			c = box.rd
		}
		err := fn(ctx, c)
		r.m.call(op, start, err)
		return struct{}{}, err
	})
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		r.m.result(op, "breaker_open")
	}
	return err
}

// fetched is the outcome of the request-path read.
type fetched struct {
	blob  []byte
	found bool
	ok    bool // the read succeeded (found or not)
	why   string
	// stand is the identity's standing key (standKey) when it exists:
	// until (> 0) or 0 for lost; standFound tells.
	stand      int64
	standFound bool
	// The blob decoded (decode): a read prefetched at the request
	// headers is decoded by its own goroutine, so the request body's
	// scoring finds it ready and only merges.
	decoded bool
	rs      *session
	head    blobHead
	derr    error
}

// decode decodes the blob once.
func (f *fetched) decode() {
	if f.found && !f.decoded {
		f.rs, f.head, f.derr = decodeSession(f.blob)
		f.decoded = true
	}
}

// fetch reads a session's blob. It never waits longer than call_timeout.
func (r *replica) fetch(id string) fetched {
	var f fetched
	err := r.do("get", r.cfg.CallTimeout, func(ctx context.Context, c rueidis.Client) error {
		// One slot, one command: the blob and the standing key.
		vs, err := c.Do(ctx, c.B().Mget().Key(r.sessionKey(id), r.standKey(id)).Build()).ToArray()
		if err != nil {
			return err
		}
		if len(vs) != 2 {
			return fmt.Errorf("scoring: MGET answered %d values for 2 keys", len(vs))
		}
		if b, err := vs[0].AsBytes(); err == nil {
			f.blob, f.found = b, true
		} else if !rueidis.IsRedisNil(err) {
			return err
		}
		if v, err := vs[1].ToString(); err == nil {
			// Anything but a decimal time is read as lost standing.
			n, _ := strconv.ParseInt(v, 10, 64)
			f.stand, f.standFound = max(n, 0), true
		} else if !rueidis.IsRedisNil(err) {
			return err
		}
		return nil
	})
	if err != nil {
		f.why = reason(err)
		r.m.fallback(f.why)
		return f
	}
	f.ok = true
	return f
}

func reason(err error) string {
	switch {
	case errors.Is(err, errNoRedis):
		return "disconnected"
	case errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
		return "breaker_open"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	return "error"
}

// startFetch begins reading a session's blob in the background, for the
// request body that follows (Engine.Prefetch). A read of the same session
// already under way is shared.
func (r *replica) startFetch(id string) {
	if r.preN.Load() >= maxPrefetch {
		return
	}
	p := &prefetch{done: make(chan struct{}), at: time.Now()}
	if _, loaded := r.pre.LoadOrStore(id, p); loaded {
		return
	}
	r.preN.Add(1)
	r.preDone.Add(1)
	go func() { // ends within call_timeout: fetch is bounded
		defer r.preDone.Done()
		p.res = r.fetch(id)
		p.res.decode()
		close(p.done)
	}()
}

// read returns the session's remote state: the prefetched read when one
// was started (waiting for it, never longer than call_timeout), else a
// read now.
func (r *replica) read(id string) fetched {
	if v, ok := r.pre.LoadAndDelete(id); ok {
		r.preN.Add(-1)
		p := v.(*prefetch)
		<-p.done
		return p.res
	}
	return r.fetch(id)
}

// sweepPrefetch drops reads whose request never came (a stream reset
// after its headers).
func (r *replica) sweepPrefetch(now time.Time) {
	r.pre.Range(func(k, v any) bool {
		if p := v.(*prefetch); now.Sub(p.at) > time.Second {
			select {
			case <-p.done:
				if r.pre.CompareAndDelete(k, v) {
					r.preN.Add(-1)
				}
			default:
			}
		}
		return true
	})
}

// reconcile brings the local session s up to the remote state f. Called
// with the session's stripe lock held.
func (r *replica) reconcile(s *session, f fetched) {
	if s.rep == nil {
		s.rep = &replicaMeta{}
	}
	m := s.rep
	if !f.ok {
		return // scored on local state
	}
	// What Redis holds now: a key that is gone (expired, or lost with
	// Redis's data) is written again with the session's next write.
	m.standKnown = f.stand
	if !f.found {
		if m.inc != 0 {
			// Redis lost the blob (restart, eviction, flush): what the
			// local copy holds is now all there is; write it anew.
			m.inc, m.ver, m.base, m.writes, m.unconf = 0, 0, nil, nil, nil
			r.m.fallback("remote_lost")
		}
		return
	}
	f.decode()
	rs, h, err := f.rs, f.head, f.derr
	if err != nil || rs.id != s.id {
		// Not a blob this version can read: the next write replaces it.
		r.m.fallback("decode_error")
		m.inc, m.ver, m.base, m.writes, m.unconf, m.force = 0, 0, nil, nil, nil, true
		return
	}
	if h.inc == m.inc && h.ver <= m.ver {
		return // the local copy has it already
	}
	r.adopt(s, rs, h)
}

// adopt merges remote state rs (header h) into s and makes it the base.
// What s added is counted from the last state of s that rs contains: the
// base, or a write whose answer was lost but which rs lists as landed.
// Called with the stripe lock held.
func (r *replica) adopt(s *session, rs *session, h blobHead) {
	m := s.rep
	base := m.base
	if q, ok := seqOf(h.writes, r.writer); ok && len(m.unconf) > 0 {
		keep := m.unconf[:0]
		for _, u := range m.unconf {
			switch {
			case u.seq == q:
				base = u.snap
			case u.seq > q:
				keep = append(keep, u)
			}
		}
		m.unconf = keep
	}
	// rs is a decoded copy of its own: the session takes its filters.
	nb := rs.baseCopy()
	var merged *session
	if s.requests == 0 && base == nil || base == m.base && m.base != nil && m.gen == m.clean {
		// Nothing local to add: the remote state is the session.
		merged = rs
		merged.id, merged.setTries, merged.cost, merged.wallSet = s.id, s.setTries, s.cost, s.wallSet
		merged.flags |= s.flags & fPromoted
	} else {
		merged = mergeSession(rs, s, base, &r.e.params.half)
	}
	clean := merged.requests == nb.requests && m.gen == m.clean
	merged.rep = m
	if merged == rs {
		// The remote state's history, with any records only this
		// replica holds (history.go: a union).
		merged.hist = mergeHistory(rs.hist, s.hist)
	}
	*s = *merged
	m.base, m.inc, m.ver, m.writes = nb, h.inc, h.ver, h.writes
	if clean {
		m.clean = m.gen
	}
}

// unconfirmed remembers a write whose answer has not come: one in flight
// (a read that lands meanwhile may already hold it, and adopt must then
// count from what it wrote, not from the older base) or one whose answer
// was lost. Called with the stripe lock held.
func (m *replicaMeta) unconfirmed(seq uint64, snap *session) {
	const maxUnconfirmed = 4
	for _, u := range m.unconf {
		if u.seq == seq {
			return
		}
	}
	if len(m.unconf) >= maxUnconfirmed {
		m.unconf = m.unconf[1:]
	}
	m.unconf = append(m.unconf, unconfirmed{seq: seq, snap: snap})
}

// landedNot forgets write seq: its answer says it did not land, or it was
// never sent. Called with the stripe lock held.
func (m *replicaMeta) landedNot(seq uint64) {
	m.unconf = slices.DeleteFunc(m.unconf, func(u unconfirmed) bool { return u.seq == seq })
}

// markDirty queues s for writing. Called with the stripe lock held.
func (r *replica) markDirty(s *session) {
	if s.rep == nil {
		s.rep = &replicaMeta{}
	}
	s.rep.gen++
	if s.rep.dirty {
		return
	}
	r.mu.Lock()
	if len(r.pending) >= r.cfg.MaxPending {
		r.mu.Unlock()
		r.m.dropped("session")
		return // written with its next request
	}
	s.rep.dirty = true
	r.pending[s.id] = s
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *replica) pendingLen() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pending)
}

// run is the flusher: it writes queued sessions as soon as the previous
// batch is done, the aggregate deltas every flush interval, and the
// snapshot every snapshot interval; it reconnects while Redis is away.
func (r *replica) run() {
	defer r.done.Done()
	tick := time.NewTicker(r.cfg.FlushInterval)
	defer tick.Stop()
	lastDial := time.Now()
	lastSweep := time.Now()
	var lastFlush time.Time
	for {
		select {
		case <-r.stop:
			r.flush(true)
			return
		case <-r.kick:
			if d := r.cfg.WriteDelay - time.Since(lastFlush); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-r.stop:
					t.Stop()
					r.flush(true)
					return
				case <-t.C:
				}
			}
		case now := <-tick.C:
			if now.Sub(lastSweep) > time.Second {
				lastSweep = now
				r.sweepPrefetch(now)
			}
		}
		if r.client.Load() == nil {
			if time.Since(lastDial) < r.cfg.Breaker.OpenFor {
				continue
			}
			lastDial = time.Now()
			if err := r.connect(); err != nil {
				continue
			}
		}
		lastFlush = time.Now()
		r.flush(time.Since(time.Unix(0, r.lastAgg.Load())) >= r.cfg.FlushInterval)
	}
}

// flush writes the queued sessions and, with agg, pushes the aggregate
// deltas and pulls the other replicas' batches; all in one pipelined
// round trip (rueidis sends each command to its slot's node).
func (r *replica) flush(agg bool) {
	r.flushMu.Lock()
	defer r.flushMu.Unlock()
	if agg && !r.loaded {
		r.loadSnapshot()
	}
	r.mu.Lock()
	// The ids travel with the sessions from the queue's keys: a
	// session's struct is rewritten whole under its stripe lock when it
	// adopts the remote state (adopt), so its id field may only be read
	// with that lock held, and the lock to take is known from the id.
	type queued struct {
		id [16]byte
		s  *session
	}
	batch := make([]queued, 0, len(r.pending))
	for id, s := range r.pending {
		batch = append(batch, queued{id, s})
	}
	clear(r.pending)
	r.mu.Unlock()

	type write struct {
		id       [16]byte
		s        *session
		snap     *session
		inc, ver uint64
		seq      uint64
		gen      uint64
		writes   []writerSeq
		stand    int64 // standing written with it, -1: none
	}
	const chunk = 512
	for len(batch) > 0 || agg {
		n := min(len(batch), chunk)
		part := batch[:n]
		batch = batch[n:]
		ws := make([]write, 0, n)
		execs := make([]rueidis.LuaExec, 0, n)
		for _, q := range part {
			s := q.s
			st := &r.e.stripes[q.id[0]]
			st.Lock()
			m := s.rep
			if m == nil || s.requests == 0 {
				st.Unlock() // reset by the admin API meanwhile
				continue
			}
			m.dirty = false
			w := write{id: q.id, s: s, snap: s.baseCopy(), inc: m.inc, ver: m.ver + 1, seq: r.seq.Add(1), gen: m.gen}
			w.writes = withWrite(m.writes, r.writer, w.seq)
			expect, force := "", "0"
			if m.inc == 0 {
				w.inc, w.ver = newIncarnation(), 1
			} else {
				var hb [16]byte
				binary.LittleEndian.PutUint64(hb[:], m.inc)
				binary.LittleEndian.PutUint64(hb[8:], m.ver)
				expect = string(hb[:])
			}
			if m.force {
				force = "1"
			}
			blob := encodeSession(make([]byte, 0, blobFixed+int(s.set.bytes())+1+16*maxWriters), s, w.inc, w.ver, w.writes)
			w.stand = r.standingToWrite(s)
			stand := ""
			if w.stand >= 0 {
				stand = strconv.FormatInt(w.stand, 10)
			}
			// In flight until settled: a read of the blob this write
			// makes may be adopted before its answer is (reconcile from
			// the request path or the admin API).
			m.unconfirmed(w.seq, w.snap)
			st.Unlock()
			ws = append(ws, w)
			id := sessionIDString(q.id)
			execs = append(execs, rueidis.LuaExec{
				Keys: []string{r.sessionKey(id), r.standKey(id)},
				Args: []string{expect, string(blob), strconv.FormatInt(r.ttl.Milliseconds(), 10), force,
					stand, strconv.FormatInt(r.standTTL().Milliseconds(), 10)},
			})
		}
		var aggBlob []byte
		if agg {
			aggBlob = r.e.takeDeltas(r.writer, false)
		}
		res, aggRes, err := r.exec(execs, aggBlob, agg)
		if err != nil {
			// The writes may or may not have landed: queue everything
			// again (bounded), remembering what each write held.
			sent := reason(err) != "breaker_open" && reason(err) != "disconnected"
			for _, w := range ws {
				r.requeue(w.id, w.s, w.seq, w.snap, sent)
			}
			if aggBlob != nil {
				r.keepUnsent(aggBlob)
			}
			r.m.batch("error")
			if !agg {
				continue
			}
			return
		}
		r.m.batch("ok")
		if r.afterExec != nil {
			r.afterExec()
		}
		for i, w := range ws {
			r.settle(w.id, w.s, w.snap, w.inc, w.ver, w.seq, w.gen, w.writes, w.stand, res[i])
		}
		if agg {
			r.applyRemote(aggRes)
			r.lastAgg.Store(time.Now().UnixNano())
			agg = false
			if !r.manual && time.Since(r.lastSnap) >= r.cfg.SnapshotInterval {
				r.lastSnap = time.Now()
				r.snapshot()
			}
		}
	}
}

// scriptSHA is the name EVALSHA knows a script by (SHA-1 of its text, as
// SCRIPT LOAD returns it).
func scriptSHA(script string) string {
	sum := sha1.Sum([]byte(script))
	return hex.EncodeToString(sum[:])
}

func newIncarnation() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:]) | 1
}

// exec sends the writes and, with agg, the log append and read, in one
// pipelined round trip (rueidis sends each command to its slot's node).
// err is set only when the breaker refused or the round trip as a whole
// failed; per-write failures are in res.
func (r *replica) exec(execs []rueidis.LuaExec, aggBlob []byte, agg bool) (res []rueidis.RedisResult, aggRes []rueidis.RedisResult, err error) {
	// Off the request path: a flush may wait longer than a read.
	err = r.do("flush", max(r.cfg.CallTimeout*4, 250*time.Millisecond), func(ctx context.Context, c rueidis.Client) error {
		cmds := make(rueidis.Commands, 0, len(execs)+4)
		for _, x := range execs {
			cmds = append(cmds, c.B().Evalsha().Sha1(r.casSHA).Numkeys(int64(len(x.Keys))).Key(x.Keys...).Arg(x.Args...).Build())
		}
		if agg {
			for _, b := range r.unsent {
				cmds = append(cmds, r.xadd(c, b))
			}
			if aggBlob != nil {
				cmds = append(cmds, r.xadd(c, aggBlob))
			}
			if len(cmds) > len(execs) {
				cmds = append(cmds, c.B().Pexpire().Key(r.logKey()).Milliseconds(r.aggTTL.Milliseconds()).Build())
			}
			cmds = append(cmds, c.B().Xread().Count(1024).Streams().Key(r.logKey()).Id(r.lastID).Build())
		}
		if len(cmds) == 0 {
			return nil
		}
		all := c.DoMulti(ctx, cmds...)
		noScript := false
		for _, x := range all {
			e := x.Error()
			if e == nil || rueidis.IsRedisNil(e) {
				continue
			}
			re, isRedis := rueidis.IsRedisErr(e)
			switch {
			case isRedis && re.IsNoScript():
				noScript = true
			case !isRedis:
				return e // transport failure: nothing is known to have landed
			}
		}
		if noScript {
			// A restarted (or flushed) Redis forgot the script: load it on
			// every node; the writes it refused are queued again.
			for _, n := range c.Nodes() {
				if err := n.Do(ctx, n.B().ScriptLoad().Script(casScript).Build()).Error(); err != nil {
					return err
				}
			}
		}
		res = all[:len(execs)]
		if agg {
			for _, x := range all[len(execs) : len(all)-1] {
				if e := x.Error(); e != nil {
					return e
				}
			}
			r.unsent = r.unsent[:0]
			aggRes = all[len(all)-1:]
		}
		return nil
	})
	return res, aggRes, err
}

func (r *replica) xadd(c rueidis.Client, b []byte) rueidis.Completed {
	return c.B().Xadd().Key(r.logKey()).Maxlen().Almost().Threshold(strconv.Itoa(r.cfg.StreamLength)).Id("*").
		FieldValue().FieldValue("d", rueidis.BinaryString(b)).Build()
}

// keepUnsent holds a batch that could not be written, bounded: past the
// bound the oldest is dropped (its counts stay local).
func (r *replica) keepUnsent(b []byte) {
	const maxUnsent = 512
	if len(r.unsent) >= maxUnsent {
		r.unsent = r.unsent[1:]
		r.m.dropped("aggregate")
	}
	r.unsent = append(r.unsent, b)
}

func (r *replica) requeue(id [16]byte, s *session, seq uint64, snap *session, sent bool) {
	st := &r.e.stripes[id[0]]
	st.Lock()
	if s.rep != nil {
		if sent {
			s.rep.unconfirmed(seq, snap)
		} else {
			s.rep.landedNot(seq)
		}
		r.markDirtyNoGen(s)
	}
	st.Unlock()
}

// markDirtyNoGen queues s again without counting a change. Called with the
// stripe lock held.
func (r *replica) markDirtyNoGen(s *session) {
	if s.rep.dirty {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.pending) >= r.cfg.MaxPending {
		r.m.dropped("session")
		return
	}
	s.rep.dirty = true
	r.pending[s.id] = s
}

// settle applies the answer to one compare-and-set write.
func (r *replica) settle(id [16]byte, s, snap *session, inc, ver, seq, gen uint64, writes []writerSeq, stand int64, res rueidis.RedisResult) {
	st := &r.e.stripes[id[0]]
	st.Lock()
	defer st.Unlock()
	m := s.rep
	if m == nil {
		return // reset meanwhile
	}
	if n, err := res.AsInt64(); err == nil {
		switch n {
		case 1:
			m.force = false
			if m.inc == inc && m.ver >= ver {
				// A read that landed while the write was in flight
				// already adopted it (or a newer version built on it):
				// going back to snap would count the newer writes twice.
				m.landedNot(seq)
				r.m.item("session")
				return
			}
			// Earlier unconfirmed writes did not land: the version they
			// expected is the one this write replaced.
			m.base, m.inc, m.ver, m.writes, m.unconf = snap, inc, ver, writes, nil
			m.clean = gen // the local copy is snap unless it changed since
			if stand >= 0 {
				m.standKnown = stand
			}
			r.m.item("session")
		default: // the blob expected is gone: write it anew
			m.base, m.inc, m.ver, m.writes, m.unconf = nil, 0, 0, nil, nil
			r.m.fallback("remote_lost")
			r.markDirtyNoGen(s)
		}
		return
	}
	b, err := res.AsBytes()
	if err != nil {
		m.unconfirmed(seq, snap)
		r.markDirtyNoGen(s)
		return
	}
	m.landedNot(seq) // the script answered with the blob it found instead
	rs, h, err := decodeSession(b)
	switch {
	case err != nil || rs.id != s.id:
		r.m.fallback("decode_error")
		m.base, m.inc, m.ver, m.writes, m.force, m.unconf = nil, 0, 0, nil, true, nil
	default:
		// Another replica wrote first: take its state and write ours on top.
		r.m.item("conflict")
		r.adopt(s, rs, h)
	}
	r.markDirtyNoGen(s)
}

// applyRemote adds the other replicas' batches read from the log.
func (r *replica) applyRemote(res []rueidis.RedisResult) {
	if len(res) == 0 {
		return
	}
	streams, err := res[0].AsXRead()
	if err != nil {
		return // nil reply: nothing new
	}
	for _, entries := range streams {
		for _, en := range entries {
			r.lastID = en.ID
			b := en.FieldValues["d"]
			if len(b) < 12 || binary.LittleEndian.Uint64([]byte(b[4:12])) == r.writer {
				continue
			}
			a, err := parseAgg([]byte(b))
			if err != nil {
				r.m.dropped("malformed")
				continue
			}
			if err := r.e.applyAgg(a); err != nil {
				r.m.dropped("incompatible")
				continue
			}
			r.m.item("remote_batch")
		}
	}
}

// loadSnapshot adds the newest snapshot of the merged sketches, once, and
// continues the log from where it was written.
func (r *replica) loadSnapshot() {
	var blob []byte
	err := r.do("load", max(r.cfg.CallTimeout*20, time.Second), func(ctx context.Context, c rueidis.Client) error {
		b, err := c.Do(ctx, c.B().Get().Key(r.snapKey()).Build()).AsBytes()
		if rueidis.IsRedisNil(err) {
			return nil
		}
		blob = b
		return err
	})
	if err != nil {
		return
	}
	r.loaded = true
	if len(blob) == 0 {
		return
	}
	id, rest, ok := strings.Cut(string(blob), "\n")
	if !ok {
		r.m.dropped("malformed")
		return
	}
	a, err := parseAgg([]byte(rest))
	if err == nil {
		err = r.e.applyAgg(a)
	}
	if err != nil {
		r.m.dropped("malformed")
		return
	}
	r.lastID = id
	r.log.Info("scoring: loaded the shared aggregate snapshot", "entries", a.structure, "log_id", id)
}

// snapshot writes the merged sketches when no other replica has in this
// interval (a lock key with the interval as TTL elects the writer).
func (r *replica) snapshot() {
	var got bool
	_ = r.do("snapshot", r.cfg.CallTimeout, func(ctx context.Context, c rueidis.Client) error {
		err := c.Do(ctx, c.B().Set().Key(r.lockKey()).Value(strconv.FormatUint(r.writer, 16)).Nx().
			Px(r.cfg.SnapshotInterval).Build()).Error()
		if rueidis.IsRedisNil(err) {
			return nil
		}
		got = err == nil
		return err
	})
	if !got {
		return
	}
	blob := r.lastID + "\n" + string(r.e.takeDeltas(r.writer, true))
	_ = r.do("snapshot", max(r.cfg.CallTimeout*20, time.Second), func(ctx context.Context, c rueidis.Client) error {
		return c.Do(ctx, c.B().Set().Key(r.snapKey()).Value(rueidis.BinaryString([]byte(blob))).Px(r.aggTTL).Build()).Error()
	})
}

// remove deletes a session's blob (admin reset), best effort, and reports
// whether Redis held one: a session another replica served is found here
// even when this replica never saw it.
func (r *replica) remove(id string) bool {
	sid, err := parseSessionID(id)
	if err != nil {
		return false
	}
	// Not a DEL: a replica still holding the session would take a missing
	// blob for a Redis that lost its data and write its copy back. An
	// empty session under a new incarnation is what every other replica
	// adopts at its next read of the session (reconcile: a newer lineage
	// replaces what it had); only changes it had not written yet are
	// added to it.
	// The standing goes too: "0" tells replicas that remember it that it
	// is lost.
	blob := encodeSession(nil, &session{id: sid}, newIncarnation(), 1, nil)
	existed := false
	_ = r.do("reset", r.cfg.CallTimeout, func(ctx context.Context, c rueidis.Client) error {
		res := c.DoMulti(ctx,
			c.B().Exists().Key(r.sessionKey(id)).Build(),
			c.B().Set().Key(r.sessionKey(id)).Value(rueidis.BinaryString(blob)).Px(r.ttl).Build(),
			c.B().Set().Key(r.standKey(id)).Value("0").Px(r.standTTL()).Build())
		for _, x := range res {
			if err := x.Error(); err != nil {
				return err
			}
		}
		n, _ := res[0].AsInt64()
		existed = n > 0
		return nil
	})
	return existed
}

// standTTL is how long Redis keeps a standing key: standing.remember.
func (r *replica) standTTL() time.Duration { return r.e.cfg.Standing.Remember }

// standingToWrite is the standing value a write of s carries, -1 for none:
// the time its earned standing lasts until when that is not what Redis
// holds, "lost" (0) when Redis holds a standing s no longer has. Called
// with the session's stripe lock held.
//
// Earned standing outlives the session (standing.remember, 30 days,
// against session_ttl, 48 h): each replica remembers it in a local list,
// and the standing key makes that memory shared, so an identity returning
// after its session expired is not put back into probation by the replica
// it happens to reach, and one that lost standing on one replica does not
// keep it on another.
func (r *replica) standingToWrite(s *session) int64 {
	if !r.e.cfg.Standing.Enabled {
		return -1
	}
	known := int64(0)
	if s.rep != nil {
		known = s.rep.standKnown
	}
	if s.has(fStanding) && s.standNoted > 0 {
		if until := s.standNoted + int64(r.e.cfg.Standing.Remember); until != known {
			return until
		}
		return -1
	}
	if known > 0 {
		return 0
	}
	return -1
}

// applyStanding brings the local standing list up to the standing key
// read with a session (fetched): lost removes it, a later time extends it.
func (r *replica) applyStanding(id [16]byte, f *fetched, now int64) {
	if !f.ok || !f.standFound {
		return
	}
	if f.stand == 0 {
		r.e.remembered.remove(id)
		return
	}
	if f.stand > r.e.remembered.until(id) {
		r.e.remembered.add(id, f.stand, now)
	}
}

// close stops the flusher (which writes what is queued, within its
// deadline) and closes the client.
func (r *replica) close() {
	select {
	case <-r.stop:
		return
	default:
	}
	close(r.stop)
	r.done.Wait()
	r.preDone.Wait()
	if r.manual {
		r.flush(true)
	}
	if box := r.client.Load(); box != nil {
		box.c.Close()
		box.rd.Close()
	}
	r.m.unregister()
}

// Prefetch starts reading the session of r in replicated mode, so that
// Score, when r's body has arrived, finds the remote state already read:
// the server calls it with the request headers (identity comes from the
// headers and source.address alone), taking the session read off the
// request-body message's latency. Without replicated mode it does
// nothing. It does not block. It is PrepareFetch(r).Start().
func (e *Engine) Prefetch(r *Request) { e.PrepareFetch(r).Start() }

// A SessionFetch is a session read prepared from a request's headers and
// not yet started (PrepareFetch). The server derives it while it still
// holds the headers message and starts it once its reply to the headers
// is on the wire, so that neither the key derivation's goroutine nor the
// Redis write competes with that reply, while Envoy's round trip to send
// the body still hides the read. The zero value starts nothing.
type SessionFetch struct {
	rep *replica
	id  string
}

// PrepareFetch derives the session r belongs to (from its headers and
// source address) for a later Start. Without replicated mode it returns
// the zero SessionFetch.
func (e *Engine) PrepareFetch(r *Request) SessionFetch {
	if e.rep == nil || r == nil || e.closed.Load() {
		return SessionFetch{}
	}
	sc := e.scratch.Get().(*textScratch)
	ip, haveIP := e.id.clientIP(r)
	id, _ := e.id.sessionID(r, ip, haveIP, &sc.mac)
	e.scratch.Put(sc)
	return SessionFetch{rep: e.rep, id: sessionIDString(id)}
}

// Start begins the read in the background; it does not block. Starting
// the zero SessionFetch, or one of a closed engine, does nothing.
func (f SessionFetch) Start() {
	if f.rep == nil || f.rep.e.closed.Load() {
		return
	}
	f.rep.startFetch(f.id)
}

// Flush writes this replica's queued session changes and aggregate deltas
// to Redis and reads the other replicas' batches, now. The flusher does
// this on its own; replays (Options.Seed, where no flusher runs) call it
// to decide when replicas exchange state. It returns once nothing is
// queued, or an error when Redis could not be reached; nothing is lost
// then (it stays queued). Without
// replicated mode it does nothing.
func (e *Engine) Flush() error {
	r := e.rep
	if r == nil || e.closed.Load() {
		return nil
	}
	if r.client.Load() == nil {
		if err := r.connect(); err != nil {
			return err
		}
	}
	// A write that lost a race to another replica is merged and queued
	// again: repeat until nothing is queued (a few rounds at most).
	for range 8 {
		before := r.m.batchErrors.Load()
		r.flush(true)
		if r.m.batchErrors.Load() != before {
			return fmt.Errorf("scoring: redis flush failed (changes stay queued)")
		}
		if r.pendingLen() == 0 {
			return nil
		}
	}
	return fmt.Errorf("scoring: redis flush: %d sessions still queued after 8 rounds", r.pendingLen())
}
