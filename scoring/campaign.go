package scoring

import (
	"github.com/distillguard/distillguard/internal/hashmix"

	"math"
	"math/bits"
	"math/rand/v2"
	"sort"
	"sync"
	"time"
	"unsafe"
)

// templateSketch counts, per template element (a sampled shingle of a
// newest user turn, or the keyed hash of a system prompt and tool schema),
// how many distinct sessions sent it and how many of those went on to hold
// a conversation. A wrapper template of a harvesting campaign is sent by
// many accounts that never converse; an application's system prompt, a
// popular persona prompt or a common phrase is sent by accounts that do.
//
// It is a Count-Min sketch (Cormode and Muthukrishnan, "An Improved Data
// Stream Summary: The Count-Min Sketch and its Applications", J.
// Algorithms 2005) with conservative update (Estan and Varghese, SIGCOMM
// 2002), whose cells are forward-decayed sums (see counters): counts fade
// with a half-life of half Config.CampaignWindow, increments are additions
// and two sketches merge cell by cell. Sessions report an element at most
// once (they mark it in their own filter), so counts are of distinct
// sessions. Once the decayed number of distinct elements reaches the
// sketch's capacity, new elements are refused (counted) rather than
// degrading every estimate into a false positive.
type templateSketch struct {
	mu       sync.Mutex
	rows     [tmplDepth][]tmplCell
	mask     uint64
	half     float64 // nanoseconds
	land     int64
	mass     float64 // forward-scaled count of distinct elements inserted
	capacity float64
	full     int64 // reports refused because the sketch was full
	// pend, in replicated mode (non-nil), sums this replica's increments
	// per cell (row*width+column) since they were last taken for the
	// shared log (replica_agg.go); pendMass likewise.
	pend     map[uint32]*[3]float32
	pendMass float64
}

const tmplDepth = 3

type tmplCell struct {
	// forward-scaled counts of sessions that sent the element in two or
	// more requests (a template recurs; harvested content does not), that
	// sent it in their very first request, and that went on to converse
	s, f, c float32
}

// templateCount is one element's decayed counts.
type templateCount struct{ reuse, first, conv float32 }

// sessions is how many distinct sessions the counts show at least.
func (c templateCount) sessions() float32 { return max(c.reuse, c.first) }

func newTemplateSketch(window int64, capacity int) *templateSketch {
	w := uint64(1) << bits.Len64(uint64(capacity)-1)
	t := &templateSketch{mask: w - 1, half: float64(window) / 2, capacity: float64(capacity), land: math.MinInt64}
	for i := range t.rows {
		t.rows[i] = make([]tmplCell, w)
	}
	return t
}

func (t *templateSketch) bytes() int {
	return tmplDepth * len(t.rows[0]) * int(unsafe.Sizeof(tmplCell{}))
}

// scale returns 2^((now-land)/half), rebasing the landmark first when the
// exponent would grow past what float32 holds comfortably. Called with mu
// held.
func (t *templateSketch) scale(now int64) float32 {
	if t.land == math.MinInt64 {
		t.land = now
	}
	e := float64(now-t.land) / t.half
	if e > 48 {
		f := float32(math.Exp2(-e))
		for i := range t.rows {
			for j := range t.rows[i] {
				t.rows[i][j].s *= f
				t.rows[i][j].f *= f
				t.rows[i][j].c *= f
			}
		}
		t.mass *= float64(f)
		for _, d := range t.pend {
			d[0], d[1], d[2] = d[0]*f, d[1]*f, d[2]*f
		}
		t.pendMass *= float64(f)
		t.land, e = now, 0
	}
	return float32(math.Exp2(e))
}

func (t *templateSketch) cells(h uint64) ([tmplDepth]*tmplCell, [tmplDepth]uint32) {
	var out [tmplDepth]*tmplCell
	var idx [tmplDepth]uint32
	h2 := hashmix.Mix64(h^0x3c6ef372fe94f82b) | 1
	w := uint64(len(t.rows[0]))
	for i := range out {
		j := (h + uint64(i)*h2) & t.mask
		out[i] = &t.rows[i][j]
		idx[i] = uint32(uint64(i)*w + j)
	}
	return out, idx
}

