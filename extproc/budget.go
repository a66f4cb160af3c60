package extproc

import "sync/atomic"

// budget is the bound on body bytes held across all streams of a Server
// (processing.max_held_total_bytes): request bodies held for the decision,
// unfinished SSE events, JSON documents collected for rewriting and gzip
// output. Each stream reserves what it is about to hold before it holds
// it, in granules so that the per-token path seldom touches the shared
// counter, and gives the reservation back when it no longer holds the
// bytes. A reservation that would take the total past the bound fails,
// and the stream answers with its failure behaviour (503 for a request,
// fail closed for a response).
type budget struct {
	used atomic.Int64
}

// memGranule is the unit of reservations: a stream's reservation is a
// multiple of it, so a token stream whose held tail grows and shrinks by
// a few hundred bytes keeps one granule instead of updating the counter
// per chunk.
const memGranule = 16 << 10

func roundGranule(n int64) int64 { return (n + memGranule - 1) / memGranule * memGranule }

// take reserves n more bytes if the total stays within limit.
func (b *budget) take(n, limit int64) bool {
	for {
		u := b.used.Load()
		if u+n > limit {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			return true
		}
	}
}

func (b *budget) give(n int64) { b.used.Add(-n) }

// memHold is one stream's reservation.
type memHold struct {
	b        *budget
	reserved int64
}

// ensure makes the reservation at least n bytes; false (and nothing
// reserved beyond what was) when the bound does not allow it.
func (h *memHold) ensure(n int, limit int64) bool {
	need := int64(n)
	if need <= h.reserved {
		return true
	}
	need = roundGranule(need)
	if !h.b.take(need-h.reserved, limit) {
		return false
	}
	h.reserved = need
	return true
}

// settle shrinks the reservation to n bytes (rounded up to a granule,
// and at least one granule once the stream reserved anything, so that a
// token stream does not return and retake its granule every chunk) when it
// holds at least a granule more than that.
func (h *memHold) settle(n int) {
	keep := max(roundGranule(int64(n)), min(h.reserved, memGranule))
	if h.reserved-keep >= memGranule {
		h.b.give(h.reserved - keep)
		h.reserved = keep
	}
}

// release gives the whole reservation back.
func (h *memHold) release() {
	if h.reserved > 0 {
		h.b.give(h.reserved)
		h.reserved = 0
	}
}
