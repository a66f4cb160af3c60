package mutate

import (
	"bytes"
	"cmp"
	"math"
	"slices"
)

// patchList collects the replacements of byte ranges of one document and
// applies them in a single copy: the output is the document with each
// patched range replaced and every other byte copied through. The response
// Rewriter and the request rewriter both embed one.
//
// Patches are expected in document order and must not overlap (each walk
// emits them as it reads the document); one that starts before the
// previous one ends marks the list for a sort before apply, and apply skips
// a patch that would overlap rather than corrupt the output. Reset between
// documents, the list keeps its capacity, so steady-state rewriting
// allocates nothing.
type patchList struct {
	doc      []byte // the document the offsets refer to
	ps       []patch
	unsorted bool   // a patch was added before the end of the previous one
	lit      []byte // replacement bytes referenced by pBytes patches
	// keepLF makes every replacement keep the line feeds it removes: set
	// by SSEStream for multi-line data events, which are split back into
	// lines at the LFs.
	keepLF bool
	// pool lends large lists (nil: none); borrowed says ps is one, to be
	// given back (done) once the document is written.
	pool     *ScratchPool
	borrowed bool
}

// done gives a borrowed list back once the document is written (or given
// up): nothing may refer to the patches afterwards.
func (l *patchList) done() {
	if l.borrowed {
		l.borrowed = false
		l.pool.givePatches(l)
	}
}

// Patch kinds: what replaces doc[s:e].
const (
	pDel    = iota // nothing
	pNum           // the float64 of bits x printed at k decimals (appendRounded)
	pBytes         // lit[x:x+n] (a literal string is copied into lit)
	pScaled        // int64(x) / 10^k (appendScaled)
)

// patch replaces doc[s:e]. It is kept small (40 bytes): a buffered
// document of 100 KB holds a couple of thousand of them.
type patch struct {
	s, e int
	x    uint64 // the value, by kind
	n    int    // pBytes: the length of the replacement in lit
	kind uint8
	k    int8
}

// numPatch replaces doc[s:e] with v printed at k decimals.
func numPatch(s, e int, v float64, k int) patch {
	return patch{s: s, e: e, kind: pNum, x: math.Float64bits(v), k: int8(k)}
}

// reset empties the list for a new document. A list borrowed from a
// pool for the previous document must have been given back.
func (l *patchList) reset(doc []byte) {
	l.doc = doc
	// A large document (a buffered response) would grow the list by
	// doubling through a dozen copies; one patch per 64 bytes is about
	// what a logprobs document needs (a number every 30-70 bytes).
	if est := len(doc) / 64; cap(l.ps) < est {
		if l.borrowed = l.pool.borrowPatches(l, est); !l.borrowed {
			l.ps = make([]patch, 0, est)
		}
	}
	l.ps = l.ps[:0]
	l.lit = l.lit[:0]
	l.unsorted = false
}

// add appends p, merging it into the previous patch when both are
// adjacent deletions.
func (l *patchList) add(p patch) {
	if n := len(l.ps); n > 0 {
		last := &l.ps[n-1]
		if p.kind == pDel && last.kind == pDel && last.e == p.s {
			last.e = p.e // merge adjacent deletions
			return
		}
		if p.s < last.e {
			l.unsorted = true
		}
	}
	l.ps = append(l.ps, p)
}

// del deletes doc[s:e].
func (l *patchList) del(s, e int) {
	if s < e {
		l.add(patch{s: s, e: e, kind: pDel})
	}
}

// replace replaces doc[s:e] with str, unless they are the same bytes.
func (l *patchList) replace(s, e int, str string) {
	if string(l.doc[s:e]) != str {
		lo := len(l.lit)
		l.lit = append(l.lit, str...)
		l.add(patch{s: s, e: e, kind: pBytes, x: uint64(lo), n: len(str)})
	}
}

// replaceNum replaces the number at s:e (value orig) with out printed at k
// decimals, unless that would not change its value.
func (l *patchList) replaceNum(s, e int, orig, out float64, k int) {
	if out == orig {
		if k < 0 {
			return
		}
		if m, ok := roundTo(orig, k); !ok || float64(m)/pow10[k] == orig {
			return
		}
	}
	l.add(numPatch(s, e, out, k))
}

// roundNum rounds the number at s:e to k decimals when that changes its
// value: on its decimal text when it has a plain form (exact, see
// roundText), through float64 otherwise.
func (l *patchList) roundNum(s, e, k int) {
	if k < 0 {
		return
	}
	m, changed, ok := roundText(l.doc[s:e], k)
	if !ok {
		if v, ok := parseNumber(l.doc[s:e]); ok {
			l.replaceNum(s, e, v, v, k)
		}
		return
	}
	if changed {
		l.add(patch{s: s, e: e, kind: pScaled, x: uint64(m), k: int8(k)})
	}
}

