package scoring

import (
	"encoding/binary"
	"errors"
	"math"
	"sort"
)

// Cross-account state in replicated mode. Every replica keeps the template
// sketch, the cohort sketch and the link clusters in process, as in
// process-only mode, and answers requests from them; what it adds to them
// is also summed per cell, slot and cluster (the sketches' pend maps). A
// flush takes those sums as one batch (aggBatch), appends it to a Redis
// stream all replicas share, and reads the batches the other replicas
// appended since its last read, adding them in. Every part merges by
// addition (forward-decayed sums, moved to the receiver's landmark first;
// cluster counts decayed to a common time) or OR (cohort languages), so
// each replica's sketches converge on the sum over all replicas, at most
// one flush interval behind. This is the shape of envoyproxy/ratelimit's
// local cache in front of Redis and of LiteLLM's batched Redis increments
// synced on an interval: the request path never waits on cross-account
// state.
//
// Batch layout, little-endian:
//
//	'D' 'A' format pad  writer u64
//	template: width u32, half f64, land i64, mass f64, n u32, n x (cell u32, reuse f32, first f32, conv f32)
//	cohort:   land i64, n u32, n x (slot u16, fast f32, slow f32, epoch i32, langs u32)
//	clusters: half i64, n u32, n x (key u64, kind u8, t i64, sessions f64, flagged f64,
//	          members u8, members x 16 bytes, label length u16, label)

const aggFormat = 1

var errAggBatch = errors.New("malformed aggregate batch")

// aggBatchMax bounds a batch read from Redis (a snapshot of the largest
// sketch with every cell set, and a full cluster table).
const aggBatchMax = 1 << 30

