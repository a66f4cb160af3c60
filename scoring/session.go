package scoring

import (
	"math"
	"math/bits"
	"unsafe"

	"github.com/bits-and-blooms/bloom/v3"

	"github.com/distillguard/distillguard/internal/hashmix"
)

// Bloom filters here are indexed with locations derived from the engine's
// keyed 64-bit shingle hashes (Kirsch–Mitzenmacher double hashing), so
// an attacker who does not know the per-process key cannot craft colliding
// shingles offline. All filters share bloomK, so the locations of a shingle
// are computed once and tested against every filter.
const bloomK = 7

// bitsPerEntry gives a 1% false-positive rate at k=7.
const bitsPerEntry = 9.6

type locations [bloomK]uint64

func locate(h uint64) locations {
	var l locations
	h2 := hashmix.Mix64(h^0x6a09e667f3bcc909) | 1
	for i := range l {
		l[i] = h + uint64(i)*h2
	}
	return l
}

func bloomAdd(f *bloom.BloomFilter, l *locations) {
	m := uint64(f.Cap())
	b := f.BitSet()
	for _, x := range l {
		b.Set(uint(x % m))
	}
}

// bloomBytes is the memory one filter holds: struct, bitset header, words.
func bloomBytes(f *bloom.BloomFilter) int {
	if f == nil {
		return 0
	}
	return 24 + 32 + int(f.Cap()+63)/64*8
}

// Per-session shingle set: two generations of bloom filters (bitsets). New
// entries go to cur; when cur holds its capacity it becomes prev and a
// filter twice the size (up to sessionBloomMaxBits) replaces it. A lookup
// checks both, and a shingle found only in prev is re-added to cur, so
// recurring shingles (templates) survive rotation while one-off content
// ages out. Sessions that send one or two requests keep a 256-bit filter:
// 32 bytes. Two replicas' filters of the same generation merge by OR.
const (
	sessionBloomMinBits = 256
	sessionBloomMaxBits = 4096
)

type shingleSet struct {
	cur, prev *bloom.BloomFilter
	n         uint32 // entries added to cur
	// rot counts rotations: generation rot has min(256<<rot, 4096) bits,
	// so replicas' filters of one generation have the same size and
	// merge by OR (replica_state.go).
	rot uint32
}

func (s *shingleSet) has(l *locations) (inCur, any bool) {
	if s.cur != nil && s.cur.TestLocations(l[:]) {
		return true, true
	}
	return false, s.prev != nil && s.prev.TestLocations(l[:])
}

// add inserts l into cur and reports whether the set's memory changed.
func (s *shingleSet) add(l *locations) (grew bool) {
	if s.cur == nil {
		s.cur = bloom.New(sessionBloomMinBits, bloomK)
		grew = true
	} else if float64(s.n) >= float64(s.cur.Cap())/bitsPerEntry {
		m := min(2*s.cur.Cap(), sessionBloomMaxBits)
		s.prev = s.cur
		s.cur = bloom.New(m, bloomK)
		s.n = 0
		s.rot++
		grew = true
	}
	bloomAdd(s.cur, l)
	s.n++
	return grew
}

// testAndAdd reports whether l was present and makes sure it is in cur.
func (s *shingleSet) testAndAdd(l *locations) bool {
	inCur, seen := s.has(l)
	if !inCur {
		s.add(l)
	}
	return seen
}

func (s *shingleSet) bytes() int { return bloomBytes(s.cur) + bloomBytes(s.prev) }

// Counters are forward-decayed (Cormode, Shkapenyuk, Srivastava and Xu,
// "Forward Decay: A Practical Time Decay Model for Streaming Systems",
// ICDE 2009): an event of weight w at time t adds w*2^((t-L)/H) to the
// stored sum, L being a landmark, and the decayed value at time now is the
// sum times 2^(-(now-L)/H). Increments are plain additions, so the counters
// of one session kept by several replicas merge by summing. The landmark
// sits on a fixed grid (landmarkStep), so replicas agree on it; when a
// request moves past the grid step the sums are rescaled once to the new
// landmark (exponents stay small enough for float32).
const landmarkStep = int64(64 * 60 * 1e9) // 64 minutes

