package scoring

import (
	"math"
	"math/bits"
	"math/rand/v2"
	"sync"
	"time"
	"unsafe"

	"github.com/dgraph-io/ristretto/v2"

	"github.com/distillguard/distillguard/internal/hashmix"
)

// stateTier is one tier (probation or main) of the session state. Its
// methods are ristretto's, so production engines use a ristretto cache as
// it is; deterministic engines (Options.Seed) use a sampledTier.
type stateTier interface {
	Get(key string) (*session, bool)
	// SetWithTTL inserts or updates an entry. true means the entry was
	// taken for processing; whether a new entry was admitted shows in Get
	// once Wait returns.
	SetWithTTL(key string, s *session, cost int64, ttl time.Duration) bool
	Del(key string)
	// Wait returns once earlier Sets and Dels are applied.
	Wait()
	Close()
	// sessions and usedBytes size the tier for Stats.
	sessions() int64
	usedBytes() int64
}

// ristrettoTier is the production tier.
type ristrettoTier struct {
	*ristretto.Cache[string, *session]
}

// newRistrettoTier sizes a ristretto cache for maxCost bytes of ~512-byte
// sessions: ten frequency counters per expected entry, as ristretto
// recommends. Its TinyLFU admission keeps a flood of never-seen keys from
// displacing sessions that keep coming back.
func newRistrettoTier(maxCost int64) (stateTier, error) {
	c, err := ristretto.NewCache(&ristretto.Config[string, *session]{
		NumCounters: max(10*maxCost/512, 1024),
		MaxCost:     maxCost,
		BufferItems: 64,
		Metrics:     true,
	})
	if err != nil {
		return nil, err
	}
	return ristrettoTier{c}, nil
}

func (c ristrettoTier) sessions() int64 {
	return int64(c.Metrics.KeysAdded()) - int64(c.Metrics.KeysEvicted())
}

func (c ristrettoTier) usedBytes() int64 { return c.MaxCost() - c.RemainingCost() }

// sampledTier is the deterministic tier: the policy of ristretto (a cost
// bound, TinyLFU admission, sampled-LFU eviction), applied synchronously,
// with victims sampled by a seeded generator and frequencies counted in a
// keyed count-min sketch. ristretto itself cannot be replayed: it samples
// eviction candidates in map order, counts accesses through per-P buffers
// that drop batches under load, and applies Sets on its own goroutine.
//
// Entries carry no TTL. The engine resets a session idle past
// Config.SessionTTL (request time) on its next request, and an idle
// session's frequency fades (the sketch halves its counters periodically)
// until eviction picks it.
type sampledTier struct {
	mu      sync.Mutex
	maxCost int64
	used    int64
	idx     map[string]int32 // index in ents
	ents    []tierEntry
	key     hashKey // keys the sketch hashes
	freq    freqSketch
	rng     *rand.Rand
	// evicted counts entries removed to make room, rejected newcomers
	// that were requested less often than every sampled resident.
	evicted, rejected int64
}

type tierEntry struct {
	key  string
	s    *session
	cost int64
	hash uint64
}

const (
	// tierSample is how many residents eviction compares (ristretto's
	// lfuSample).
	tierSample = 5
	// tierEntryOverhead is what the tier spends per entry beyond the
	// session's own cost: the entry and its index map slot.
	tierEntryOverhead = int64(unsafe.Sizeof(tierEntry{})) + 48
)

func newSampledTier(maxCost int64, key hashKey, seed1, seed2 uint64) *sampledTier {
	entries := max(maxCost/512, 64)
	return &sampledTier{
		maxCost: maxCost,
		idx:     make(map[string]int32),
		key:     key,
		freq:    newFreqSketch(entries),
		rng:     rand.New(rand.NewPCG(seed1, seed2)),
	}
}