// note adds an increment of cell idx to the pending deltas (replicated
// mode). Called with mu held.
func (t *templateSketch) note(idx uint32, field int, d float32) {
	if t.pend == nil || d <= 0 {
		return
	}
	p := t.pend[idx]
	if p == nil {
		p = new([3]float32)
		t.pend[idx] = p
	}
	p[field] += d
}

// Report kinds for observe.
const (
	repNone  uint8 = 0
	repReuse uint8 = 1 << 0 // the session sends the element again
	repFirst uint8 = 1 << 1 // the element is in the session's first request
	repConv  uint8 = 1 << 2 // the session conversed after a turn holding the element
)

// observe applies the reports rep[i] for hs[i] and returns every element's
// counts after them.
func (t *templateSketch) observe(now int64, hs []uint64, rep []uint8, out []templateCount) {
	t.mu.Lock()
	defer t.mu.Unlock()
	sc := t.scale(now)
	for i, h := range hs {
		cs, idx := t.cells(h)
		ms, mf, mc := cs[0].s, cs[0].f, cs[0].c
		for _, c := range cs[1:] {
			ms, mf, mc = min(ms, c.s), min(mf, c.f), min(mc, c.c)
		}
		r := repNone
		if i < len(rep) {
			r = rep[i]
		}
		if r&(repReuse|repFirst) != 0 {
			if ms == 0 && mf == 0 && t.mass/float64(sc) >= t.capacity {
				t.full++
				r = repNone
			} else if ms == 0 && mf == 0 {
				t.mass += float64(sc)
				if t.pend != nil {
					t.pendMass += float64(sc)
				}
			}
		}
		if r&repReuse != 0 {
			ms += sc
			for j, c := range cs {
				t.note(idx[j], 0, ms-c.s)
				c.s = max(c.s, ms)
			}
		}
		if r&repFirst != 0 {
			mf += sc
			for j, c := range cs {
				t.note(idx[j], 1, mf-c.f)
				c.f = max(c.f, mf)
			}
		}
		if r&repConv != 0 && max(ms, mf) > 0 {
			mc = min(mc+sc, max(ms, mf))
			for j, c := range cs {
				t.note(idx[j], 2, mc-c.c)
				c.c = max(c.c, mc)
			}
		}
		out[i] = templateCount{reuse: ms / sc, first: mf / sc, conv: mc / sc}
	}
}

// campaignShare is how strongly one element's counts mark it as a
// campaign's template: shared by at least minSessions accounts, and almost
// none of them conversing afterwards.
func campaignShare(c templateCount, minSessions float64) float64 {
	s := float64(c.sessions())
	if s <= 0 {
		return 0
	}
	many := clamp01((s - (minSessions - 1)) / 3)
	quiet := clamp01((0.3 - float64(c.conv)/s) / 0.25)
	return many * quiet
}

// cohortSketch counts fresh sessions by behaviour class: how many accounts
// less than freshAge old started sending the same shape of single-turn
// request, with a fast (cohortFastHalf) and a slow (cohortSlowHalf)
// forward-decayed count each, so a burst of new identities shows as a fast
// count well above what the slow one predicts. Anthropic reports
// distillation campaigns run through tens of thousands of fraudulent
// accounts created for the purpose ("Detecting and preventing distillation
// attacks", 2026); account creation bursts are the classic signature of
// such fleets (Kleinberg, "Bursty and Hierarchical Structure in Streams",
// KDD 2002, models bursts as a rate well above the base rate). Slots are
// direct-mapped by the keyed class hash; two classes sharing a slot only
// add up.
type cohortSketch struct {
	mu    sync.Mutex
	slots []cohortSlot
	land  int64
	// pend, in replicated mode (non-nil), sums this replica's reports
	// per slot since they were last taken for the shared log.
	pend map[uint16]*cohortSlot
}

