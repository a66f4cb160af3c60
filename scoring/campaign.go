package scoring

import (
	"math"
	"math/rand/v2"
	"sort"
	"sync"

	"github.com/bits-and-blooms/bloom/v3"
)

// templateSketch counts, per shingle, how many distinct sessions have sent
// it repeatedly within a sliding window: a wrapper template or a shared
// chain-of-thought instruction is reused by every request of a session and
// by every account of a campaign, while dataset content (benchmark
// questions harvested by many) and human phrasing are not reused within a
// session. Sessions report a shingle at most once (they mark it in their
// own filter), so the count is of distinct sessions.
//
// The count is kept as levels of bloom filters per time slice: level j
// holds the shingles reported by more than j sessions in that slice. A
// report tests the levels upwards and adds the shingle to the first level
// that misses it. The count over the window is the sum over slices, capped
// at the number of levels. Slices rotate on request time, so replays are
// exact; a slice that reached its capacity stops taking new entries
// (counted) rather than degrading into false positives.
type templateSketch struct {
	mu       sync.Mutex
	sliceDur int64
	levels   int
	capTop   int // entries of level 0
	capUp    int // entries of higher levels
	slices   []templateSlice
	newest   int64 // epoch of the newest slice
	full     int64 // reports refused because a level was full
}

type templateSlice struct {
	epoch int64
	f     []*bloom.BloomFilter
	n     []int
}

func newTemplateSketch(window int64, slices, levels, capacity int) *templateSketch {
	t := &templateSketch{
		sliceDur: max(window/int64(slices), 1),
		levels:   levels,
		capTop:   capacity,
		capUp:    max(capacity/4, 256),
		slices:   make([]templateSlice, slices),
		newest:   math.MinInt64,
	}
	for i := range t.slices {
		s := &t.slices[i]
		s.epoch = math.MinInt64
		s.f = make([]*bloom.BloomFilter, levels)
		s.n = make([]int, levels)
		for j := range s.f {
			c := t.capUp
			if j == 0 {
				c = t.capTop
			}
			s.f[j] = bloom.New(uint(math.Ceil(float64(c)*bitsPerEntry)), bloomK)
		}
	}
	return t
}

func (t *templateSketch) bytes() int {
	n := 0
	for i := range t.slices {
		for _, f := range t.slices[i].f {
			n += bloomBytes(f)
		}
	}
	return n
}

// advance rotates slices so that the newest covers now. Time never moves
// the sketch backwards: an older request is counted in the newest slice.
// Called with mu held.
func (t *templateSketch) advance(now int64) *templateSlice {
	epoch := now / t.sliceDur
	if epoch > t.newest {
		steps := epoch - t.newest
		if t.newest == math.MinInt64 || steps > int64(len(t.slices)) {
			steps = int64(len(t.slices))
		}
		for k := steps - 1; k >= 0; k-- {
			e := epoch - k
			s := &t.slices[int(((e%int64(len(t.slices)))+int64(len(t.slices)))%int64(len(t.slices)))]
			if s.epoch != e {
				for j, f := range s.f {
					if s.n[j] > 0 {
						f.ClearAll()
					}
					s.n[j] = 0
				}
				s.epoch = e
			}
		}
		t.newest = epoch
	}
	n := int64(len(t.slices))
	return &t.slices[int(((t.newest%n)+n)%n)]
}

// levelIn is how many sessions slice s has counted for l (0..levels).
func (t *templateSketch) levelIn(s *templateSlice, l *locations) int {
	j := 0
	for j < t.levels && s.n[j] > 0 && s.f[j].TestLocations(l[:]) {
		j++
	}
	return j
}

// count returns the number of sessions (capped at levels) that reused l in
// the window. Called with mu held.
func (t *templateSketch) count(l *locations) int {
	c := 0
	lo := t.newest - int64(len(t.slices))
	for i := range t.slices {
		s := &t.slices[i]
		if s.epoch <= lo || s.epoch > t.newest {
			continue
		}
		c += t.levelIn(s, l)
		if c >= t.levels {
			return t.levels
		}
	}
	return c
}

// report adds one session's reuse of l to the newest slice. Called with mu
// held after advance.
func (t *templateSketch) report(s *templateSlice, l *locations) {
	j := t.levelIn(s, l)
	if j >= t.levels {
		return
	}
	c := t.capUp
	if j == 0 {
		c = t.capTop
	}
	if s.n[j] >= c {
		t.full++
		return
	}
	bloomAdd(s.f[j], l)
	s.n[j]++
}

// Links tie accounts together: the client's network block, and its client
// fingerprint (user-agent together with the request shape).
const (
	linkIP = iota
	linkClient
	linkKinds
)

var linkNames = [linkKinds]string{"ip_block", "client"}