// takeDeltas renders the pending deltas of the three structures as one
// batch and clears them; nil when nothing is pending. all renders the
// whole state instead (a snapshot) and leaves the pending deltas alone.
func (e *Engine) takeDeltas(writer uint64, all bool) []byte {
	la, ok := e.agg.(*localAggregates)
	if !ok {
		return nil
	}
	le := binary.LittleEndian
	b := []byte{'D', 'A', aggFormat, 0}
	b = le.AppendUint64(b, writer)
	n := 0

	t := la.tmpl
	t.mu.Lock()
	w := len(t.rows[0])
	b = le.AppendUint32(b, uint32(w))
	b = le.AppendUint64(b, math.Float64bits(t.half))
	land := t.land
	if land == math.MinInt64 {
		land = 0
	}
	b = le.AppendUint64(b, uint64(land))
	cell := func(idx uint32, s, f, c float32) {
		b = le.AppendUint32(b, idx)
		b = le.AppendUint32(b, math.Float32bits(s))
		b = le.AppendUint32(b, math.Float32bits(f))
		b = le.AppendUint32(b, math.Float32bits(c))
	}
	if all {
		b = le.AppendUint64(b, math.Float64bits(t.mass))
		at := len(b)
		b = le.AppendUint32(b, 0)
		k := 0
		for r := range t.rows {
			for j, c := range t.rows[r] {
				if c != (tmplCell{}) {
					cell(uint32(r*w+j), c.s, c.f, c.c)
					k++
				}
			}
		}
		le.PutUint32(b[at:], uint32(k))
		n += k
	} else {
		b = le.AppendUint64(b, math.Float64bits(t.pendMass))
		b = le.AppendUint32(b, uint32(len(t.pend)))
		keys := make([]uint32, 0, len(t.pend))
		for k := range t.pend {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
		for _, k := range keys {
			d := t.pend[k]
			cell(k, d[0], d[1], d[2])
		}
		n += len(keys)
		clear(t.pend)
		t.pendMass = 0
	}
	t.mu.Unlock()

	c := la.cohort
	c.mu.Lock()
	land = c.land
	if land == math.MinInt64 {
		land = 0
	}
	b = le.AppendUint64(b, uint64(land))
	slot := func(i uint16, s *cohortSlot) {
		b = le.AppendUint16(b, i)
		b = le.AppendUint32(b, math.Float32bits(s.fast))
		b = le.AppendUint32(b, math.Float32bits(s.slow))
		b = le.AppendUint32(b, uint32(s.epoch))
		b = le.AppendUint32(b, s.langs)
	}
	if all {
		at := len(b)
		b = le.AppendUint32(b, 0)
		k := 0
		for i := range c.slots {
			if s := &c.slots[i]; s.fast != 0 || s.slow != 0 {
				slot(uint16(i), s)
				k++
			}
		}
		le.PutUint32(b[at:], uint32(k))
		n += k
	} else {
		b = le.AppendUint32(b, uint32(len(c.pend)))
		keys := make([]uint16, 0, len(c.pend))
		for k := range c.pend {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
		for _, k := range keys {
			slot(k, c.pend[k])
		}
		n += len(keys)
		clear(c.pend)
	}
	c.mu.Unlock()

	ct := e.clusters
	ct.mu.Lock()
	b = le.AppendUint64(b, uint64(ct.half))
	clu := func(key uint64, kind uint8, t int64, sessions, flagged float64, members [][16]byte, label string) {
		b = le.AppendUint64(b, key)
		b = append(b, kind)
		b = le.AppendUint64(b, uint64(t))
		b = le.AppendUint64(b, math.Float64bits(sessions))
		b = le.AppendUint64(b, math.Float64bits(flagged))
		b = append(b, byte(len(members)))
		for _, m := range members {
			b = append(b, m[:]...)
		}
		if len(label) > 1024 {
			label = label[:1024]
		}
		b = le.AppendUint16(b, uint16(len(label)))
		b = append(b, label...)
	}
	if all {
		b = le.AppendUint32(b, uint32(len(ct.keys)))
		for _, k := range ct.keys {
			cl := ct.m[k]
			ms := make([][16]byte, 0, len(cl.members))
			for i := 0; i < min(cl.nm, len(cl.members)); i++ {
				ms = append(ms, cl.members[i])
			}
			clu(k, cl.kind, cl.last, cl.sessions, cl.flagged, ms, cl.label)
		}
		n += len(ct.keys)
	} else {
		b = le.AppendUint32(b, uint32(len(ct.pend)))
		keys := make([]uint64, 0, len(ct.pend))
		for k := range ct.pend {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
		for _, k := range keys {
			d := ct.pend[k]
			clu(k, d.kind, d.t, d.sessions, d.flagged, d.members, d.label)
		}
		n += len(keys)
		clear(ct.pend)
	}
	ct.mu.Unlock()
	if n == 0 && !all {
		return nil
	}
	return b
}

// aggReader reads a batch, failing closed on anything out of bounds.
type aggReader struct {
	b   []byte
	p   int
	bad bool
}

func (r *aggReader) need(n int) bool {
	if r.bad || n < 0 || len(r.b)-r.p < n {
		r.bad = true
		return false
	}
	return true
}

func (r *aggReader) u8() uint8 {
	if !r.need(1) {
		return 0
	}
	r.p++
	return r.b[r.p-1]
}

func (r *aggReader) u16() uint16 {
	if !r.need(2) {
		return 0
	}
	r.p += 2
	return binary.LittleEndian.Uint16(r.b[r.p-2:])
}

func (r *aggReader) u32() uint32 {
	if !r.need(4) {
		return 0
	}
	r.p += 4
	return binary.LittleEndian.Uint32(r.b[r.p-4:])
}

func (r *aggReader) u64() uint64 {
	if !r.need(8) {
		return 0
	}
	r.p += 8
	return binary.LittleEndian.Uint64(r.b[r.p-8:])
}

// f32 and f64 read finite, non-negative values (counts).
func (r *aggReader) f32() float32 {
	v := math.Float32frombits(r.u32())
	if v < 0 || math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
		r.bad = true
		return 0
	}
	return v
}

func (r *aggReader) f64() float64 {
	v := math.Float64frombits(r.u64())
	if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		r.bad = true
		return 0
	}
	return v
}

// parsedAgg is a decoded batch.
type parsedAgg struct {
	writer    uint64
	width     uint32
	half      float64
	tmplLand  int64
	mass      float64
	cells     []aggCell
	cohLand   int64
	slots     []aggSlot
	cluHalf   int64
	clusters  []aggCluster
	structure int // cells + slots + clusters
}

type aggCell struct {
	idx     uint32
	s, f, c float32
}

type aggSlot struct {
	i          uint16
	fast, slow float32
	epoch      int32
	langs      uint32
}

type aggCluster struct {
	key               uint64
	kind              uint8
	t                 int64
	sessions, flagged float64
	members           [][16]byte
	label             string
}

// parseAgg decodes a batch. Counts are checked against the bytes left
// before anything is allocated for them.
func parseAgg(b []byte) (*parsedAgg, error) {
	if len(b) < 4 || len(b) > aggBatchMax || b[0] != 'D' || b[1] != 'A' || b[2] != aggFormat {
		return nil, errAggBatch
	}
	r := &aggReader{b: b, p: 4}
	a := &parsedAgg{writer: r.u64(), width: r.u32()}
	a.half = r.f64()
	a.tmplLand = int64(r.u64())
	a.mass = r.f64()
	n := int(r.u32())
	if !r.need(16*n) || a.width == 0 || a.half <= 0 {
		return nil, errAggBatch
	}
	a.cells = make([]aggCell, n)
	for i := range a.cells {
		c := &a.cells[i]
		c.idx = r.u32()
		c.s, c.f, c.c = r.f32(), r.f32(), r.f32()
		if c.idx >= tmplDepth*a.width {
			r.bad = true
		}
	}
	a.cohLand = int64(r.u64())
	n = int(r.u32())
	if !r.need(18 * n) {
		return nil, errAggBatch
	}
	a.slots = make([]aggSlot, n)
	for i := range a.slots {
		s := &a.slots[i]
		s.i = r.u16()
		s.fast, s.slow = r.f32(), r.f32()
		s.epoch, s.langs = int32(r.u32()), r.u32()
		if s.i >= cohortSlots {
			r.bad = true
		}
	}
	a.cluHalf = int64(r.u64())
	n = int(r.u32())
	if !r.need(36*n) || a.cluHalf <= 0 {
		return nil, errAggBatch
	}
	a.clusters = make([]aggCluster, n)
	for i := range a.clusters {
		c := &a.clusters[i]
		c.key, c.kind, c.t = r.u64(), r.u8(), int64(r.u64())
		c.sessions, c.flagged = r.f64(), r.f64()
		m := int(r.u8())
		if m > 8 || !r.need(16*m) || c.kind >= linkKinds {
			return nil, errAggBatch
		}
		c.members = make([][16]byte, m)
		for j := range c.members {
			copy(c.members[j][:], r.b[r.p:r.p+16])
			r.p += 16
		}
		l := int(r.u16())
		if !r.need(l) {
			return nil, errAggBatch
		}
		c.label = string(r.b[r.p : r.p+l])
		r.p += l
	}
	if r.bad || r.p != len(b) {
		return nil, errAggBatch
	}
	a.structure = len(a.cells) + len(a.slots) + len(a.clusters)
	return a, nil
}

// errAggIncompatible: the batch was written by a replica whose sketch has
// another width or half-life (a different campaign_capacity or
// campaign_window); its cells cannot be added.
var errAggIncompatible = errors.New("aggregate batch from a replica with another campaign_capacity, campaign_window or content_half_life")

// applyAgg adds another replica's batch (or a snapshot) to the local
// structures.
func (e *Engine) applyAgg(a *parsedAgg) error {
	la, ok := e.agg.(*localAggregates)
	if !ok {
		return nil
	}
	t := la.tmpl
	if int(a.width) != len(t.rows[0]) || a.half != t.half || a.cluHalf != e.clusters.half {
		return errAggIncompatible
	}
	t.mu.Lock()
	if len(a.cells) > 0 || a.mass > 0 {
		if t.land == math.MinInt64 {
			t.land = a.tmplLand
		}
		f := float32(math.Exp2(float64(a.tmplLand-t.land) / t.half))
		if math.IsInf(float64(f), 0) || math.IsNaN(float64(f)) {
			f = 0
		}
		w := uint32(len(t.rows[0]))
		for _, c := range a.cells {
			cell := &t.rows[c.idx/w][c.idx%w]
			cell.s += c.s * f
			cell.f += c.f * f
			cell.c += c.c * f
		}
		t.mass += a.mass * float64(f)
	}
	t.mu.Unlock()

	c := la.cohort
	c.mu.Lock()
	if len(a.slots) > 0 {
		if c.land == math.MinInt64 {
			c.land = a.cohLand
		}
		d := float64(a.cohLand - c.land)
		ff, fs := float32(math.Exp2(d/cohortFastHalf)), float32(math.Exp2(d/cohortSlowHalf))
		for _, s := range a.slots {
			x := &c.slots[s.i]
			x.fast += s.fast * ff
			x.slow += s.slow * fs
			switch {
			case s.epoch == x.epoch:
				x.langs |= s.langs
			case s.epoch == x.epoch-1:
				x.langsPrev |= s.langs
			case s.epoch == x.epoch+1:
				x.langsPrev, x.langs, x.epoch = x.langs, s.langs, s.epoch
			case s.epoch > x.epoch:
				x.langsPrev, x.langs, x.epoch = 0, s.langs, s.epoch
			}
		}
	}
	c.mu.Unlock()

	ct := e.clusters
	ct.mu.Lock()
	for _, d := range a.clusters {
		cl := ct.m[d.key]
		if cl == nil {
			cl = ct.get(d.key, int(d.kind), d.label, d.t)
		}
		f := 1.0
		if d.t > cl.last {
			cl.decayTo(d.t, ct.half)
		} else {
			f = math.Exp2(-float64(cl.last-d.t) / float64(ct.half))
		}
		cl.sessions += d.sessions * f
		cl.flagged += d.flagged * f
		for _, m := range d.members {
			cl.addMember(m)
		}
	}
	ct.mu.Unlock()
	return nil
}

// trackDeltas turns on the pending-delta bookkeeping (replicated mode).
func (e *Engine) trackDeltas() {
	if la, ok := e.agg.(*localAggregates); ok {
		la.tmpl.mu.Lock()
		la.tmpl.pend = map[uint32]*[3]float32{}
		la.tmpl.mu.Unlock()
		la.cohort.mu.Lock()
		la.cohort.pend = map[uint16]*cohortSlot{}
		la.cohort.mu.Unlock()
	}
	e.clusters.mu.Lock()
	e.clusters.pend = map[uint64]*clusterDelta{}
	e.clusters.mu.Unlock()
}
