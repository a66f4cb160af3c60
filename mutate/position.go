package mutate

// Token positions key the noise. A Rewriter counts, per choice (or
// Responses API content part), the logprob entries of the documents it has
// rewritten, so that the n-th token of a choice draws the same noise
// whether the stream arrived as one body or as many chunks. A document's
// entries are pending until it has been rewritten successfully: an invalid
// document advances nothing.

// counter is the number of entries seen for one key.
type counter struct{ key, n uint64 }

// Counter keys: the choice index for chat/completions, tagged keys for the
// Responses API (output_index, content_index) and for prompt positions.
const (
	keyResp     = 1 << 62
	keyPrompt   = 2 << 62
	keyOverflow = 3 << 62
	maxCounters = 1024
)

// respKey is the counter key of a Responses API content part.
func respKey(out, content uint64) uint64 {
	return keyResp | (out&0xffffffff)<<24 | content&0xffffff
}

// position returns the position of the next entry for key: the committed
// count plus what the current document has consumed so far.
func (r *Rewriter) position(key uint64) uint64 {
	var n uint64
	for _, c := range r.ctr {
		if c.key == key {
			n = c.n
			break
		}
	}
	for _, c := range r.pend {
		if c.key == key {
			n += c.n
			break
		}
	}
	return n
}

// advance records that the current document consumed n entries for key.
func (r *Rewriter) advance(key uint64, n int) {
	for i := range r.pend {
		if r.pend[i].key == key {
			r.pend[i].n += uint64(n)
			return
		}
	}
	r.pend = append(r.pend, counter{key, uint64(n)})
}

// commit applies the positions consumed by a document that was rewritten
// successfully (an invalid document does not advance them).
func (r *Rewriter) commit() {
next:
	for _, p := range r.pend {
		for i := range r.ctr {
			if r.ctr[i].key == p.key {
				r.ctr[i].n += p.n
				continue next
			}
		}
		if len(r.ctr) < maxCounters {
			r.ctr = append(r.ctr, p)
			continue
		}
		// More distinct choices than maxCounters: they share one counter
		// (bounded memory; only the noise positions are affected).
		for i := range r.ctr {
			if r.ctr[i].key == keyOverflow {
				r.ctr[i].n += p.n
				continue next
			}
		}
		r.ctr[len(r.ctr)-1] = counter{keyOverflow, p.n}
	}
}
