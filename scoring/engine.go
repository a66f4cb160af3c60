package scoring

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/distillguard/distillguard/internal/hashmix"
)

// Options are the engine's runtime dependencies.
type Options struct {
	// MeterProvider receives the engine's metrics; nil means no metrics.
	MeterProvider metric.MeterProvider
	// Logger receives the audit trail: one JSON line per verdict change.
	// nil discards it.
	Logger *slog.Logger
	// Clock supplies the time of requests whose Time is zero; nil means
	// time.Now.
	Clock func() time.Time
	// Seed, when non-empty, makes the engine deterministic, for replays
	// and the attack lab: what is otherwise random per process is derived
	// from it (the session-id MAC key when Config.Secret is empty, the
	// token and link hash keys, the samplers that pick eviction victims),
	// and session state is kept in a synchronous store with seeded
	// sampling instead of ristretto, whose admission and eviction depend
	// on goroutine scheduling and map order. The same configuration, Seed
	// and sequence of requests (with Request.Time set, or a Clock that
	// follows them) then give bit-identical decisions; concurrent callers
	// get the order in which their requests reach the engine.
	//
	// Leave it empty in production: whoever knows the seed can predict
	// hash values (and craft bloom-filter collisions), and the synchronous
	// store serializes access to session state.
	Seed []byte
}

// Engine is the session-risk Scorer. It is safe for concurrent use; Close
// releases its background goroutines (the state caches').
type Engine struct {
	cfg      Config
	weights  [numSignals]float64
	params   signalParams
	an       *analyzer
	id       *identity
	markSalt uint64 // salts of the marks kept in session filters
	joinSalt uint64
	flagSalt uint64

	main, prob stateTier
	stripes    [256]stripe

	tmpl       *templateSketch
	clusters   *clusterTable
	index      *riskIndex
	quarantine *quarantineList

	promote tokenBucket

	scratch sync.Pool // *textScratch
	m       *instruments
	log     *slog.Logger
	clock   func() time.Time
	closed  atomic.Bool
	latest  atomic.Int64 // newest request time seen (nanoseconds)
}

// stripe serializes the requests of the sessions hashing to it, so a
// session's state is updated by one request at a time. Padded to a cache
// line so neighbouring locks do not share one.
type stripe struct {
	sync.Mutex
	_ [56]byte
}

var _ Scorer = (*Engine)(nil)

// interArrivalMax: gaps longer than this are breaks between sittings, not
// part of a client's request rhythm.
const interArrivalMax = 4 * time.Hour

