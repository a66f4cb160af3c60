package scoring

import (
	"bytes"
	"fmt"
	"testing"
	"time"
)

// scoredSession returns the session a client leaves after n requests, with
// filters large enough to have rotated.
func scoredSession(t testing.TB, n int) (*Engine, *session) {
	t.Helper()
	e := newTestEngine(t, nil, Options{Seed: []byte("blob")})
	c := newClient("sk-blob", "198.51.100.20:1")
	var d Decision
	for i := range n {
		d = e.Score(c.req(t0.Add(time.Duration(i)*400*time.Millisecond), fmt.Sprintf("write a detailed answer to question %d about topic %d please", i, i*7), withLogprobs(5)))
	}
	s, ok := e.main.Get(d.Session)
	if !ok {
		s, _ = e.prob.Get(d.Session)
	}
	if s == nil {
		t.Fatal("session not cached")
	}
	return e, s
}

func TestSessionBlobRoundTrip(t *testing.T) {
	for _, n := range []int{1, 3, 40, 400} {
		_, s := scoredSession(t, n)
		ws := withWrite(withWrite(nil, 7, 1), 9, 4)
		b := encodeSession(nil, s, 11, 12, ws)
		got, h, err := decodeSession(b)
		if err != nil {
			t.Fatalf("%d requests: %v", n, err)
		}
		if h.inc != 11 || h.ver != 12 || h.writer != 9 || len(h.writes) != 2 || h.writes[1] != (writerSeq{7, 1}) {
			t.Fatalf("header %+v", h)
		}
		if again := encodeSession(nil, got, 11, 12, h.writes); !bytes.Equal(again, b) {
			t.Fatalf("%d requests: re-encoding differs", n)
		}
		if got.requests != s.requests || got.c != s.c || got.hours != s.hours || got.set.rot != s.set.rot {
			t.Fatalf("%d requests: decoded state differs", n)
		}
		if n == 400 && s.set.rot == 0 {
			t.Fatal("400 requests did not rotate the filter: the test misses rotation")
		}
		if n == 400 && (s.hist == nil || s.hist.n < historyLen) {
			t.Fatal("400 requests left no full verdict history: the test misses the history section")
		}
		if (got.hist == nil) != (s.hist == nil) || got.hist != nil && (got.hist.n != s.hist.n || got.hist.from != s.hist.from || got.hist.ring != s.hist.ring) {
			t.Fatalf("%d requests: decoded history differs", n)
		}
		if len(b) > blobMax {
			t.Fatalf("blob of %d bytes exceeds blobMax %d", len(b), blobMax)
		}
	}
}

// TestMergeSessionOrderFree: a session's requests split over two replicas
// and merged give the counters of one replica seeing them all.
func TestMergeSessionOrderFree(t *testing.T) {
	e, whole := scoredSession(t, 30)
	h := &e.params.half
	empty := &session{}
	// Merging with an empty remote, and an empty local onto whole, are
	// both whole.
	a := mergeSession(empty, whole, nil, h)
	b := mergeSession(whole.clone(), &session{id: whole.id}, nil, h)
	for _, m := range []*session{a, b} {
		if m.requests != whole.requests || m.c != whole.c || m.hours != whole.hours || m.texts != whole.texts {
			t.Fatalf("merge with nothing changed the session: %d/%d requests", m.requests, whole.requests)
		}
	}
	// Adding what local added since base: r + (l - b) with l == b is r.
	c := mergeSession(whole.clone(), whole, whole.baseCopy(), h)
	if c.requests != whole.requests || c.c != whole.c {
		t.Fatal("merging an unchanged local copy changed the remote state")
	}
}

func TestMergeParts(t *testing.T) {
	// hour rings: bits more than 63 hours older than the newer ring drop
	var a, b hourRing
	a.mark(int64(100 * 3.6e12))
	b.mark(int64(30 * 3.6e12))
	b.mark(int64(60 * 3.6e12))
	m := mergeHours(a, b)
	if m.last != 100 || m.activeWithin(int64(100*3.6e12), 64) != 2 {
		t.Fatalf("merged ring %+v: want hours 60 and 100", m)
	}
	// language epochs
	if e, c, p := mergeEpoch(5, 1, 2, 5, 4, 8); e != 5 || c != 5 || p != 10 {
		t.Fatalf("same epoch: %d %b %b", e, c, p)
	}
	if e, c, p := mergeEpoch(5, 1, 2, 6, 4, 8); e != 6 || c != 4 || p != 9 {
		t.Fatalf("next epoch: %d %b %b", e, c, p)
	}
	if e, c, p := mergeEpoch(9, 1, 2, 5, 4, 8); e != 9 || c != 1 || p != 2 {
		t.Fatalf("old epoch: %d %b %b", e, c, p)
	}
	// shingle sets one rotation apart: the newer keeps its filter and
	// takes the older's current into its previous
	var x, y shingleSet
	for i := range 200 {
		l := locate(uint64(i) * 0x9e3779b97f4a7c15)
		if i < 20 {
			y.add(&l)
		}
		x.add(&l)
	}
	if x.rot <= y.rot {
		t.Fatalf("rotations %d and %d: want x ahead", x.rot, y.rot)
	}
	out := mergeSets(&x, &y, 0, 0)
	if out.rot != x.rot || out.cur.Cap() != x.cur.Cap() {
		t.Fatalf("merged set rot %d size %d, want %d %d", out.rot, out.cur.Cap(), x.rot, x.cur.Cap())
	}
	k := uint64(199)
	l := locate(k * 0x9e3779b97f4a7c15)
	if _, ok := out.has(&l); !ok {
		t.Fatal("the newest shingle is lost in the merge")
	}
}

