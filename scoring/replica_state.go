package scoring

import (
	"encoding/binary"
	"errors"
	"math"
	"unsafe"

	"github.com/bits-and-blooms/bloom/v3"
)

// Replicated sessions. Redis holds one blob per session (sessionBlob),
// written whole by the replica that last pushed, with a header naming the
// blob's lineage (incarnation: drawn when a writer finds no key, so a
// Redis that lost its data starts a new lineage) and version (incremented
// by every write). A replica keeps, next to its local session, the
// version it last read or wrote and the state as of it (replicaMeta.base):
// what it added since is local minus base. Writing is compare-and-set on
// the header (casScript); a writer that lost the race merges its additions
// into the newer blob and tries again. Reading merges the newer blob with
// the local additions the same way (mergeSession). Every part of a session
// merges without coordination: forward-decayed counters by summing,
// bitsets by OR, first/last/peak by min/max; the verdict, score and
// evidence come from the newer evaluation.

// replicaMeta is a session's replicated-mode bookkeeping.
type replicaMeta struct {
	inc, ver uint64   // header of the remote version base is (0, 0: none)
	base     *session // state as of that version; nil: nothing remote
	writes   []writerSeq
	// unconf are writes whose answer never came (a timeout): one of them
	// may have landed, which the writers list of the next blob read tells.
	unconf []unconfirmed
	dirty  bool   // queued for writing
	force  bool   // the stored blob is unreadable: overwrite it
	gen    uint64 // local changes, to tell a write apart from later ones
	// clean is gen as of base: equal to gen, the local copy is base (no
	// local changes since), and a newer remote state replaces it outright.
	clean uint64
	// standKnown is the standing key's value as last read or written
	// (replica.standingToWrite): 0 for none or lost.
	standKnown int64
}

const replicaMetaBytes = int64(unsafe.Sizeof(replicaMeta{})) + 16 + maxWriters*16

// writerSeq names a replica's write: its writer id and the write's
// sequence number. A blob lists the newest write of each of its last
// maxWriters writers, so a replica whose write timed out can tell from the
// next blob it reads whether that write landed (and not count its
// additions twice).
type writerSeq struct{ writer, seq uint64 }

const maxWriters = 8

type unconfirmed struct {
	seq  uint64
	snap *session
}

// withWrite returns ws with writer's entry set to seq, first.
func withWrite(ws []writerSeq, writer, seq uint64) []writerSeq {
	out := make([]writerSeq, 0, maxWriters)
	out = append(out, writerSeq{writer, seq})
	for _, w := range ws {
		if w.writer != writer && len(out) < maxWriters {
			out = append(out, w)
		}
	}
	return out
}

func seqOf(ws []writerSeq, writer uint64) (uint64, bool) {
	for _, w := range ws {
		if w.writer == writer {
			return w.seq, true
		}
	}
	return 0, false
}

// Blob layout, little-endian. The header is compared by casScript: bytes
// [4, 20) are incarnation and version.
const (
	blobMagic0, blobMagic1, blobFormat = 'D', 'G', 3
	// blobFormatNoHistory is the format before the verdict history was
	// part of the blob; such blobs still decode (a rolling upgrade), with
	// no history.
	blobFormatNoHistory = 2
	blobHeader          = 28 // magic, format, pad, incarnation, version, writer
	blobFixed           = blobHeader + 16 + 3*8 + 8 + 2*4 + 4 + 5*4 + 3 + 3*4 + 4*4 + 4 + 2 + 16 + 8 + numCounters*4 + 4*4 + 8 + 4
	// histRecord is one verdict record's size without its prompt bytes;
	// histHeader the history section's (records written, first request
	// number, record count).
	histRecord = 8 + 16 + 4 + historySignals*4 + historySignals + 1 + 2
	histHeader = 4 + 4 + 1
	// blobMax bounds a blob: two filters of sessionBloomMaxBits, the
	// writers, a full history with the longest prompts it keeps.
	blobMax = blobFixed + 2*sessionBloomMaxBits/8 + 1 + maxWriters*16 + histHeader + historyLen*(histRecord+maxHistoryPrompt)
)

var errBlob = errors.New("malformed session blob")