// New builds an Engine. Zero fields of cfg take their defaults.
func New(cfg Config, opts Options) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("scoring: %w", err)
	}
	cfg = cfg.withDefaults()
	e := &Engine{cfg: cfg, weights: defaultWeights, log: opts.Logger, clock: opts.Clock}
	for n, w := range cfg.Weights {
		e.weights[signalIndex(n)] = w
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.clock == nil {
		e.clock = time.Now
	}
	e.params = signalParams{volumeH: cfg.VolumeHalfLife.Hours(), burstH: cfg.BurstHalfLife.Hours()}

	keys, err := newKeyMaterial(opts.Seed)
	if err != nil {
		return nil, fmt.Errorf("scoring: %w", err)
	}
	secret := []byte(cfg.Secret)
	if len(secret) == 0 {
		secret = keys.derive("session-id")
	}
	// Token, shingle and link hashes are keyed (random per process unless
	// Options.Seed is set): bloom positions cannot be predicted, let alone
	// collided, offline.
	if e.id, err = newIdentity(&cfg, secret, newHashKey(keys.derive("link-hash"))); err != nil {
		return nil, fmt.Errorf("scoring: %w", err)
	}
	tokenKey := newHashKey(keys.derive("token-hash"))
	e.an = newAnalyzer(tokenKey, cfg.MaxPromptBytes)
	e.markSalt = tokenKey.sumString(0, "template-mark")
	e.joinSalt = tokenKey.sumString(0, "cluster-join")
	e.flagSalt = tokenKey.sumString(0, "cluster-flag")
	e.scratch.New = func() any { return &textScratch{} }

	newTier := func(maxCost int64, name string) (stateTier, error) {
		if len(opts.Seed) == 0 {
			return newRistrettoTier(maxCost)
		}
		s1, s2 := keys.seeds(name + "-eviction")
		return newSampledTier(maxCost, newHashKey(keys.derive(name+"-sketch")), s1, s2), nil
	}
	probBytes := int64(float64(cfg.MemoryBytes) * cfg.ProbationShare)
	mainBytes := cfg.MemoryBytes - probBytes
	if e.main, err = newTier(mainBytes, "main"); err != nil {
		return nil, fmt.Errorf("scoring: state cache: %w", err)
	}
	if e.prob, err = newTier(probBytes, "probation"); err != nil {
		e.main.Close()
		return nil, fmt.Errorf("scoring: probation cache: %w", err)
	}
	e.tmpl = newTemplateSketch(int64(cfg.CampaignWindow), cfg.CampaignSlices, cfg.CampaignMinSessions, cfg.CampaignCapacity)
	s1, s2 := keys.seeds("cluster-eviction")
	e.clusters = newClusterTable(cfg.MaxClusters, int64(cfg.ContentHalfLife), s1, s2)
	e.index = newRiskIndex(cfg.IndexSize, cfg.Thresholds.Degrade/2)
	s1, s2 = keys.seeds("quarantine-eviction")
	e.quarantine = newQuarantineList(cfg.QuarantineEntries, s1, s2)
	e.promote = tokenBucket{rate: cfg.PromoteRate, burst: 10 * cfg.PromoteRate, tokens: 10 * cfg.PromoteRate}
	if e.m, err = newInstruments(opts.MeterProvider, e); err != nil {
		e.main.Close()
		e.prob.Close()
		return nil, fmt.Errorf("scoring: metrics: %w", err)
	}
	return e, nil
}

// Close stops the caches' goroutines and unregisters metric callbacks.
// Score must not be called after Close.
func (e *Engine) Close() error {
	if !e.closed.CompareAndSwap(false, true) {
		return nil
	}
	// Unregister first: the metrics callback reads the caches.
	var err error
	if e.m.reg != nil {
		err = e.m.reg.Unregister()
	}
	e.main.Close()
	e.prob.Close()
	return err
}

// Stats is a snapshot of the engine's size.
type Stats struct {
	MainSessions, ProbationSessions int64
	// SessionBytes is the cost held by the session caches: per-session
	// state plus ristretto's per-entry overhead.
	SessionBytes  int64
	TemplateBytes int64
	ClusterBytes  int64
	Clusters      int
}

// Stats reports the current sizes.
func (e *Engine) Stats() Stats {
	if e.closed.Load() {
		return Stats{}
	}
	// Apply buffered Sets and Dels first, so a promoted session is not
	// counted in both tiers.
	e.main.Wait()
	e.prob.Wait()
	n := e.clusters.len()
	return Stats{
		MainSessions:      e.main.sessions(),
		ProbationSessions: e.prob.sessions(),
		SessionBytes:      e.main.usedBytes() + e.prob.usedBytes(),
		TemplateBytes:     int64(e.tmpl.bytes()),
		// map entry, cluster struct and label, measured roughly
		ClusterBytes: int64(n) * 320,
		Clusters:     n,
	}
}

func (e *Engine) now(r *Request) int64 {
	if !r.Time.IsZero() {
		return r.Time.UnixNano()
	}
	return e.clock().UnixNano()
}