// linkWeight scales how far a flagged cluster spreads to its members. An IP
// block is specific to a customer, office or rented range. A client
// fingerprint is shared by everyone using the same SDK with the same
// settings, and careful harvesters copy popular ones, so on its own it can
// at most add to other evidence (0.5 x the cluster weight stays below the
// degrade threshold).
var linkWeight = [linkKinds]float64{1, 0.5}

// clusterTable is the bounded table of link clusters. Counts decay with
// the content half-life, so a cluster's flagged share reflects recent
// behaviour.
type clusterTable struct {
	mu sync.Mutex
	m  map[uint64]*cluster
	// keys lists the clusters densely, so eviction samples them with the table's own generator instead of
	// relying on map iteration order, which is random and unseedable.
	keys    []uint64
	rng     *rand.Rand
	max     int
	half    int64
	evicted int64
}

// clusterSample is how many clusters eviction compares.
const clusterSample = 8

type cluster struct {
	kind     uint8
	label    string
	sessions float64 // decayed distinct sessions seen with this link
	flagged  float64 // decayed sessions flagged on their own evidence
	last     int64
	members  [8][16]byte // most recent flagged members
	nm       int
}

// newClusterTable builds the table; seed1 and seed2 seed its eviction
// sampler.
func newClusterTable(max int, half int64, seed1, seed2 uint64) *clusterTable {
	return &clusterTable{m: make(map[uint64]*cluster), max: max, half: half, rng: rand.New(rand.NewPCG(seed1, seed2))}
}

func (c *cluster) decayTo(now int64, half int64) {
	if now > c.last {
		f := math.Exp2(-float64(now-c.last) / float64(half))
		c.sessions *= f
		c.flagged *= f
		c.last = now
	}
}

// get returns the cluster for key, creating it. Called with mu held.
func (t *clusterTable) get(key uint64, kind int, label string, now int64) *cluster {
	c := t.m[key]
	if c == nil {
		if len(t.m) >= t.max {
			t.evictOne(now)
		}
		c = &cluster{kind: uint8(kind), label: label, last: now}
		t.m[key] = c
		t.keys = append(t.keys, key)
	}
	c.decayTo(now, t.half)
	return c
}

// evictOne drops the smallest of a few clusters sampled at random (the
// first sampled on ties). Called with mu held.
func (t *clusterTable) evictOne(now int64) {
	if len(t.keys) == 0 {
		return
	}
	victim := 0
	best := math.Inf(1)
	for range clusterSample {
		i := t.rng.IntN(len(t.keys))
		c := t.m[t.keys[i]]
		c.decayTo(now, t.half)
		if w := c.sessions + 4*c.flagged; w < best {
			victim, best = i, w
		}
	}
	// Move the last key into the victim's place.
	last := len(t.keys) - 1
	delete(t.m, t.keys[victim])
	t.keys[victim] = t.keys[last]
	t.keys = t.keys[:last]
	t.evicted++
}

func (c *cluster) addMember(id [16]byte) {
	for i := 0; i < min(c.nm, len(c.members)); i++ {
		if c.members[i] == id {
			return
		}
	}
	c.members[c.nm%len(c.members)] = id
	c.nm++
}

// spread is how strongly a cluster's flagged share reaches an unflagged
// member: nothing below a quarter flagged or with fewer than two flagged
// sessions, full strength from 60% flagged and four flagged sessions on.
func (c *cluster) spread() float64 {
	if c.sessions <= 0 {
		return 0
	}
	share := c.flagged / c.sessions
	return clamp01((share-0.25)/0.35) * clamp01((c.flagged-1)/3)
}

// Campaign is a cluster of linked sessions, as listed by the admin API.
type Campaign struct {
	Link     string   `json:"link"`
	Label    string   `json:"label"`
	Sessions float64  `json:"sessions"`
	Flagged  float64  `json:"flagged"`
	Spread   float64  `json:"spread"`
	Members  []string `json:"recent_flagged_members"`
}

func (t *clusterTable) campaigns(now int64, minFlagged float64) []Campaign {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Campaign
	for _, k := range t.keys { // not the map: its order is random
		c := t.m[k]
		c.decayTo(now, t.half)
		if c.flagged < minFlagged {
			continue
		}
		cp := Campaign{Link: linkNames[c.kind], Label: c.label, Sessions: round3(c.sessions), Flagged: round3(c.flagged), Spread: round3(c.spread())}
		for i := 0; i < min(c.nm, len(c.members)); i++ {
			cp.Members = append(cp.Members, sessionIDString(c.members[i]))
		}
		sort.Strings(cp.Members)
		out = append(out, cp)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Flagged != out[j].Flagged {
			return out[i].Flagged > out[j].Flagged
		}
		return out[i].Label < out[j].Label
	})
	return out
}

func (t *clusterTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

func clamp01(x float64) float64 {
	switch {
	case x < 0 || math.IsNaN(x):
		return 0
	case x > 1:
		return 1
	}
	return x
}
