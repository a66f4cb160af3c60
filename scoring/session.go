package scoring

import (
	"math"
	"unsafe"

	"github.com/bits-and-blooms/bloom/v3"

	"github.com/distillguard/distillguard/internal/hashmix"
)

// Bloom filters here are indexed with locations derived from the engine's
// keyed 64-bit shingle hashes (Kirsch–Mitzenmacher double hashing), so
// an attacker who does not know the per-process key cannot craft colliding
// shingles offline. All filters share bloomK, so the locations of a shingle
// are computed once and tested against every filter (session and global).
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

// Per-session shingle set: two generations of bloom filters. New entries go
// to cur; when cur holds its capacity it becomes prev and a filter twice the
// size (up to sessionBloomMaxBits) replaces it. A lookup checks both, and a
// shingle found only in prev is re-added to cur, so recurring shingles
// (templates) survive rotation while one-off content ages out. Sessions
// that send one or two requests keep a 256-bit filter: 32 bytes.
const (
	sessionBloomMinBits = 256
	sessionBloomMaxBits = 4096
)

type shingleSet struct {
	cur, prev *bloom.BloomFilter
	n         uint32 // entries added to cur
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
		grew = true
	}
	bloomAdd(s.cur, l)
	s.n++
	return grew
}

func (s *shingleSet) bytes() int { return bloomBytes(s.cur) + bloomBytes(s.prev) }

// counters are exponentially decayed: each is multiplied by 2^(-dt/H) before
// the current request is added, with H the half-life of its group. float32
// halves the state; the values are small sums that need no more precision.
type counters struct {
	// content group (Config.ContentHalfLife)
	n      float32 // requests
	single float32 // requests without conversation history
	dup    float32 // sum of per-request duplicate fractions (requests after the first)
	dupN   float32 // requests contributing to dup
	novel  float32 // sum of per-request novel fractions
	tmpl   float32 // requests carrying a shared template
	cot    float32 // requests demanding step-by-step reasoning
	lp     float32 // sum of logprob-harvest intensities
	lb     float32 // sum of logit-bias strengths
	lbN    float32 // requests with logit_bias
	iaN    float32 // inter-arrival samples
	iaS    float32 // sum of ln(gap/1s)
	iaQ    float32 // sum of ln(gap/1s)^2
	// volume group (Config.VolumeHalfLife / BurstHalfLife)
	volLong  float32
	volShort float32
	tokLong  float32 // prompt tokens (bytes/4) plus requested completion tokens
}

// session is one client's state. It is guarded by the engine stripe lock of
// its id; the caches hold pointers to it.
type session struct {
	id              [16]byte
	first           int64 // request-time nanoseconds
	last            int64
	wallSet         int64 // wall clock of the last cache Set (TTL refresh)
	requests        uint32
	langEpoch       int32
	langCur         uint32
	langPrev        uint32
	tier            Verdict
	promoted        bool
	ownFlag         bool // flagged on its own evidence (counted in clusters)
	setTries        uint8
	quarantineUntil int64
	score           float32
	peak            float32
	spread          float32 // cluster spread at the last request
	c               counters
	set             shingleSet
	cost            int64 // last cost reported to the cache
}

// sessionOverhead is what the cache spends per entry beyond the item ristretto
// already counts (its storeItem): the entries of its store map, its policy's
// key-cost map and its TTL bucket map, measured with BenchmarkIdleSessionMemory.
const sessionOverhead = 160

func (s *session) bytes() int64 {
	return int64(unsafe.Sizeof(*s)) + int64(s.set.bytes()) + sessionOverhead
}

// decay multiplies x by 2^(-dt/h).
func decayFactor(dt, h int64) float32 {
	if dt <= 0 {
		return 1
	}
	return float32(math.Exp2(-float64(dt) / float64(h)))
}

func (c *counters) decay(dt int64, content, volume, burst int64) {
	if dt <= 0 {
		return
	}
	fc := decayFactor(dt, content)
	for _, p := range []*float32{&c.n, &c.single, &c.dup, &c.dupN, &c.novel, &c.tmpl, &c.cot, &c.lp, &c.lb, &c.lbN, &c.iaN, &c.iaS, &c.iaQ} {
		*p *= fc
	}
	fv := decayFactor(dt, volume)
	c.volLong *= fv
	c.tokLong *= fv
	c.volShort *= decayFactor(dt, burst)
}