type cohortSlot struct {
	fast, slow       float32 // forward-scaled counts
	langs, langsPrev uint32  // reasoning-demand languages of the cohort, this and the previous epoch
	epoch            int32
}

const (
	cohortSlots    = 4096
	cohortFastHalf = float64(2 * time.Hour)
	cohortSlowHalf = float64(48 * time.Hour)
	cohortLangSpan = int64(12 * time.Hour)
)

// cohortCount is a class's decayed counts.
type cohortCount struct {
	fresh, base float32 // fast count, and the fast count the slow rate predicts
	langs       uint32
}

func newCohortSketch() *cohortSketch {
	return &cohortSketch{slots: make([]cohortSlot, cohortSlots), land: math.MinInt64}
}

func (c *cohortSketch) bytes() int { return len(c.slots) * int(unsafe.Sizeof(cohortSlot{})) }

// observe reports a fresh session into class when report is set, and
// returns the class's counts.
func (c *cohortSketch) observe(now int64, class uint32, report bool, langs uint32) cohortCount {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.land == math.MinInt64 {
		c.land = now
	}
	e := float64(now-c.land) / cohortFastHalf
	if e > 48 {
		ff, fs := float32(math.Exp2(-e)), float32(math.Exp2(-float64(now-c.land)/cohortSlowHalf))
		for i := range c.slots {
			c.slots[i].fast *= ff
			c.slots[i].slow *= fs
		}
		for _, p := range c.pend {
			p.fast *= ff
			p.slow *= fs
		}
		c.land, e = now, 0
	}
	sf := float32(math.Exp2(e))
	ss := float32(math.Exp2(float64(now-c.land) / cohortSlowHalf))
	s := &c.slots[class%cohortSlots]
	ep := int32(now / cohortLangSpan)
	if ep != s.epoch {
		if ep == s.epoch+1 {
			s.langsPrev = s.langs
		} else {
			s.langsPrev = 0
		}
		s.langs, s.epoch = 0, ep
	}
	if report {
		s.fast += sf
		s.slow += ss
		s.langs |= langs
		if c.pend != nil {
			p := c.pend[uint16(class%cohortSlots)]
			if p == nil {
				p = &cohortSlot{}
				c.pend[uint16(class%cohortSlots)] = p
			}
			p.fast += sf
			p.slow += ss
			if p.epoch != ep {
				p.langs, p.epoch = 0, ep
			}
			p.langs |= langs
		}
	}
	fresh := s.fast / sf
	slow := s.slow / ss
	// A steady arrival rate r gives slow = r*Hs/ln2 and fast = r*Hf/ln2:
	// the fast count the slow one predicts is slow*Hf/Hs.
	return cohortCount{fresh: fresh, base: slow * float32(cohortFastHalf/cohortSlowHalf), langs: s.langs | s.langsPrev}
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
	// pend, in replicated mode (non-nil), sums this replica's changes per
	// cluster since they were last taken for the shared log.
	pend map[uint64]*clusterDelta
}

// clusterDelta is one replica's change to a cluster: sessions and flagged
// sessions added (decayed to t) and the flagged members it added.
type clusterDelta struct {
	kind              uint8
	label             string
	t                 int64
	sessions, flagged float64
	members           [][16]byte
}

// note records a change to cluster key (replicated mode). Called with mu
// held.
func (t *clusterTable) note(key uint64, c *cluster, dSessions, dFlagged float64, member *[16]byte, now int64) {
	if t.pend == nil {
		return
	}
	d := t.pend[key]
	if d == nil {
		d = &clusterDelta{kind: c.kind, label: c.label, t: now}
		t.pend[key] = d
	}
	if now > d.t {
		f := math.Exp2(-float64(now-d.t) / float64(t.half))
		d.sessions *= f
		d.flagged *= f
		d.t = now
	}
	f := 1.0
	if now < d.t {
		f = math.Exp2(-float64(d.t-now) / float64(t.half))
	}
	d.sessions += dSessions * f
	d.flagged += dFlagged * f
	if member != nil && len(d.members) < len(c.members) {
		d.members = append(d.members, *member)
	}
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