// Counter indices. The content group decays with Config.ContentHalfLife,
// the volume group with VolumeHalfLife, the burst group with BurstHalfLife.
const (
	// content group
	cN        = iota // requests
	cSingle          // requests without conversation history
	cText            // requests whose newest user turn was analysed (not a tool-loop continuation)
	cDup             // sum of per-request duplicate fractions (text requests after the first)
	cDupN            // requests contributing to cDup
	cNovel           // sum of per-request novel fractions
	cTmpl            // sum of per-request shared-template evidence
	cKnown           // requests in a published distillation format
	cCot             // requests demanding step-by-step reasoning
	cCotMixed        // ... in a language other than the rest of the prompt
	cLp              // sum of logprob-harvest intensities
	cLb              // sum of logit-bias strengths
	cLbN             // requests with logit_bias
	cProbe           // requests that are small variations of an earlier one
	cFol             // follow-up turns (history, newest turn newly written)
	cFolRec          // follow-ups the session had already sent word for word
	cFolSeq          // follow-ups continuing the conversation of the previous request
	cIaN             // inter-arrival samples
	cIaS             // sum of ln(gap/1s)
	cIaQ             // sum of ln(gap/1s)^2
	cOut             // output tokens delivered (ResponseObserver)
	cApp             // requests whose system prompt / tools are a campaign's, not an application's
	cGen             // sum of per-request generation demands
	cNumeric         // numeric records asking for logprobs or logit_bias (standing.go)
	numContent
)

// volume and burst groups
const (
	vVol     = numContent + iota // requests
	vTok                         // prompt tokens (bytes/4) plus requested completion tokens
	vConv                        // conversation starts
	vNumeric                     // numeric records asking for logprobs or logit_bias, over the volume window
	bVol                         // burst group: requests
	numCounters
)

// counters are the forward-decayed sums of one session.
type counters struct {
	land int64 // landmark, request-time nanoseconds
	v    [numCounters]float32
}

// halfLives are the three decay constants, in nanoseconds.
type halfLives struct{ content, volume, burst float64 }

// scales are 2^((t-L)/H) for the three groups at one time.
type scales [3]float32

func groupOf(i int) int {
	switch {
	case i < numContent:
		return 0
	case i < bVol:
		return 1
	}
	return 2
}

// rebase moves the landmark onto the grid step containing t, rescaling the
// sums. A session seen for the first time starts at its step.
func (c *counters) rebase(t int64, h *halfLives) {
	land := t - t%landmarkStep
	if t < 0 && t%landmarkStep != 0 {
		land -= landmarkStep
	}
	if c.land == land {
		return
	}
	if c.land == 0 || land < c.land {
		if c.land == 0 {
			c.land = land
		}
		return
	}
	d := float64(land - c.land)
	f := [3]float32{
		float32(math.Exp2(-d / h.content)),
		float32(math.Exp2(-d / h.volume)),
		float32(math.Exp2(-d / h.burst)),
	}
	for i := range c.v {
		c.v[i] *= f[groupOf(i)]
	}
	c.land = land
}

// scalesAt returns the forward-decay weights of an event at t.
func (c *counters) scalesAt(t int64, h *halfLives) scales {
	d := float64(t - c.land)
	return scales{
		float32(math.Exp2(d / h.content)),
		float32(math.Exp2(d / h.volume)),
		float32(math.Exp2(d / h.burst)),
	}
}

// add records an event of weight w at the time of sc.
func (c *counters) add(i int, w float32, sc *scales) { c.v[i] += w * sc[groupOf(i)] }

// decayed returns the decayed values at the time of sc.
func (c *counters) decayed(sc *scales) [numCounters]float32 {
	var out [numCounters]float32
	for i, v := range c.v {
		out[i] = v / sc[groupOf(i)]
	}
	return out
}

// hourRing is a bitset of the hours (request time) in which the session was
// active, the newest 64 of them; merges by OR.
type hourRing struct {
	bits uint64
	last int64 // hour index of the newest bit
}

func (r *hourRing) mark(t int64) {
	h := t / int64(3.6e12)
	switch {
	case r.bits == 0:
	case h <= r.last:
		if r.last-h < 64 {
			r.bits |= 1 << uint(h%64)
		}
		return
	case h-r.last >= 64:
		r.bits = 0
	default:
		for x := r.last + 1; x <= h; x++ {
			r.bits &^= 1 << uint(x%64)
		}
	}
	r.bits |= 1 << uint(h%64)
	r.last = h
}