// encodeSession renders s with the given header. fPromoted (which local
// cache holds the session) and the cache bookkeeping stay local.
func encodeSession(dst []byte, s *session, inc, ver uint64, writes []writerSeq) []byte {
	writer := uint64(0)
	if len(writes) > 0 {
		writer = writes[0].writer
	}
	b := append(dst, blobMagic0, blobMagic1, blobFormat, 0)
	le := binary.LittleEndian
	b = le.AppendUint64(b, inc)
	b = le.AppendUint64(b, ver)
	b = le.AppendUint64(b, writer)
	b = append(b, s.id[:]...)
	b = le.AppendUint64(b, uint64(s.first))
	b = le.AppendUint64(b, uint64(s.last))
	b = le.AppendUint64(b, uint64(s.quarantineUntil))
	b = le.AppendUint64(b, s.lastConv)
	b = le.AppendUint32(b, s.requests)
	b = le.AppendUint32(b, s.texts)
	b = le.AppendUint32(b, uint32(s.langEpoch))
	for _, v := range [...]uint32{s.langCur, s.langPrev, s.cotLangs, s.cotPrev, s.cohortClass} {
		b = le.AppendUint32(b, v)
	}
	single := byte(0)
	if s.allSingle {
		single = 1
	}
	b = append(b, byte(s.tier), s.flags&^fPromoted, single)
	for _, f := range [...]float32{s.score, s.peak, s.spread} {
		b = le.AppendUint32(b, math.Float32bits(f))
	}
	for _, f := range [...]float32{s.ev.tmplSessions, s.ev.tmplConv, s.ev.cohortFresh, s.ev.cohortBase} {
		b = le.AppendUint32(b, math.Float32bits(f))
	}
	b = le.AppendUint32(b, s.ev.cohortLangs)
	shared := byte(0)
	if s.ev.appShared {
		shared = 1
	}
	b = append(b, s.ev.maxTop, shared)
	b = le.AppendUint64(b, s.hours.bits)
	b = le.AppendUint64(b, uint64(s.hours.last))
	b = le.AppendUint64(b, uint64(s.c.land))
	for _, v := range s.c.v {
		b = le.AppendUint32(b, math.Float32bits(v))
	}
	b = le.AppendUint32(b, s.set.n)
	b = le.AppendUint32(b, s.set.rot)
	b = le.AppendUint32(b, filterBits(s.set.cur))
	b = le.AppendUint32(b, filterBits(s.set.prev))
	b = le.AppendUint64(b, uint64(s.standFrom))
	b = le.AppendUint32(b, s.standReq)
	for _, f := range [...]*bloom.BloomFilter{s.set.cur, s.set.prev} {
		if f != nil {
			for _, w := range f.BitSet().Words() {
				b = le.AppendUint64(b, w)
			}
		}
	}
	b = append(b, byte(min(len(writes), maxWriters)))
	for _, w := range writes[:min(len(writes), maxWriters)] {
		b = le.AppendUint64(b, w.writer)
		b = le.AppendUint64(b, w.seq)
	}
	return appendHistory(b, s.hist)
}

// appendHistory renders the verdict history section: records written,
// the first recorded request's number, then the records held, oldest
// first. No history is three zeros.
func appendHistory(b []byte, h *history) []byte {
	le := binary.LittleEndian
	if h == nil {
		return append(b, 0, 0, 0, 0, 0, 0, 0, 0, 0)
	}
	b = le.AppendUint32(b, h.n)
	b = le.AppendUint32(b, h.from)
	held := min(h.n, historyLen)
	b = append(b, byte(held))
	for i := h.n - held; i < h.n; i++ {
		rec := &h.ring[i%historyLen]
		b = le.AppendUint64(b, uint64(rec.at))
		b = append(b, rec.hash[:]...)
		b = le.AppendUint32(b, math.Float32bits(rec.score))
		for _, c := range rec.contrib {
			b = le.AppendUint32(b, math.Float32bits(c))
		}
		b = append(b, rec.sig[:]...)
		b = append(b, byte(rec.tier))
		p := rec.prompt[:min(len(rec.prompt), maxHistoryPrompt)]
		b = le.AppendUint16(b, uint16(len(p)))
		b = append(b, p...)
	}
	return b
}