// litBuf returns the buffer of replacement bytes, for the caller to append
// one replacement to and hand back to replaceLit. Encoding straight into
// it saves a copy.
func (l *patchList) litBuf() []byte { return l.lit }

// replaceLit replaces doc[s:e] with the bytes appended to the buffer
// litBuf returned (buf is that buffer after the appends), unless they are
// the same bytes as doc[s:e].
func (l *patchList) replaceLit(s, e int, buf []byte) {
	lo := len(l.lit)
	if bytes.Equal(buf[lo:], l.doc[s:e]) {
		l.lit = buf[:lo] // keep the capacity, drop the bytes
		return
	}
	l.lit = buf
	l.add(patch{s: s, e: e, kind: pBytes, x: uint64(lo), n: len(buf) - lo})
}

// dropper deletes the dropped items (members or elements) of one
// container together with their commas, so that the container stays valid
// JSON: items dropped before the first kept one go with the comma after
// them, the others with the comma before them, and a container with none
// kept is emptied. Feed it every item in document order, then call done.
type dropper struct {
	l       *patchList
	first   int  // start of the first item; -1 before any
	prevEnd int  // end of the previous item
	kept    bool // an item was kept
}

// dropper starts the deletions of one container's dropped items.
func (l *patchList) dropper() dropper { return dropper{l: l, first: -1} }

// item reports the item at s:e (a member from its name's opening quote,
// or an element) and whether it stays.
func (d *dropper) item(s, e int, keep bool) {
	if keep && d.kept {
		d.prevEnd = e // the common case, kept after kept: small enough to inline
		return
	}
	d.edge(s, e, keep)
}

// edge handles the items where something is deleted or about to be: the
// first one, the first kept one and every dropped one after it.
func (d *dropper) edge(s, e int, keep bool) {
	if d.first < 0 {
		d.first = s
	}
	switch {
	case !d.kept && keep:
		d.kept = true
		d.l.del(d.first, s) // the dropped items before this one
	case d.kept && !keep:
		d.l.del(d.prevEnd, e)
	}
	d.prevEnd = e
}

// done ends the container whose brackets are at open and close.
func (d *dropper) done(open, close int) {
	if !d.kept && d.first >= 0 {
		d.l.del(open+1, close)
	}
}

// apply appends the patched document to dst and reports whether its bytes
// changed (a patch may rewrite a range to the same bytes).
func (l *patchList) apply(dst []byte) ([]byte, bool) {
	doc := l.doc
	if len(l.ps) == 0 {
		return append(dst, doc...), false
	}
	if l.unsorted {
		sortPatches(l.ps)
	}
	// The output is about the document's size: one allocation, not a
	// doubling series (rounding shortens it, alternatives removed shorten
	// it more).
	dst = slices.Grow(dst, len(doc))
	changed := false
	last := 0
	for i := range l.ps {
		p := &l.ps[i]
		if p.s < last {
			continue // overlapping patch: cannot happen; never corrupt output
		}
		dst = append(dst, doc[last:p.s]...)
		at := len(dst)
		switch p.kind {
		case pNum:
			dst = appendRounded(dst, math.Float64frombits(p.x), int(p.k))
		case pScaled:
			dst = appendScaled(dst, int64(p.x), int(p.k))
		case pBytes:
			dst = append(dst, l.lit[p.x:int(p.x)+p.n]...)
		}
		if !changed && !bytes.Equal(dst[at:], doc[p.s:p.e]) {
			changed = true
		}
		if l.keepLF {
			// Keep the line breaks of what was replaced (as whitespace
			// after the replacement, which JSON allows) so the document
			// keeps its line count.
			for n := bytes.Count(doc[p.s:p.e], []byte{'\n'}); n > 0; n-- {
				dst = append(dst, '\n')
			}
		}
		last = p.e
	}
	return append(dst, doc[last:]...), changed
}

// sortPatches orders ps by offset: insertion sort for the few patches of
// one chunk, which is the common case, a library sort beyond.
func sortPatches(ps []patch) {
	if len(ps) <= 32 {
		for i := 1; i < len(ps); i++ {
			for j := i; j > 0 && ps[j].s < ps[j-1].s; j-- {
				ps[j], ps[j-1] = ps[j-1], ps[j]
			}
		}
		return
	}
	slices.SortFunc(ps, func(a, b patch) int { return cmp.Compare(a.s, b.s) })
}