// Score scores r. It never panics: on an internal error the request is
// allowed and the error counted and logged.
func (e *Engine) Score(r *Request) (d Decision) {
	if r == nil || e.closed.Load() {
		return Decision{Verdict: Allow}
	}
	defer func() {
		if p := recover(); p != nil {
			e.m.badInput(badPanic)
			e.log.Error("scoring: internal error, request allowed", "session", d.Session, "panic", fmt.Sprint(p))
			d = Decision{Verdict: Allow, Session: d.Session, Shadow: e.cfg.Shadow}
		}
	}()
	now := e.now(r)
	for l := e.latest.Load(); now > l && !e.latest.CompareAndSwap(l, now); l = e.latest.Load() {
	}
	sc := e.scratch.Get().(*textScratch)
	defer e.scratch.Put(sc)
	ip, haveIP := e.id.clientIP(r)
	id, kind := e.id.sessionID(r, ip, haveIP, &sc.mac)
	if kind == 0 {
		e.m.badInput(badNoIdentity)
	}
	d.Session = sessionIDString(id)
	lk := e.id.links(r, ip, haveIP)

	f := e.an.analyze(r.Prompt, sc)
	if f.invalidUTF8 {
		e.m.badInput(badInvalidUTF8)
	}
	if f.binary {
		e.m.badInput(badBinary)
	}
	if f.truncated {
		e.m.badInput(badTruncated)
	}

	st := &e.stripes[id[0]]
	st.Lock()
	s := e.lookup(d.Session, id, now)
	old := s.tier
	ev := e.observe(s, r, f, &lk, now)
	e.store(d.Session, s)
	requests := s.requests
	st.Unlock()

	d.Verdict, d.Score, d.Signals, d.Shadow = ev.entry.tier, ev.score, ev.signals, e.cfg.Shadow
	if ev.entry.tier != Allow || ev.entry.peak >= e.index.minScore {
		e.index.update(id, ev.entry, ev.signals)
	}
	e.record(d, &ev.st)
	if d.Verdict != old {
		e.audit(d, old, requests)
	}
	return d
}

// lookup finds or creates the session. Called with the stripe lock held.
func (e *Engine) lookup(key string, id [16]byte, now int64) *session {
	s, ok := e.main.Get(key)
	if !ok {
		s, ok = e.prob.Get(key)
	}
	if ok && s.requests > 0 && now-s.last > int64(e.cfg.SessionTTL) {
		// Idle past the TTL: start over in the same cache slot.
		*s = session{id: id, promoted: s.promoted, wallSet: s.wallSet, cost: s.cost}
	}
	if !ok {
		s = &session{id: id}
	}
	if s.requests == 0 {
		if until := e.quarantine.until(id); until > now {
			s.tier, s.quarantineUntil = Block, until
		}
	}
	if !ok {
		s.cost = s.bytes()
		s.wallSet = time.Now().UnixNano()
		if e.prob.SetWithTTL(key, s, s.cost, e.cfg.SessionTTL) {
			// Make the new entry visible to the session's next request
			// (ristretto applies Sets asynchronously).
			e.prob.Wait()
		} else {
			e.m.badInput(badStateDropped)
		}
	}
	return s
}

// store reports a changed cost, refreshes the cache TTL and promotes the
// session out of probation. Called with the stripe lock held.
func (e *Engine) store(key string, s *session) {
	ttl := e.cfg.SessionTTL
	wall := time.Now().UnixNano()
	if !s.promoted && (int(s.requests) >= e.cfg.PromoteAfter || s.tier > Allow) &&
		int(s.requests)%e.cfg.PromoteAfter == int(s.setTries)%e.cfg.PromoteAfter && e.promote.take(s.last) {
		s.setTries++
		s.cost = s.bytes()
		if e.main.SetWithTTL(key, s, s.cost, ttl) {
			e.main.Wait()
			if _, ok := e.main.Get(key); ok {
				s.promoted = true
				s.wallSet = wall
				e.prob.Del(key)
				return
			}
		}
	}
	c := s.bytes()
	if c != s.cost || wall-s.wallSet > int64(ttl/4) {
		s.cost, s.wallSet = c, wall
		cache := e.prob
		if s.promoted {
			cache = e.main
		}
		cache.SetWithTTL(key, s, c, ttl)
	}
}

// evaluation is the outcome of observing one request.
type evaluation struct {
	st      strengths
	score   float64
	signals []Signal
	entry   indexEntry // the session after the request, for the index
}