// readHistory parses the history section that is all of b.
func readHistory(b []byte) (*history, error) {
	le := binary.LittleEndian
	if len(b) < histHeader {
		return nil, errBlob
	}
	n, from, held := le.Uint32(b), le.Uint32(b[4:]), uint32(b[8])
	b = b[histHeader:]
	if held > historyLen || held > n || (n > 0) != (held > 0) {
		return nil, errBlob
	}
	if n == 0 {
		if len(b) != 0 || from != 0 {
			return nil, errBlob
		}
		return nil, nil
	}
	h := &history{n: n, from: from}
	for i := n - held; i < n; i++ {
		if len(b) < histRecord {
			return nil, errBlob
		}
		rec := &h.ring[i%historyLen]
		rec.at = int64(le.Uint64(b))
		copy(rec.hash[:], b[8:24])
		rec.score = math.Float32frombits(le.Uint32(b[24:]))
		q := 28
		for j := range rec.contrib {
			rec.contrib[j] = math.Float32frombits(le.Uint32(b[q:]))
			q += 4
		}
		copy(rec.sig[:], b[q:q+historySignals])
		q += historySignals
		rec.tier = Verdict(b[q])
		plen := int(le.Uint16(b[q+1:]))
		q += 3
		for j, sg := range rec.sig {
			if int(sg) > len(signalNames) || !finite32(rec.contrib[j]) {
				return nil, errBlob
			}
		}
		if rec.tier < Allow || rec.tier > Block || !finite32(rec.score) || plen > maxHistoryPrompt || len(b) < q+plen {
			return nil, errBlob
		}
		rec.prompt = string(b[q : q+plen])
		b = b[q+plen:]
	}
	if len(b) != 0 {
		return nil, errBlob
	}
	return h, nil
}

func finite32(f float32) bool {
	return !math.IsNaN(float64(f)) && !math.IsInf(float64(f), 0)
}

func filterBits(f *bloom.BloomFilter) uint32 {
	if f == nil {
		return 0
	}
	return uint32(f.Cap())
}

// blobHead is a blob's header.
type blobHead struct {
	inc, ver, writer uint64
	writes           []writerSeq
}

// decodeSession parses a blob. It fails closed: anything but a blob this
// version wrote, with sizes it could have written, is an error.
func decodeSession(b []byte) (*session, blobHead, error) {
	var h blobHead
	if len(b) < blobFixed || len(b) > blobMax || b[0] != blobMagic0 || b[1] != blobMagic1 || (b[2] != blobFormat && b[2] != blobFormatNoHistory) {
		return nil, h, errBlob
	}
	withHistory := b[2] == blobFormat
	le := binary.LittleEndian
	p := 4
	u64 := func() uint64 { v := le.Uint64(b[p:]); p += 8; return v }
	u32 := func() uint32 { v := le.Uint32(b[p:]); p += 4; return v }
	f32 := func() float32 { return math.Float32frombits(u32()) }
	h.inc, h.ver, h.writer = u64(), u64(), u64()
	s := &session{}
	copy(s.id[:], b[p:p+16])
	p += 16
	s.first, s.last, s.quarantineUntil = int64(u64()), int64(u64()), int64(u64())
	s.lastConv = u64()
	s.requests, s.texts, s.langEpoch = u32(), u32(), int32(u32())
	s.langCur, s.langPrev, s.cotLangs, s.cotPrev, s.cohortClass = u32(), u32(), u32(), u32(), u32()
	s.tier, s.flags, s.allSingle = Verdict(b[p]), b[p+1], b[p+2] == 1
	p += 3
	if s.tier < Allow || s.tier > Block || b[p-1] > 1 {
		return nil, h, errBlob
	}
	s.score, s.peak, s.spread = f32(), f32(), f32()
	s.ev.tmplSessions, s.ev.tmplConv, s.ev.cohortFresh, s.ev.cohortBase = f32(), f32(), f32(), f32()
	s.ev.cohortLangs = u32()
	s.ev.maxTop, s.ev.appShared = b[p], b[p+1] == 1
	p += 2
	s.hours.bits, s.hours.last = u64(), int64(u64())
	s.c.land = int64(u64())
	for i := range s.c.v {
		v := f32()
		// Sums of ln(gap) (cIaS) are negative for sub-second gaps; every
		// other counter counts.
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) || v < 0 && i != cIaS {
			return nil, h, errBlob
		}
		s.c.v[i] = v
	}
	s.set.n, s.set.rot = u32(), u32()
	curBits, prevBits := u32(), u32()
	s.standFrom, s.standReq = int64(u64()), u32()
	if p != blobFixed {
		return nil, h, errBlob
	}
	if curBits != genBits(s.set.rot, curBits == 0) || (prevBits != 0 && (s.set.rot == 0 || prevBits != genBits(s.set.rot-1, false))) ||
		(curBits == 0 && prevBits != 0) || len(b) < blobFixed+int(curBits+prevBits)/8+1 {
		return nil, h, errBlob
	}
	end := blobFixed + int(curBits+prevBits)/8
	nw := int(b[end])
	wend := end + 1 + 16*nw
	if nw > maxWriters || len(b) < wend || !withHistory && len(b) != wend {
		return nil, h, errBlob
	}
	if withHistory {
		hist, err := readHistory(b[wend:])
		if err != nil {
			return nil, h, err
		}
		s.hist = hist
	}
	for i := range nw {
		q := end + 1 + 16*i
		h.writes = append(h.writes, writerSeq{le.Uint64(b[q:]), le.Uint64(b[q+8:])})
	}
	read := func(m uint32) *bloom.BloomFilter {
		if m == 0 {
			return nil
		}
		w := make([]uint64, m/64)
		for i := range w {
			w[i] = u64()
		}
		return bloom.FromWithM(w, uint(m), bloomK)
	}
	s.set.cur, s.set.prev = read(curBits), read(prevBits)
	return s, h, nil
}

