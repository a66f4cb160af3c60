package scoring

import (
	"github.com/distillguard/distillguard/internal/hashmix"

	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
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
	// EvidencePromptBytes, when positive, keeps the first this many bytes
	// of each prompt in the verdict history (history.go) for evidence
	// exports (evidence.include_prompts). Zero keeps keyed hashes only.
	EvidencePromptBytes int
}

// Engine is the session-risk Scorer. It is safe for concurrent use; Close
// releases its background goroutines (the state caches').
type Engine struct {
	cfg     Config
	weights [numSignals]float64
	params  signalParams
	an      *analyzer
	id      *identity
	key     hashKey // keys raw-prompt, conversation, application and cohort hashes
	// pmac keys the prompt hashes of the verdict history; promptBytes is
	// how much of each prompt it keeps (history.go).
	pmac        *promptMAC
	promptBytes int
	// salts of the marks kept in session filters
	repSalt, convSalt, rawSalt, normSalt, joinSalt, flagSalt, appSalt uint64

	main, prob stateTier
	stripes    [256]stripe

	agg        aggregates
	clusters   *clusterTable
	index      *riskIndex
	quarantine *quarantineList
	remembered *quarantineList // identities with earned standing (standing.go)
	trust      *trustTable
	rep        *replica // replicated mode (scoring.redis); nil in process

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

var (
	_ Scorer           = (*Engine)(nil)
	_ ResponseObserver = (*Engine)(nil)
)

// interArrivalMax: gaps longer than this are breaks between sittings, not
// part of a client's request rhythm.
const interArrivalMax = 4 * time.Hour

// freshAge: a session younger than this (request time) is a fresh account
// for the cohort signal; freshRequests bounds how many of its requests
// report template elements to the shared sketch.
const (
	freshAge      = 6 * time.Hour
	freshRequests = 4
)

// New builds an Engine. Zero fields of cfg take their defaults.
func New(cfg Config, opts Options) (*Engine, error) {
	if err := cfg.ResolveFiles(); err != nil {
		return nil, fmt.Errorf("scoring: %w", err)
	}
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
	e.params = signalParams{
		volumeH: cfg.VolumeHalfLife.Hours(), burstH: cfg.BurstHalfLife.Hours(),
		half:     halfLives{content: float64(cfg.ContentHalfLife), volume: float64(cfg.VolumeHalfLife), burst: float64(cfg.BurstHalfLife)},
		freshAge: int64(freshAge),
	}

	keys, err := newKeyMaterial(cfg.Secret, opts.Seed)
	if err != nil {
		return nil, fmt.Errorf("scoring: %w", err)
	}
	// Every hash is keyed from the root: bloom and sketch positions cannot
	// be predicted, let alone collided, without the secret.
	if e.id, err = newIdentity(&cfg, keys.derive("session-id"), newHashKey(keys.derive("link-hash"))); err != nil {
		return nil, fmt.Errorf("scoring: %w", err)
	}
	if e.trust, err = newTrustTable(cfg.Trusted, cfg.JWTPayloadHeader); err != nil {
		return nil, fmt.Errorf("scoring: %w", err)
	}
	tokenKey := newHashKey(keys.derive("token-hash"))
	e.an = newAnalyzer(tokenKey, cfg.MaxPromptBytes)
	e.key = newHashKey(keys.derive("request-hash"))
	e.pmac = newPromptMAC(keys.derive("evidence-prompt"))
	e.promptBytes = opts.EvidencePromptBytes
	e.repSalt = tokenKey.sumString(0, "template-report")
	e.convSalt = tokenKey.sumString(0, "template-conversational")
	e.rawSalt = tokenKey.sumString(0, "raw-prompt")
	e.normSalt = tokenKey.sumString(0, "normalized-prompt")
	e.joinSalt = tokenKey.sumString(0, "cluster-join")
	e.flagSalt = tokenKey.sumString(0, "cluster-flag")
	e.appSalt = tokenKey.sumString(0, "application")
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
	e.agg = newLocalAggregates(int64(cfg.CampaignWindow), cfg.CampaignCapacity)
	s1, s2 := keys.seeds("cluster-eviction")
	e.clusters = newClusterTable(cfg.MaxClusters, int64(cfg.ContentHalfLife), s1, s2)
	e.index = newRiskIndex(cfg.IndexSize, cfg.Thresholds.Degrade/2)
	s1, s2 = keys.seeds("quarantine-eviction")
	e.quarantine = newQuarantineList(cfg.QuarantineEntries, s1, s2)
	s1, s2 = keys.seeds("standing-eviction")
	e.remembered = newQuarantineList(cfg.Standing.Entries, s1, s2)
	e.promote = tokenBucket{rate: cfg.PromoteRate, burst: 10 * cfg.PromoteRate, tokens: 10 * cfg.PromoteRate}
	if e.m, err = newInstruments(opts.MeterProvider, e); err != nil {
		e.main.Close()
		e.prob.Close()
		return nil, fmt.Errorf("scoring: metrics: %w", err)
	}
	if cfg.Redis.Enabled() {
		if e.rep, err = newReplica(e, cfg, opts); err != nil {
			_ = e.m.reg.Unregister()
			e.main.Close()
			e.prob.Close()
			return nil, fmt.Errorf("scoring: redis: %w", err)
		}
	}
	return e, nil
}

// Close stops the caches' goroutines and unregisters metric callbacks.
// Score must not be called after Close.
func (e *Engine) Close() error {
	if !e.closed.CompareAndSwap(false, true) {
		return nil
	}
	// The flusher writes what is queued, then stops.
	if e.rep != nil {
		e.rep.close()
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
		TemplateBytes:     int64(e.agg.bytes()),
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
	tr := e.trust.match(r, id)

	var f *textFeatures
	cont := isContinuation(r)
	if !cont {
		f = e.an.analyze(r.Prompt, sc)
		if f.invalidUTF8 {
			e.m.badInput(badInvalidUTF8)
		}
		if f.binary {
			e.m.badInput(badBinary)
		}
		if f.truncated {
			e.m.badInput(badTruncated)
		}
	}

	// Replicated mode: the one Redis call of the request, made before the
	// session's lock is taken so a slow Redis holds up nobody else.
	var remote fetched
	if e.rep != nil {
		remote = e.rep.read(d.Session)
	}
	st := &e.stripes[id[0]]
	st.Lock()
	s := e.lookup(d.Session, id, now, &remote)
	old := s.tier
	ev := e.observe(s, r, f, sc, &lk, now, tr)
	e.recordHistory(s, r, &ev, now)
	e.store(d.Session, s)
	if e.rep != nil {
		e.rep.markDirty(s)
	}
	requests := s.requests
	var expl string
	if ev.entry.tier != old {
		expl = e.explainText(s, &ev.st, &ev.contrib, tr)
	}
	st.Unlock()

	d.Verdict, d.Score, d.Signals, d.Shadow = ev.entry.tier, ev.score, ev.signals, e.cfg.Shadow
	if tr != nil {
		d.Trusted = tr.name
		if tr.allowAlways {
			d.Verdict = Allow
		}
	}
	d.Explanation = expl
	d.Probation = ev.probation
	e.m.standing(d.Probation, e.cfg.Standing.Enabled && tr == nil)
	if ev.entry.tier != Allow || ev.entry.peak >= e.index.minScore {
		e.index.update(id, ev.entry, ev.signals)
	}
	e.record(d, &ev.st)
	if ev.entry.tier != old {
		e.audit(d, ev.entry.tier, old, requests)
	}
	return d
}

// cached finds the session in either cache: the main one (promoted
// sessions) or probation.
func (e *Engine) cached(key string) (*session, bool) {
	if s, ok := e.main.Get(key); ok {
		return s, true
	}
	return e.prob.Get(key)
}

// lookup finds or creates the session, brought up to the remote state in
// replicated mode. Called with the stripe lock held.
func (e *Engine) lookup(key string, id [16]byte, now int64, remote *fetched) *session {
	s, ok := e.cached(key)
	if !ok {
		s = &session{id: id}
	}
	if e.rep != nil {
		e.rep.reconcile(s, *remote)
		e.rep.applyStanding(id, remote, now)
	}
	if s.requests > 0 && now-s.last > int64(e.cfg.SessionTTL) {
		// Idle past the TTL: start over in the same cache slot (and, in
		// replicated mode, replace the remote state with the new one).
		rep := s.rep
		if rep != nil {
			rep.inc, rep.ver, rep.base, rep.force = 0, 0, nil, true
		}
		*s = session{id: id, flags: s.flags & fPromoted, wallSet: s.wallSet, cost: s.cost, rep: rep}
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
	if !s.has(fPromoted) && (int(s.requests) >= e.cfg.PromoteAfter || s.tier > Allow) &&
		int(s.requests)%e.cfg.PromoteAfter == int(s.setTries)%e.cfg.PromoteAfter && e.promote.take(s.last) {
		s.setTries++
		s.cost = s.bytes()
		if e.main.SetWithTTL(key, s, s.cost, ttl) {
			e.main.Wait()
			if _, ok := e.main.Get(key); ok {
				s.flags |= fPromoted
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
		if s.has(fPromoted) {
			cache = e.main
		}
		cache.SetWithTTL(key, s, c, ttl)
	}
}

// evaluation is the outcome of observing one request.
type evaluation struct {
	st      strengths
	contrib [numSignals]float64
	score   float64
	signals []Signal
	entry   indexEntry // the session after the request, for the index
	// probation: the session has not earned standing (standing.go)
	probation bool
}

// observe folds r into s and decides the tier. f is nil for a tool-loop
// continuation (its user turn is not new). Called with the stripe lock
// held.
func (e *Engine) observe(s *session, r *Request, f *textFeatures, sc *textScratch, lk *links, now int64, tr *trusted) evaluation {
	cfg := &e.cfg
	t := now
	c := &s.c
	hl := &e.params.half
	if s.requests > 0 {
		if t < s.last {
			// Per-session time never runs backwards (clock skew between
			// proxies, replays): treat the request as simultaneous.
			t = s.last
			e.m.badInput(badClockBackward)
		}
	} else {
		s.first = t
		s.allSingle = true
	}
	c.rebase(t, hl)
	w := c.scalesAt(t, hl)
	if s.requests > 0 {
		if dt := t - s.last; dt <= int64(interArrivalMax) {
			x := math.Log(math.Max(float64(dt), 1e8) / 1e9) // seconds, floor 100 ms
			c.add(cIaN, 1, &w)
			c.add(cIaS, float32(x), &w)
			c.add(cIaQ, float32(x*x), &w)
		}
	}
	s.last = t
	s.requests++
	s.hours.mark(t)

	hist := hasHistory(r)
	cont := f == nil
	c.add(cN, 1, &w)
	if !hist && !cont {
		c.add(cSingle, 1, &w)
		c.add(vConv, 1, &w)
	} else {
		s.allSingle = false
		s.flags |= fHadHistory
	}
	c.add(vVol, 1, &w)
	c.add(bVol, 1, &w)
	c.add(vTok, float32(len(r.Prompt)/4+max(r.MaxTokens, 0)), &w)
	if g := generationDemand(r); g > 0 {
		c.add(cGen, float32(g), &w)
	}
	if lp := harvestIntensity(r); lp > 0 {
		c.add(cLp, float32(lp), &w)
	}
	s.ev.maxTop = uint8(max(int(s.ev.maxTop), min(r.TopLogprobs, 255)))
	if lbs := logitBiasStrength(r); lbs > 0 {
		c.add(cLb, float32(lbs), &w)
		c.add(cLbN, 1, &w)
	}
	// Languages are remembered per window of two content half-lives (the
	// current and the previous window count).
	ep := int32(t / int64(2*cfg.ContentHalfLife))
	if ep != s.langEpoch {
		if ep == s.langEpoch+1 {
			s.langPrev, s.cotPrev = s.langCur, s.cotLangs
		} else {
			s.langPrev, s.cotPrev = 0, 0
		}
		s.langCur, s.cotLangs, s.langEpoch = 0, 0, ep
	}

	app := e.application(s, r, hist || cont, t)
	if app {
		c.add(cApp, 1, &w)
	}
	if f != nil {
		e.text(s, r, f, sc, hist, t, &w)
	} else if r.AfterUser <= 2 {
		// The first tool round of a task: the task's opening turn led to
		// work, which is what an application's users do.
		e.reportConversational(s, r.Prompt, t)
	}

	cohort := e.cohort(s, r, f, t)
	spread, cl := e.joinClusters(s, r, lk, t)
	s.spread = float32(spread)
	v := e.view(s, t, spread, cohort)
	st := computeStrengths(s, &e.params, &v)
	score, contrib := combine(&st, &e.weights, cfg.AutomationCap, -1)
	if !s.has(fOwnFlag) && (tr == nil || !tr.allowAlways) {
		own, _ := combine(&st, &e.weights, cfg.AutomationCap, sigCluster)
		if own >= cfg.Thresholds.Degrade {
			s.flags |= fOwnFlag
			e.flagInClusters(s, lk, cl, t)
		}
	}
	s.score = float32(score)
	s.peak = max(s.peak, s.score)
	th := cfg.Thresholds
	if tr != nil && tr.thresholds != nil {
		th = *tr.thresholds
	}
	s.tier = e.nextTier(s, score, t, th)
	probation, records := e.standing(s, &st, score, t, tr)
	if probation && s.tier < Throttle && (recordAsk(f, r) || st[sigCampaign] >= campaignRefusal || st[sigCohort] >= campaignRefusal || records >= campaignRefusal) {
		// An identity without standing has no history to weigh against
		// strong campaign evidence (its template shared by many accounts
		// that never converse, or a burst of fresh accounts opening the
		// same way), and a numeric record asked with logprobs or
		// logit_bias (the feature vectors of an equation-solving or
		// distillation attack, Tramèr et al. 2016) is what probation would
		// strip to a label anyway: answering would still hand a rotating
		// harvester the labels it needs, a few per fresh identity. It is
		// throttled instead; identities with standing are judged on the
		// score alone.
		s.tier = Throttle
	}
	return evaluation{st: st, contrib: contrib, score: round3(score), signals: explain(&st, &contrib), entry: indexEntry{
		score: score, peak: float64(s.peak), tier: s.tier, requests: s.requests, first: s.first, last: s.last,
	}, probation: probation}
}

// view gathers the decayed counters and cross-account figures an
// evaluation reads.
func (e *Engine) view(s *session, t int64, spread, cohort float64) view {
	sc := s.c.scalesAt(t, &e.params.half)
	return view{
		c: s.c.decayed(&sc), langs: popcount(s.langCur | s.langPrev), cot: popcount(s.cotLangs | s.cotPrev),
		spread: spread, cohort: cohort, now: t,
	}
}

// text folds the features of a newly written user turn into the session:
// languages and reasoning demands, duplicates against the session's own
// filter, template elements against the shared sketch, near variations of
// earlier prompts, and the follow-up bookkeeping of conversations. Called
// with the stripe lock held.
func (e *Engine) text(s *session, r *Request, f *textFeatures, sc *textScratch, hist bool, t int64, w *scales) {
	c := &s.c
	c.add(cText, 1, w)
	s.langCur |= f.langs
	if f.cot {
		c.add(cCot, 1, w)
		s.cotLangs |= f.cotLangs
		if f.cotMixed {
			c.add(cCotMixed, 1, w)
		}
	}
	if f.known {
		c.add(cKnown, 1, w)
	}
	s.texts++
	raw := e.key.sumString(0, r.Prompt)
	rawSeen, normSeen := false, false
	if r.Prompt != "" {
		rawSeen = e.markSeen(s, raw^e.rawSalt)
		normSeen = e.markSeen(s, f.norm^e.normSalt)
	}
	if recordAsk(f, r) {
		c.add(cNumeric, 1, w)
		c.add(vNumeric, 1, w)
	}

	n := len(f.shingles)
	var dupFrac float64
	if n > 0 {
		sc.grow()
		rep, counts := sc.rep[:n], sc.counts[:n]
		first := s.texts == 1
		dups := 0
		for i, h := range f.shingles {
			l := locate(h)
			seen := s.set.testAndAdd(&l)
			rep[i] = repNone
			if seen {
				dups++
			}
			// A session reports an element to the shared sketch once as a
			// reuser (templates recur within a session; harvested content
			// does not), and the elements of its first request once.
			if first {
				rep[i] |= repFirst
			}
			if seen && !e.markSeen(s, h^e.repSalt) {
				rep[i] |= repReuse
			}
			sc.seen[i] = seen
		}
		e.agg.observeTemplates(t, f.shingles, rep, counts)
		// Only elements this session uses as a template (it sent them
		// before, or this is its first request) are evidence against it:
		// content that harvesters also sent once each is not a template.
		shared, best := 0.0, templateCount{}
		for i, ct := range counts {
			if !sc.seen[i] && !first {
				continue
			}
			x := campaignShare(ct, float64(e.cfg.CampaignMinSessions))
			shared += x
			if x > 0 && ct.sessions() > best.sessions() {
				best = ct
			}
		}
		// The evidence of a request: the share of its sampled shingles that
		// are a campaign's, and how much text that share stands for (a
		// wrapper is a paragraph; a common phrase in a short question is a
		// few words).
		frac := shared / float64(n)
		abs := frac * float64(max(f.tokens-shingleN+1, 1))
		if tm := ramp(frac, 0.3, 0.6) * ramp(abs, 4, 10); tm > 0 {
			c.add(cTmpl, float32(tm), w)
			s.ev.tmplSessions, s.ev.tmplConv = best.sessions(), best.conv
		}
		dupFrac = float64(dups) / float64(n)
		if s.texts > 1 {
			c.add(cDup, float32(dupFrac), w)
			c.add(cDupN, 1, w)
		}
		c.add(cNovel, float32(1-dupFrac), w)
		// A near variation: almost all of the prompt was sent before, the
		// few new shingles a number or a word, yet the prompt itself is
		// new (an identical re-send is a retry, not a probe).
		novel := (1 - dupFrac) * float64(max(f.tokens-shingleN+1, 1))
		if !rawSeen && dupFrac >= 0.75 && novel <= 4.5 && f.tokens >= 6 {
			c.add(cProbe, 1, w)
		}
	}

	conv := raw
	if hist {
		if r.FirstUser != "" {
			conv = e.key.sumString(0, r.FirstUser)
		}
		// Follow-ups of tool-using conversations (agents) are work on a
		// task, not chat: they do not count as chat follow-ups.
		if f.tokens >= 3 && r.ToolCount == 0 && r.ToolTurns == 0 {
			c.add(cFol, 1, w)
			// Recycled: the same follow-up, word for word once
			// normalized, as one the session sent before.
			if normSeen {
				c.add(cFolRec, 1, w)
			}
			if conv == s.lastConv {
				c.add(cFolSeq, 1, w)
			}
		}
		// The first follow-up of a conversation tells the sketch that the
		// elements of its opening turn led to a conversation.
		if r.UserTurns == 2 && r.FirstUser != "" {
			e.reportConversational(s, r.FirstUser, t)
		}
	}
	s.lastConv = conv
}

// reportConversational marks the template elements of a conversation's
// opening turn as followed by a conversation, once per session and element.
func (e *Engine) reportConversational(s *session, first string, t int64) {
	sc := e.scratch.Get().(*textScratch)
	defer e.scratch.Put(sc)
	f := e.an.analyze(first, sc)
	n := len(f.shingles)
	if n == 0 {
		return
	}
	sc.grow()
	rep := sc.rep[:n]
	any := false
	for i, h := range f.shingles {
		rep[i] = repNone
		if !e.markSeen(s, h^e.convSalt) {
			rep[i] = repConv
			any = true
		}
	}
	if any {
		e.agg.observeTemplates(t, f.shingles, rep, sc.counts[:n])
	}
}

// application handles the request's application element: the keyed hash
// of its system prompt and tool definitions. Many long-lived accounts that
// converse or run tool loops behind the same element are an application's
// users; many accounts behind it that never do are a campaign sharing a
// wrapper. It reports whether the element is a campaign's. Called with the
// stripe lock held.
func (e *Engine) application(s *session, r *Request, conversing bool, t int64) bool {
	if r.System == "" && r.Tools == "" {
		return false
	}
	h := e.key.sumString(e.key.sumString(e.appSalt, r.System), r.Tools)
	rep := repNone
	if !s.has(fAppReported) {
		// The application element counts its sessions by their first use.
		s.flags |= fAppReported
		rep |= repFirst
	}
	if conversing && !s.has(fAppConv) {
		s.flags |= fAppConv
		rep |= repConv
	}
	var out [1]templateCount
	e.agg.observeTemplates(t, []uint64{h}, []uint8{rep}, out[:])
	shared := campaignShare(out[0], float64(e.cfg.CampaignMinSessions)) >= 0.5
	s.ev.appShared = shared
	if shared && out[0].sessions() > s.ev.tmplSessions {
		s.ev.tmplSessions, s.ev.tmplConv = out[0].sessions(), out[0].conv
	}
	return shared
}

// cohort reports a fresh, single-turn session into its behaviour class once
// it has sent two analysed requests, and returns the burst strength of that
// class (0 when the session is not fresh). Called with the stripe lock
// held.
func (e *Engine) cohort(s *session, r *Request, f *textFeatures, t int64) float64 {
	if t-s.first > e.params.freshAge {
		return 0
	}
	report := false
	if !s.has(fCohortDone) && s.allSingle && f != nil && s.requests >= 2 {
		// The class: endpoint, model, whether the opening requests demand
		// reasoning, use a distillation format or carry a system prompt.
		var b [4]byte
		if s.c.v[cCot] > 0 {
			b[0] = 1
		}
		if s.c.v[cKnown] > 0 {
			b[1] = 1
		}
		if r.System != "" {
			b[2] = 1
		}
		h := e.key.sumString(e.key.sumString(e.key.sum(0, b[:]), r.Endpoint), r.Model)
		s.cohortClass = uint32(h)
		s.flags |= fCohortDone
		report = true
	}
	if !s.has(fCohortDone) {
		return 0
	}
	cc := e.agg.observeCohort(t, s.cohortClass, report, s.cotLangs|s.cotPrev)
	s.ev.cohortFresh, s.ev.cohortBase, s.ev.cohortLangs = cc.fresh, cc.base, cc.langs
	return e.cohortStrength(s)
}

// cohortStrength is the burst strength of the session's cohort as of its
// last request, from the figures it recorded (admin API).
func (e *Engine) cohortStrength(s *session) float64 {
	if !s.has(fCohortDone) || s.last-s.first > e.params.freshAge {
		return 0
	}
	return ramp(float64(s.ev.cohortFresh-2*s.ev.cohortBase), 8, 24)
}

// markSeen sets a salted mark in the session's filter and reports whether
// it was there already.
func (e *Engine) markSeen(s *session, key uint64) bool {
	l := locate(hashmix.Mix64(key))
	return s.set.testAndAdd(&l)
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
		if !e.markSeen(s, lk[k]^e.joinSalt) {
			c.sessions++
			ct.note(lk[k], c, 1, 0, nil, t)
		}
		if s.has(fOwnFlag) && !e.markSeen(s, lk[k]^e.flagSalt) {
			c.flagged++
			c.addMember(s.id)
			ct.note(lk[k], c, 0, 1, &s.id, t)
		}
		cl[k] = c
		if !s.has(fOwnFlag) {
			spread = max(spread, linkWeight[k]*c.spread())
		}
	}
	return spread, cl
}

func (e *Engine) flagInClusters(s *session, lk *links, cl [linkKinds]*cluster, t int64) {
	ct := e.clusters
	ct.mu.Lock()
	defer ct.mu.Unlock()
	for k, c := range cl {
		if c != nil && !e.markSeen(s, lk[k]^e.flagSalt) {
			c.decayTo(t, ct.half)
			c.flagged++
			c.addMember(s.id)
			ct.note(lk[k], c, 0, 1, &s.id, t)
		}
	}
}

// nextTier applies thresholds (the configured ones, or a trusted
// identity's), hysteresis and quarantine.
func (e *Engine) nextTier(s *session, score float64, t int64, th Thresholds) Verdict {
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

// audit writes one structured line per verdict change, with the top
// signals and the explanation of the new tier. tier is the scored tier;
// d.Verdict differs from it only for an allow-always trusted identity.
func (e *Engine) audit(d Decision, tier, old Verdict, requests uint32) {
	e.m.changes.Add(context.Background(), 1)
	top := d.Signals
	if len(top) > 3 {
		top = top[:3]
	}
	sig := make([]any, 0, len(top))
	for _, s := range top {
		sig = append(sig, slog.Group(s.Name, slog.Float64("value", s.Value), slog.Float64("contribution", s.Contribution)))
	}
	attrs := []slog.Attr{
		slog.String("session", d.Session),
		slog.String("from", old.String()),
		slog.String("to", tier.String()),
		slog.Float64("score", d.Score),
		slog.Uint64("requests", uint64(requests)),
		slog.Bool("shadow", d.Shadow),
		slog.Group("signals", sig...),
		slog.String("explanation", d.Explanation),
	}
	if d.Trusted != "" {
		attrs = append(attrs, slog.String("trusted", d.Trusted), slog.String("enforced", d.Verdict.String()))
	}
	e.log.LogAttrs(context.Background(), slog.LevelInfo, "scoring verdict changed", attrs...)
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