// Get returns the entry and counts the request (hit or miss) towards the
// key's frequency, as ristretto does.
func (t *sampledTier) Get(key string) (*session, bool) {
	h := t.key.sumString(0, key)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.freq.add(h)
	if i, ok := t.idx[key]; ok {
		return t.ents[i].s, true
	}
	return nil, false
}

// SetWithTTL updates an entry in place, or admits a new one when it fits or
// is requested at least as often as the least frequent of a sample of
// residents (evicted to make room, one after another). The TTL is ignored
// (see sampledTier).
func (t *sampledTier) SetWithTTL(key string, s *session, cost int64, _ time.Duration) bool {
	cost += tierEntryOverhead
	if cost > t.maxCost {
		return false
	}
	h := t.key.sumString(0, key)
	t.mu.Lock()
	defer t.mu.Unlock()
	if i, ok := t.idx[key]; ok {
		// Like a ristretto update: the new cost counts from now on and
		// makes room on the next insertion.
		e := &t.ents[i]
		t.used += cost - e.cost
		e.s, e.cost = s, cost
		return true
	}
	in := t.freq.estimate(h)
	for t.used+cost > t.maxCost && len(t.ents) > 0 {
		victim, vf := 0, math.MaxInt
		for range tierSample {
			i := t.rng.IntN(len(t.ents))
			if f := t.freq.estimate(t.ents[i].hash); f < vf {
				victim, vf = i, f
			}
		}
		if in < vf {
			t.rejected++
			return true
		}
		t.removeAt(victim)
		t.evicted++
	}
	t.idx[key] = int32(len(t.ents))
	t.ents = append(t.ents, tierEntry{key: key, s: s, cost: cost, hash: h})
	t.used += cost
	return true
}

func (t *sampledTier) Del(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if i, ok := t.idx[key]; ok {
		t.removeAt(int(i))
	}
}

// removeAt deletes entry i, moving the last entry into its place. Called
// with mu held.
func (t *sampledTier) removeAt(i int) {
	e := &t.ents[i]
	t.used -= e.cost
	delete(t.idx, e.key)
	last := len(t.ents) - 1
	if i != last {
		t.ents[i] = t.ents[last]
		t.idx[t.ents[i].key] = int32(i)
	}
	t.ents[last] = tierEntry{} // drop the session pointer
	t.ents = t.ents[:last]
}

// Wait has nothing to wait for: every operation is applied before it
// returns.
func (t *sampledTier) Wait() {}

func (t *sampledTier) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.idx, t.ents, t.used = make(map[string]int32), nil, 0
}

func (t *sampledTier) sessions() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return int64(len(t.ents))
}

func (t *sampledTier) usedBytes() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.used
}

// freqSketch is the count-min sketch of TinyLFU: four rows of counters
// saturating at 15, every counter halved once the sketch has counted ten
// times the expected number of entries, so past popularity fades.
type freqSketch struct {
	rows    [4][]uint8
	mask    uint64
	n       int64
	resetAt int64
}

func newFreqSketch(entries int64) freqSketch {
	w := uint64(1) << bits.Len64(uint64(max(2*entries, 1024))-1)
	f := freqSketch{mask: w - 1, resetAt: 10 * entries}
	for i := range f.rows {
		f.rows[i] = make([]uint8, w)
	}
	return f
}

// step is the stride of h between rows (double hashing over one keyed
// hash).
func step(h uint64) uint64 { return hashmix.Mix64(h) | 1 }

func (f *freqSketch) add(h uint64) {
	d := step(h)
	for i := range f.rows {
		if c := &f.rows[i][(h+uint64(i)*d)&f.mask]; *c < 15 {
			*c++
		}
	}
	if f.n++; f.n >= f.resetAt {
		f.n = 0
		for i := range f.rows {
			for j := range f.rows[i] {
				f.rows[i][j] >>= 1
			}
		}
	}
}

func (f *freqSketch) estimate(h uint64) int {
	d := step(h)
	m := 15
	for i := range f.rows {
		m = min(m, int(f.rows[i][(h+uint64(i)*d)&f.mask]))
	}
	return m
}