// observe folds r into s and decides the tier. Called with the stripe lock
// held.
func (e *Engine) observe(s *session, r *Request, f *textFeatures, lk *links, now int64) evaluation {
	cfg := &e.cfg
	t := now
	c := &s.c
	if s.requests > 0 {
		if t < s.last {
			// Per-session time never runs backwards (clock skew between
			// proxies, replays): treat the request as simultaneous.
			t = s.last
			e.m.badInput(badClockBackward)
		}
		dt := t - s.last
		c.decay(dt, int64(cfg.ContentHalfLife), int64(cfg.VolumeHalfLife), int64(cfg.BurstHalfLife))
		if dt <= int64(interArrivalMax) {
			x := math.Log(math.Max(float64(dt), 1e8) / 1e9) // seconds, floor 100 ms
			c.iaN++
			c.iaS += float32(x)
			c.iaQ += float32(x * x)
		}
	} else {
		s.first = t
	}
	s.last = t
	s.requests++

	c.n++
	if isSingleTurn(r) {
		c.single++
	}
	c.volLong++
	c.volShort++
	c.tokLong += float32(len(r.Prompt)/4 + max(r.MaxTokens, 0))
	c.lp += float32(harvestIntensity(r))
	if lbs := logitBiasStrength(r); lbs > 0 {
		c.lb += float32(lbs)
		c.lbN++
	}
	if f.cot {
		c.cot++
	}
	// Languages are remembered per window of two content half-lives (the
	// current and the previous window count).
	ep := int32(t / int64(2*cfg.ContentHalfLife))
	if ep != s.langEpoch {
		if ep == s.langEpoch+1 {
			s.langPrev = s.langCur
		} else {
			s.langPrev = 0
		}
		s.langCur, s.langEpoch = 0, ep
	}
	s.langCur |= f.langs

	if n := len(f.shingles); n > 0 {
		dups, hits := e.shingles(s, f.shingles, t)
		frac := float32(dups) / float32(n)
		if s.requests > 1 {
			c.dup += frac
			c.dupN++
		}
		c.novel += 1 - frac
		// A request carries a shared template when at least two of its
		// sampled shingles, and an eighth of them, are templates.
		if hits >= 2 && hits*8 >= n {
			c.tmpl++
		}
	}

	spread, cl := e.joinClusters(s, r, lk, t)
	s.spread = float32(spread)
	st := computeStrengths(s, &e.params, popcount(s.langCur|s.langPrev), spread)
	score, contrib := combine(&st, &e.weights, cfg.AutomationCap, -1)
	if !s.ownFlag {
		own, _ := combine(&st, &e.weights, cfg.AutomationCap, sigCluster)
		if own >= cfg.Thresholds.Degrade {
			s.ownFlag = true
			e.flagInClusters(s, lk, cl, t)
		}
	}
	s.score = float32(score)
	s.peak = max(s.peak, s.score)
	s.tier = e.nextTier(s, score, t)
	return evaluation{st: st, score: round3(score), signals: explain(&st, &contrib), entry: indexEntry{
		score: score, peak: float64(s.peak), tier: s.tier, requests: s.requests, first: s.first, last: s.last,
	}}
}

// shingles checks the sampled shingles against the session's filter and the
// template sketch. It returns how many the session had sent before and how
// many are shared templates.
func (e *Engine) shingles(s *session, hs []uint64, t int64) (dups, hits int) {
	tm := e.tmpl
	tm.mu.Lock()
	defer tm.mu.Unlock()
	slice := tm.advance(t)
	for _, h := range hs {
		l := locate(h)
		inCur, seen := s.set.has(&l)
		switch {
		case !seen:
			s.set.add(&l)
		default:
			dups++
			if !inCur {
				s.set.add(&l) // keep recurring shingles in the live generation
			}
			// The first reuse of a shingle by this session is reported to
			// the sketch once; the mark is a salted copy in the same filter.
			ml := locate(hashmix.Mix64(h ^ e.markSalt))
			if mCur, marked := s.set.has(&ml); !marked {
				s.set.add(&ml)
				tm.report(slice, &l)
			} else if !mCur {
				s.set.add(&ml)
			}
		}
		// A hit is a shingle this session reuses and that enough other
		// sessions reuse too: a human who sends one templated question
		// among natural chat does not count.
		if seen && tm.count(&l) >= tm.levels {
			hits++
		}
	}
	return dups, hits
}