// genBits is the filter size of generation rot (0 when the set is empty).
func genBits(rot uint32, empty bool) uint32 {
	if empty {
		return 0
	}
	if rot >= 4 {
		return sessionBloomMaxBits
	}
	return min(uint32(sessionBloomMinBits)<<rot, sessionBloomMaxBits)
}

// clone copies a session's mergeable state (filters included), without
// its replicated-mode bookkeeping.
func (s *session) clone() *session {
	c := *s
	c.rep = nil
	if s.set.cur != nil {
		c.set.cur = s.set.cur.Copy()
	}
	if s.set.prev != nil {
		c.set.prev = s.set.prev.Copy()
	}
	return &c
}

// baseCopy is what a base needs of a session: everything but the filter
// bits (filters merge by OR, which needs no base; only their entry count
// and generation are counted from it).
func (s *session) baseCopy() *session {
	c := *s
	c.rep, c.hist = nil, nil
	c.set.cur, c.set.prev = nil, nil
	return &c
}

// mergeSession returns r (the newer remote state) plus what l (local)
// added since b (the remote state l was last brought up to; nil: l is all
// local). It takes r's filters, ORing l's into them: r must be a copy of
// its own (a decoded blob). l's cache bookkeeping is kept.
func mergeSession(r, l, b *session, h *halfLives) *session {
	if b == nil {
		b = &session{}
	}
	// r stays untouched (it becomes the base): out shares nothing with it
	// but the filters mergeSets replaces below.
	out := &session{}
	*out = *r
	out.rep = nil
	out.c = mergeCounters(&r.c, &l.c, &b.c, h)
	out.requests = r.requests + l.requests - min(b.requests, l.requests)
	out.texts = r.texts + l.texts - min(b.texts, l.texts)
	switch {
	case r.requests == 0:
		out.first = l.first
	case l.requests > 0:
		out.first = min(r.first, l.first)
	}
	out.last = max(r.last, l.last)
	out.quarantineUntil = max(r.quarantineUntil, l.quarantineUntil)
	out.peak = max(r.peak, l.peak)
	out.ev.maxTop = max(r.ev.maxTop, l.ev.maxTop)
	// The outcome of the newer evaluation: the verdict, score and the
	// evidence it quoted.
	if l.last > r.last || l.last == r.last && l.tier > r.tier {
		out.tier, out.score, out.spread, out.lastConv = l.tier, l.score, l.spread, l.lastConv
		mt := out.ev.maxTop
		out.ev = l.ev
		out.ev.maxTop = mt
		if l.cohortClass != 0 {
			out.cohortClass = l.cohortClass
		}
	}
	out.flags = (r.flags|l.flags)&^(fPromoted|fStanding) | l.flags&fPromoted
	// Standing's clean run merges as a pair ordered by its start: the
	// later reset wins (a flag seen by either replica sends the identity
	// back to probation); equal starts keep the larger request count and
	// either's earned standing.
	switch {
	case l.standFrom > r.standFrom:
		out.standFrom, out.standReq, out.flags = l.standFrom, l.standReq, out.flags|l.flags&fStanding
	case l.standFrom < r.standFrom:
		out.standFrom, out.standReq, out.flags = r.standFrom, r.standReq, out.flags|r.flags&fStanding
	default:
		out.standFrom, out.standReq, out.flags = r.standFrom, max(r.standReq, l.standReq), out.flags|(r.flags|l.flags)&fStanding
	}
	out.standNoted = l.standNoted
	out.allSingle = (r.allSingle || r.requests == 0) && (l.allSingle || l.requests == 0)
	out.langEpoch, out.langCur, out.langPrev = mergeEpoch(r.langEpoch, r.langCur, r.langPrev, l.langEpoch, l.langCur, l.langPrev)
	_, out.cotLangs, out.cotPrev = mergeEpoch(r.langEpoch, r.cotLangs, r.cotPrev, l.langEpoch, l.cotLangs, l.cotPrev)
	out.hours = mergeHours(r.hours, l.hours)
	out.set = mergeSets(&r.set, &l.set, b.set.rot, b.set.n)
	out.id = l.id
	out.setTries, out.cost, out.wallSet = l.setTries, l.cost, l.wallSet
	out.hist = mergeHistory(r.hist, l.hist)
	return out
}