// activeWithin counts active hours among the n newest (n <= 64) up to the
// hour of t.
func (r *hourRing) activeWithin(t int64, n int) int {
	h := t / int64(3.6e12)
	c := 0
	for x := h - int64(n) + 1; x <= h; x++ {
		if x >= r.last-63 && x <= r.last && r.bits&(1<<uint(x%64)) != 0 {
			c++
		}
	}
	return c
}

// evidence keeps the figures an explanation quotes, from the request that
// last produced them.
type evidence struct {
	tmplSessions float32 // accounts sharing the most shared template element
	tmplConv     float32 // of which went on to converse
	cohortFresh  float32 // fresh accounts of the session's cohort in the last hours
	cohortBase   float32 // their expected number from the cohort's long-run rate
	cohortLangs  uint32  // reasoning-demand languages seen in the cohort
	maxTop       uint8   // largest top_logprobs asked
	appShared    bool    // the system prompt / tools element was campaign-shared
}

// Session flags.
const (
	fPromoted    = 1 << iota
	fOwnFlag     // flagged on its own evidence (counted in clusters)
	fCohortDone  // reported to the cohort sketch
	fHadHistory  // sent a request with conversation history
	fAppReported // reported its application element
	fAppConv     // reported its application element as conversational
	fStanding    // earned standing: out of probation (standing.go)
)

// session is one client's state. It is guarded by the engine stripe lock of
// its id; the caches hold pointers to it. Everything a replicated store
// would share is in the counters (sums), the bitsets (language masks, hour
// ring, shingle filters: OR) and the monotone fields (first: min, last and
// requests: max/sum, peak: max); tier, score and the quarantine deadline are
// the outcome of the latest evaluation.
type session struct {
	id              [16]byte
	first           int64 // request-time nanoseconds
	last            int64
	wallSet         int64 // wall clock of the last cache Set (TTL refresh)
	quarantineUntil int64
	lastConv        uint64 // hash of the conversation of the previous request
	requests        uint32
	texts           uint32 // requests with a newly written user turn
	langEpoch       int32
	langCur         uint32
	langPrev        uint32
	cotLangs        uint32 // languages of reasoning demands (current and previous epoch OR-ed at read)
	cotPrev         uint32
	cohortClass     uint32 // slot of the session's cohort class (with fCohortDone)
	tier            Verdict
	flags           uint8
	setTries        uint8
	allSingle       bool // every request so far had no conversation history
	score           float32
	peak            float32
	spread          float32 // cluster spread at the last request
	standFrom       int64   // start of the current clean run (standing.go)
	standNoted      int64   // when the earned standing was last remembered
	standReq        uint32  // requests at standFrom
	ev              evidence
	hours           hourRing
	c               counters
	set             shingleSet
	cost            int64 // last cost reported to the cache
	// rep is the replicated-mode bookkeeping (nil in process-only mode):
	// the version read from Redis and the state as of it, so what this
	// replica added since is known (replica_state.go).
	rep *replicaMeta
	// hist is the verdict history evidence exports quote (history.go);
	// nil until the session is first at a tier other than allow.
	hist *history
}

func (s *session) has(f uint8) bool { return s.flags&f != 0 }

// sessionOverhead is what the cache spends per entry beyond the item ristretto
// already counts (its storeItem): the entries of its store map, its policy's
// key-cost map and its TTL bucket map, measured with BenchmarkIdleSessionMemory.
const sessionOverhead = 160

// sessionFixedBytes is the fixed part of a session (without its filters).
const sessionFixedBytes = int64(unsafe.Sizeof(session{}))

func (s *session) bytes() int64 {
	n := sessionFixedBytes + int64(s.set.bytes()) + sessionOverhead + s.hist.bytes()
	if s.rep != nil {
		n += replicaMetaBytes
		if s.rep.base != nil {
			n += sessionFixedBytes // a base holds no filter bits (baseCopy)
		}
	}
	return n
}

func popcount(x uint32) int { return bits.OnesCount32(x) }