// joinClusters records the session in the clusters of its links (once per
// session and cluster: a salted mark in the session's filter remembers the
// join) and returns how strongly flagged clusters reach it.
func (e *Engine) joinClusters(s *session, r *Request, lk *links, t int64) (float64, [linkKinds]*cluster) {
	var cl [linkKinds]*cluster
	ct := e.clusters
	ct.mu.Lock()
	defer ct.mu.Unlock()
	spread := 0.0
	for k := 0; k < linkKinds; k++ {
		if lk[k] == 0 {
			continue
		}
		c := ct.m[lk[k]]
		if c == nil {
			ip, _ := e.id.clientIP(r)
			c = ct.get(lk[k], k, linkLabel(k, r, ip), t)
		} else {
			c.decayTo(t, ct.half)
		}
		if e.markOnce(s, lk[k]^e.joinSalt) {
			c.sessions++
		}
		if s.ownFlag && e.markOnce(s, lk[k]^e.flagSalt) {
			c.flagged++
			c.addMember(s.id)
		}
		cl[k] = c
		if !s.ownFlag {
			spread = max(spread, linkWeight[k]*c.spread())
		}
	}
	return spread, cl
}

// markOnce sets a salted mark in the session's filter and reports whether
// it was new.
func (e *Engine) markOnce(s *session, key uint64) bool {
	l := locate(hashmix.Mix64(key))
	inCur, seen := s.set.has(&l)
	if !inCur {
		s.set.add(&l)
	}
	return !seen
}

func (e *Engine) flagInClusters(s *session, lk *links, cl [linkKinds]*cluster, t int64) {
	ct := e.clusters
	ct.mu.Lock()
	defer ct.mu.Unlock()
	for k, c := range cl {
		if c != nil && e.markOnce(s, lk[k]^e.flagSalt) {
			c.decayTo(t, ct.half)
			c.flagged++
			c.addMember(s.id)
		}
	}
}

// nextTier applies thresholds, hysteresis and quarantine.
func (e *Engine) nextTier(s *session, score float64, t int64) Verdict {
	th := e.cfg.Thresholds
	level := [4]float64{0, th.Degrade, th.Throttle, th.Block}
	target := Allow
	for v := Block; v > Allow; v-- {
		if score >= level[v] {
			target = v
			break
		}
	}
	cur := s.tier
	if target > cur {
		cur = target
	} else {
		// Step down only once the score is a hysteresis margin below the
		// current tier's level.
		for cur > target && score < level[cur]-th.Hysteresis {
			cur--
		}
	}
	if s.quarantineUntil > t {
		cur = Block
	}
	if cur == Block && s.tier != Block {
		s.quarantineUntil = t + int64(e.cfg.Quarantine)
		e.quarantine.add(s.id, s.quarantineUntil, t)
	}
	return cur
}

func (e *Engine) record(d Decision, st *strengths) {
	ctx := context.Background()
	sh := 0
	if d.Shadow {
		sh = 1
	}
	e.m.verdicts.Add(ctx, 1, e.m.verdictAt[d.Verdict][sh]...)
	e.m.score.Record(ctx, d.Score)
	for i, v := range st {
		if v >= fireLevel {
			e.m.firings.Add(ctx, 1, e.m.signalAt[i]...)
		}
	}
}

// audit writes one structured line per verdict change.
func (e *Engine) audit(d Decision, old Verdict, requests uint32) {
	e.m.changes.Add(context.Background(), 1)
	top := d.Signals
	if len(top) > 3 {
		top = top[:3]
	}
	sig := make([]any, 0, len(top))
	for _, s := range top {
		sig = append(sig, slog.Group(s.Name, slog.Float64("value", s.Value), slog.Float64("contribution", s.Contribution)))
	}
	e.log.LogAttrs(context.Background(), slog.LevelInfo, "scoring verdict changed",
		slog.String("session", d.Session),
		slog.String("from", old.String()),
		slog.String("to", d.Verdict.String()),
		slog.Float64("score", d.Score),
		slog.Uint64("requests", uint64(requests)),
		slog.Bool("shadow", d.Shadow),
		slog.Group("signals", sig...),
	)
}

// errNotFound reports an unknown session id.
var errNotFound = errors.New("session not found")

// tokenBucket limits an event rate on request time (nanoseconds); time that
// runs backwards adds nothing.
type tokenBucket struct {
	mu     sync.Mutex
	rate   float64 // per second
	burst  float64
	tokens float64
	last   int64
}

func (b *tokenBucket) take(now int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.last == 0 {
		b.last = now
	}
	if now > b.last {
		b.tokens = math.Min(b.burst, b.tokens+float64(now-b.last)/1e9*b.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