// mergeCounters moves the three to the newest landmark and adds l's
// additions since b to r.
func mergeCounters(r, l, b *counters, h *halfLives) counters {
	land := max(r.land, l.land, b.land)
	at := func(c *counters) counters {
		x := *c
		if x.land != 0 && x.land < land {
			d := float64(land - x.land)
			f := [3]float32{float32(math.Exp2(-d / h.content)), float32(math.Exp2(-d / h.volume)), float32(math.Exp2(-d / h.burst))}
			for i := range x.v {
				x.v[i] *= f[groupOf(i)]
			}
		}
		x.land = land
		return x
	}
	rr, ll, bb := at(r), at(l), at(b)
	out := counters{land: land}
	for i := range out.v {
		out.v[i] = rr.v[i] + ll.v[i] - bb.v[i]
		if i != cIaS {
			out.v[i] = max(out.v[i], 0) // rounding never makes a count negative
		}
	}
	return out
}

// mergeEpoch merges two (epoch, current, previous) language masks.
func mergeEpoch(ea int32, ca, pa uint32, eb int32, cb, pb uint32) (int32, uint32, uint32) {
	switch {
	case ea == eb:
		return ea, ca | cb, pa | pb
	case ea < eb:
		ea, ca, pa, eb, cb, pb = eb, cb, pb, ea, ca, pa
	}
	if ea == eb+1 {
		return ea, ca, pa | cb
	}
	return ea, ca, pa
}

// mergeHours ORs two hour rings, keeping the 64 hours up to the newer.
func mergeHours(a, b hourRing) hourRing {
	if a.bits == 0 {
		return b
	}
	if b.bits == 0 {
		return a
	}
	if b.last > a.last {
		a, b = b, a
	}
	for x := b.last - 63; x <= a.last-64 && x <= b.last; x++ {
		b.bits &^= 1 << uint(x%64)
	}
	a.bits |= b.bits
	return a
}

// mergeSets merges two shingle sets by generation: one generation's
// filters have one size and merge by OR; a set one rotation ahead keeps
// its current filter and takes the other's current into its previous.
// It takes r's filters (ORing into them) and copies l's where it needs
// them; bRot and bN are the base's generation and entry count.
func mergeSets(r, l *shingleSet, bRot, bN uint32) shingleSet {
	// into ORs y into x, x owned; a nil x becomes a copy of y.
	into := func(x, y *bloom.BloomFilter) *bloom.BloomFilter {
		switch {
		case y == nil:
			return x
		case x == nil:
			return y.Copy()
		case x.Cap() == y.Cap():
			_ = x.Merge(y) // same size and k: cannot fail
		}
		return x
	}
	copyOf := func(x *bloom.BloomFilter) *bloom.BloomFilter {
		if x == nil {
			return nil
		}
		return x.Copy()
	}
	switch {
	case r.cur == nil:
		return shingleSet{cur: copyOf(l.cur), prev: copyOf(l.prev), n: l.n, rot: l.rot}
	case l.cur == nil:
		return *r
	case r.rot == l.rot:
		n := r.n
		if bRot == l.rot {
			n += l.n - min(bN, l.n)
		} else {
			n = max(r.n, l.n)
		}
		return shingleSet{cur: into(r.cur, l.cur), prev: into(r.prev, l.prev), n: n, rot: r.rot}
	case r.rot > l.rot:
		out := *r
		if r.rot == l.rot+1 {
			out.prev = into(r.prev, l.cur)
		}
		return out
	}
	// l is ahead of r
	out := shingleSet{cur: copyOf(l.cur), prev: copyOf(l.prev), n: l.n, rot: l.rot}
	if l.rot == r.rot+1 {
		out.prev = into(out.prev, r.cur)
	}
	return out
}
