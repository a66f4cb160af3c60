package mutate

import "sync"

// ScratchPool lends the patch list a large document is rewritten with
// from one Rewriter to the next. A buffered response of 100 KB with
// logprobs needs a couple of thousand patches (about 100 KB): without a
// pool each response allocates its list anew, and under load those
// allocations are what the garbage collector works for. A Rewriter given
// a pool (SetScratchPool) borrows a list only for a document that needs a
// large one and gives it back before Rewrite returns, so no stream keeps
// one between documents. The zero value is ready; safe for concurrent
// use. Whoever owns the Rewriters (a server) owns the pool.
type ScratchPool struct {
	p sync.Pool // of *[]patch
}

// minPooledPatches is the size from which a patch list is borrowed: a
// token event needs a few dozen and keeps its own.
const minPooledPatches = 256

// maxPooledPatches bounds the lists given back: the list of a 16 MiB
// document is left to the garbage collector.
const maxPooledPatches = 1 << 16

// SetScratchPool makes r borrow large patch lists from sp (nil: none).
func (r *Rewriter) SetScratchPool(sp *ScratchPool) { r.pool = sp }

// borrowPatches gives l a patch list of capacity at least n from sp, and
// reports whether it did.
func (sp *ScratchPool) borrowPatches(l *patchList, n int) bool {
	if sp == nil || n < minPooledPatches {
		return false
	}
	if p, ok := sp.p.Get().(*[]patch); ok && cap(*p) >= n {
		l.ps = (*p)[:0]
		return true
	}
	l.ps = make([]patch, 0, n)
	return true
}

// givePatches returns l's borrowed list to sp.
func (sp *ScratchPool) givePatches(l *patchList) {
	ps := l.ps
	l.ps = nil
	if cap(ps) <= maxPooledPatches {
		sp.p.Put(&ps)
	}
}
