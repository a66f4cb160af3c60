package scoring

import (
	"bytes"
	"math/rand/v2"
	"sort"
	"sync"
	"time"
)

// riskIndex is a bounded index of the riskiest recent sessions, for the
// admin API: the session cache cannot be listed cheaply, and listing
// millions of sessions is not what an operator wants anyway. A session
// enters once its score reaches minScore; when full, the lowest-scored
// entry makes room for a higher one.
type riskIndex struct {
	mu       sync.Mutex
	max      int
	minScore float64
	m        map[[16]byte]*indexEntry
}

type indexEntry struct {
	score, peak float64
	tier        Verdict
	requests    uint32
	first, last int64
	signals     []Signal
}

func newRiskIndex(max int, minScore float64) *riskIndex {
	return &riskIndex{max: max, minScore: minScore, m: make(map[[16]byte]*indexEntry)}
}

// update records the session's state after a request (a copy made under
// the session's lock).
func (x *riskIndex) update(id [16]byte, in indexEntry, signals []Signal) {
	score := in.score
	x.mu.Lock()
	defer x.mu.Unlock()
	e := x.m[id]
	if e == nil {
		if score < x.minScore && in.tier == Allow {
			return
		}
		if len(x.m) >= x.max {
			var low [16]byte
			lowScore := 2.0
			for k, v := range x.m {
				// Ties go to the smaller id, not to map order.
				if v.score < lowScore || v.score == lowScore && bytes.Compare(k[:], low[:]) < 0 {
					low, lowScore = k, v.score
				}
			}
			if lowScore >= score {
				return
			}
			delete(x.m, low)
		}
		e = &indexEntry{}
		x.m[id] = e
	}
	sig := e.signals[:0]
	*e = in
	if len(signals) > 3 {
		signals = signals[:3]
	}
	e.signals = append(sig, signals...)
}

func (x *riskIndex) remove(id [16]byte) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	_, ok := x.m[id]
	delete(x.m, id)
	return ok
}

// SessionSummary is one row of the admin session list.
type SessionSummary struct {
	SessionHead
	TopSignals []Signal `json:"top_signals"`
}

func (x *riskIndex) top(n int) []SessionSummary {
	x.mu.Lock()
	out := make([]SessionSummary, 0, len(x.m))
	for id, e := range x.m {
		out = append(out, SessionSummary{
			SessionHead: SessionHead{ID: sessionIDString(id), Verdict: e.tier.String(), Score: round3(e.score), PeakScore: round3(e.peak),
				Requests: e.requests, FirstSeen: time.Unix(0, e.first).UTC(), LastSeen: time.Unix(0, e.last).UTC()},
			TopSignals: append([]Signal(nil), e.signals...),
		})
	}
	x.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Score != out[j].Score {
			return out[i].Score > out[j].Score
		}
		return out[i].ID < out[j].ID
	})
	if n < len(out) {
		out = out[:n]
	}
	return out
}

// quarantineList remembers blocked sessions until their quarantine ends,
// independently of the session cache, so that evicting a blocked session
// (by a key flood, or idleness) does not lift its block early.
type quarantineList struct {
	mu  sync.Mutex
	max int
	m   map[[16]byte]int32 // index in e
	// e lists the entries densely, so that eviction samples them with the
	// list's own generator rather than in (random, unseedable) map order.
	e       []quarantined
	rng     *rand.Rand
	evicted int64 // entries dropped before their quarantine ended
}

type quarantined struct {
	id    [16]byte
	until int64
}

// quarantineSample is how many entries eviction looks at.
const quarantineSample = 16

// newQuarantineList builds the list; seed1 and seed2 seed its eviction
// sampler.
func newQuarantineList(max int, seed1, seed2 uint64) *quarantineList {
	return &quarantineList{max: max, m: make(map[[16]byte]int32), rng: rand.New(rand.NewPCG(seed1, seed2))}
}

func (q *quarantineList) add(id [16]byte, until, now int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if i, ok := q.m[id]; ok {
		q.e[i].until = until
		return
	}
	if len(q.e) >= q.max {
		// Drop the expired entries of a sample, else the sampled entry
		// whose quarantine ends soonest.
		victim, soonest, freed := 0, int64(1<<63-1), false
		for range quarantineSample {
			i := q.rng.IntN(len(q.e))
			if u := q.e[i].until; u <= now {
				q.removeAt(i) // moves another entry to i: victim is moot now
				freed = true
				if len(q.e) == 0 {
					break
				}
			} else if !freed && u < soonest {
				victim, soonest = i, u
			}
		}
		if !freed {
			q.removeAt(victim)
			q.evicted++
		}
	}
	q.m[id] = int32(len(q.e))
	q.e = append(q.e, quarantined{id: id, until: until})
}

// removeAt deletes entry i, moving the last entry into its place. Called
// with mu held.
func (q *quarantineList) removeAt(i int) {
	delete(q.m, q.e[i].id)
	last := len(q.e) - 1
	if i != last {
		q.e[i] = q.e[last]
		q.m[q.e[i].id] = int32(i)
	}
	q.e = q.e[:last]
}

func (q *quarantineList) until(id [16]byte) int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	if i, ok := q.m[id]; ok {
		return q.e[i].until
	}
	return 0
}

func (q *quarantineList) remove(id [16]byte) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if i, ok := q.m[id]; ok {
		q.removeAt(int(i))
	}
}