// TestSessionBlobWithoutHistory: a blob of the format before the history
// was replicated decodes (rolling upgrade) with no history; a history
// section with a bad count or trailing bytes does not.
func TestSessionBlobWithoutHistory(t *testing.T) {
	_, s := scoredSession(t, 400)
	b := encodeSession(nil, s, 1, 2, withWrite(nil, 3, 4))
	end := len(b) - len(appendHistory(nil, s.hist))
	old := append([]byte(nil), b[:end]...)
	old[2] = blobFormatNoHistory
	got, _, err := decodeSession(old)
	if err != nil || got.hist != nil || got.requests != s.requests {
		t.Fatalf("format %d blob: %v, history %v", blobFormatNoHistory, err, got != nil && got.hist != nil)
	}
	for name, bad := range map[string][]byte{
		"history cut":    b[:len(b)-1],
		"trailing byte":  append(append([]byte(nil), b...), 0),
		"held over ring": append(append([]byte(nil), b[:end+8]...), historyLen+1),
		"old with extra": append(append([]byte(nil), old...), 0, 0, 0, 0, 0, 0, 0, 0, 0),
	} {
		if _, _, err := decodeSession(bad); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

// TestMergeHistory: the union of two replicas' records, deduplicated, in
// time order, the newest historyLen kept, a lower bound of records
// written.
func TestMergeHistory(t *testing.T) {
	mk := func(from uint32, ats ...int64) *history {
		h := &history{from: from}
		for _, at := range ats {
			h.ring[h.n%historyLen] = verdictRecord{at: at, hash: [16]byte{byte(at)}, tier: Degrade}
			h.n++
		}
		return h
	}
	times := func(h *history) []int64 {
		var out []int64
		for i := h.n - min(h.n, historyLen); i < h.n; i++ {
			out = append(out, h.ring[i%historyLen].at)
		}
		return out
	}
	m := mergeHistory(mk(3, 10, 30, 50), mk(4, 20, 30, 40))
	if got := fmt.Sprint(times(m)); got != "[10 20 30 40 50]" || m.n != 5 || m.from != 3 {
		t.Fatalf("merged %s n %d from %d", got, m.n, m.from)
	}
	var many []int64
	for i := range 30 {
		many = append(many, int64(100+2*i))
	}
	m = mergeHistory(mk(1, many...), mk(2, 101, 157))
	got := times(m)
	// a holds 128..158 of its 30; with b's 101 and 157 the newest 16 of
	// the union run from 130 and include 157.
	if len(got) != historyLen || got[len(got)-1] != 158 || got[0] != 130 || got[len(got)-2] != 157 || m.n != 30 {
		t.Fatalf("merged %v n %d: want the newest %d of the union", got, m.n, historyLen)
	}
	if mergeHistory(nil, nil) != nil {
		t.Fatal("two empty histories merge to one")
	}
	a := mk(1, 5)
	if m := mergeHistory(a, nil); m == a || fmt.Sprint(times(m)) != "[5]" {
		t.Fatal("merging with nothing must copy")
	}
}

func FuzzDecodeSession(f *testing.F) {
	for _, n := range []int{1, 40, 400} {
		_, s := scoredSession(f, n)
		f.Add(encodeSession(nil, s, 1, 2, withWrite(nil, 3, 4)))
	}
	f.Add([]byte("DG\x01\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, h, err := decodeSession(b)
		if err != nil {
			return
		}
		again := encodeSession(nil, s, h.inc, h.ver, h.writes)
		if _, _, err := decodeSession(again); err != nil {
			t.Fatalf("a decoded blob does not decode once re-encoded: %v", err)
		}
		// Whatever decodes merges without panicking.
		_ = mergeSession(s.clone(), s, nil, &halfLives{content: 1e12, volume: 1e11, burst: 1e10})
	})
}

func FuzzParseAgg(f *testing.F) {
	e, _ := scoredSession(f, 30)
	e2 := newTestEngine(f, nil, Options{Seed: []byte("agg")})
	e.trackDeltas()
	c := newClient("sk-agg", "198.51.100.30:1")
	for i := range 20 {
		e.Score(c.req(t0.Add(time.Duration(i)*time.Second), fmt.Sprintf("template wrapper text around item %d", i)))
	}
	f.Add(e.takeDeltas(1, false))
	f.Add(e.takeDeltas(1, true))
	f.Add([]byte("DA\x01\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := parseAgg(b)
		if err != nil {
			return
		}
		_ = e2.applyAgg(a) // must not panic, whatever the counts
	})
}
