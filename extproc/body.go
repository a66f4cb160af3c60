package extproc

import (
	"bytes"
	"encoding/json"
	"errors"

	"github.com/distillguard/distillguard/mutate"
)

// respBody is a response body being rewritten. It owns everything the
// chunks go through, in order: the gzip decoder, the SSE framer or the
// buffer a JSON document is collected in, the rewriter, and the scratch
// they write into. Write takes one chunk and says what the reply does with
// it; the stream builds the reply.
type respBody struct {
	kind bodyKind
	// mode is the body mode the chunks arrive in: the filter's, or the one
	// the headers reply asked for with mode_override. It turns from
	// BUFFERED to STREAMED when Envoy turns out to have ignored the
	// override and streams the body.
	mode bodyMode
	// configured is the filter's response body mode, whatever the
	// override: under BUFFERED_PARTIAL, a BUFFERED message that is not a
	// whole document was cut at Envoy's buffer limit, not streamed.
	configured bodyMode
	maxBody    int

	// origEnc is the content-encoding the headers reply removed ("" when
	// the body is identity-encoded).
	origEnc string
	gz      *mutate.Gunzip
	dec     []byte // scratch: decoded gzip output

	rw  *mutate.Rewriter
	sse framer
	// usage reads the output token count from what is released, for the
	// scorer (scoring.ResponseObserver; off when it is not one).
	usage usageTracker
	track bool
	prev  mutate.StreamStats
	buf   []byte // a JSON document held until complete

	// released: body bytes went out in a reply, so the original body can
	// no longer be handed back instead.
	released bool
	// oversizePass: the route lets bodies beyond the bounds and bodies
	// that do not decode through unrewritten (on_oversize: pass);
	// otherwise they fail closed (actAbort).
	oversizePass bool
	// abort is the refusal an actAbort answers with.
	abort *mutate.RequestError

	out      *outBuf   // the stream's output scratch
	rec      *recorder // the stream's measurements
	mem      *memHold  // the stream's share of the held-bytes bound
	memLimit int64
}

// framer is a streamed body's framer: *mutate.SSEStream or
// *mutate.NDJSONStream (one code path: the NDJSON one runs the SSE one).
type framer interface {
	mutate.Stream
	PassOversize()
	Discard()
}

// bodyKind is what a respBody does with its chunks. SSE and JSON bodies
// become raw when a JSON document outgrows max_body_bytes, any body starts
// dropping when gzip fails after bytes were released, and any stops when
// rewriting is given up.
type bodyKind uint8

const (
	bodySSE      bodyKind = iota // text/event-stream: framed, each complete event rewritten
	bodyJSON                     // one JSON document: collected, rewritten whole
	bodyRaw                      // passed on as it arrives; only decoding continues
	bodyDropping                 // gzip failed after bytes were released: the rest is dropped
	bodyStopped                  // rewriting given up: the rest passes untouched (respPassing)
)

// chunkEnd is where a chunk stands in its body, from the body mode and
// end_of_stream.
type chunkEnd uint8

const (
	// endMore: more chunks follow (STREAMED, FULL_DUPLEX_STREAMED).
	endMore chunkEnd = iota
	// endLast: end_of_stream; the body ends with this chunk.
	endLast
	// endWhole: BUFFERED without end_of_stream, which is the whole body
	// with trailers to follow, or, when Envoy ignored the override to
	// BUFFERED, a streamed chunk (resolved by whether the JSON is whole).
	endWhole
	// endCut: BUFFERED_PARTIAL without end_of_stream: Envoy cut the body
	// at its buffer limit and the rest bypasses the processor.
	endCut
)

// chunkAction is what the reply does with the chunk Envoy sent.
type chunkAction uint8

const (
	actEmit    chunkAction = iota // replace it with the bytes Write returned
	actKeep                       // let it go on unchanged
	actHold                       // clear it: nothing to release yet
	actRestore                    // let it go on and put content-encoding back: gzip failed on a body still whole
	actAbort                      // refuse the response (respBody.abort): a local reply while Envoy holds its headers, a reset after
)

// released is what a reply releases in place of chunk, given the action
// and bytes Write returned.
func released(act chunkAction, out, chunk []byte) []byte {
	switch act {
	case actEmit:
		return out
	case actHold, actAbort:
		return nil
	}
	return chunk
}

// Write runs the next chunk of the body (eos: its end_of_stream) through
// decoding, framing and rewriting, and says what the reply does with the
// chunk: act, with out the bytes that replace it for actEmit. whole says
// the reply carries the entire body, so a content-length must match it.
// The bytes stay valid until the stream's output scratch is given back.
//
// The results are plain values rather than a struct: a struct result
// copied up through the calls cost more per chunk (store-forwarding
// stalls) than everything else Write adds to the rewrite itself.
func (b *respBody) Write(chunk []byte, eos bool) (act chunkAction, out []byte, whole bool) {
	end := b.end(eos)
	first := !b.released
	// The original can be handed back while nothing was released and the
	// reply's header mutation takes effect, to put content-encoding back.
	restorable := first && headerMutationsApply(b.mode)
	switch {
	case b.kind == bodyDropping:
		act = actHold
	case end == endCut && (b.kind == bodyJSON || b.gz != nil):
		// A cut JSON document cannot be rewritten, and a cut gzip stream
		// continues compressed past the processor: leave both as sent.
		b.rec.pass(reasonPartialBody)
		act = actKeep
		if b.gz != nil && restorable {
			act = actRestore
		}
		b.stop()
	default:
		in := chunk
		if b.gz != nil {
			var err error
			if in, err = b.decode(chunk, end); err != nil {
				if errors.Is(err, mutate.ErrChunkTooLarge) && b.kind == bodyJSON && !b.oversizePass {
					// One chunk of a JSON document decoding beyond
					// max_body_bytes: the document is too large.
					act = b.fail(refusal(502, refuseResponseTooLarge, "the upstream response is larger than the gateway can rewrite"))
					break
				}
				act, out = b.gzipFailed(in, restorable)
				break
			}
		}
		// What this chunk makes the stream hold (the unfinished event or
		// document, and the rewritten copy) must fit the server-wide bound.
		if !b.mem.ensure(b.holding()+2*len(in), b.memLimit) {
			b.rec.pass(reasonOverBudget)
			act = b.fail(refusal(503, refuseOverloaded, "the gateway is holding too many response bodies; retry shortly"))
			break
		}
		switch b.kind {
		case bodySSE:
			act, out = b.keepOr(b.frame(in, end != endMore), chunk)
		case bodyJSON:
			// A BUFFERED message may prove to be cut: end says how it
			// turned out.
			act, out, end = b.document(in, chunk, end, restorable)
		default: // bodyRaw
			act, out = b.keepOr(in, chunk)
		}
	}
	whole = first && act != actHold && act != actAbort && (end == endLast || end == endWhole)
	if len(released(act, out, chunk)) > 0 {
		b.released = true
	}
	return act, out, whole
}

func (b *respBody) end(eos bool) chunkEnd {
	switch {
	case eos:
		return endLast
	case b.mode == modeBuffered:
		return endWhole
	case b.mode == modePartial:
		return endCut
	}
	return endMore
}

// decode runs the chunk through the gzip decoder, closing it at the end
// of the body. On an error it returns what decoded cleanly.
func (b *respBody) decode(chunk []byte, end chunkEnd) ([]byte, error) {
	dec, err := b.gz.Write(b.dec[:0], chunk)
	closed := false
	if err == nil && end == endLast {
		dec, err = b.gz.Close(dec)
		closed = true
	}
	if err != nil {
		return dec, err
	}
	b.dec = dec[:0]
	if closed {
		b.gz = nil
	}
	return dec, nil
}

// fail gives the body up and says the reply refuses the response with e.
func (b *respBody) fail(e *mutate.RequestError) chunkAction {
	b.abort = e
	b.stop()
	return actAbort
}

// document collects a JSON document and rewrites it once complete.
func (b *respBody) document(in, chunk []byte, end chunkEnd, restorable bool) (chunkAction, []byte, chunkEnd) {
	if len(b.buf)+len(in) > b.maxBody {
		if !b.oversizePass {
			// The policy would change this document and it cannot be
			// read within bounds: never pass it raw.
			return b.fail(refusal(502, refuseResponseTooLarge, "the upstream response is larger than the gateway can rewrite")), nil, end
		}
		b.rec.pass(reasonBodyTooLarge)
		if restorable && b.origEnc != "" {
			b.stop()
			return actRestore, nil, end
		}
		out := append(b.buf, in...)
		b.buf = nil
		b.kind = bodyRaw
		act, out := b.keepOr(out, chunk)
		return act, out, end
	}
	if end == endMore {
		b.buf = append(b.buf, in...)
		return actHold, nil, end
	}
	doc := in
	if len(b.buf) > 0 {
		b.buf = append(b.buf, in...)
		doc = b.buf
	}
	if end == endWhole && !json.Valid(doc) {
		// Not a whole document, so Envoy ignored the BUFFERED override.
		// (The rewriter cannot tell: it passes documents without
		// logprobs through unvalidated.)
		if b.configured == modePartial {
			// Cut at Envoy's buffer limit; the rest bypasses us.
			b.rec.pass(reasonPartialBody)
			act := actKeep
			if b.origEnc != "" {
				act = actRestore
			}
			b.stop()
			return act, nil, endCut
		}
		// Streaming: hold and continue as STREAMED.
		if len(b.buf) == 0 {
			b.buf = append(b.buf, in...)
		}
		b.mode = modeStreamed
		return actHold, nil, end
	}
	out, err := b.rw.Rewrite(b.out.borrow(), doc)
	if err != nil && !b.oversizePass && b.rw.Touches(doc) {
		// It carries what the policy changes (a logprobs or embedding
		// member) but does not parse: a lenient client might still read
		// it (NaN, -Infinity), so it is never passed raw.
		b.rec.pass(reasonInvalidJSON)
		return b.fail(refusal(502, refuseResponseUnreadable, "the upstream response is not JSON the gateway can rewrite")), nil, end
	}
	if err != nil {
		b.rec.pass(reasonInvalidJSON)
		b.buf = nil
		act, out := b.keepOr(doc, chunk)
		return act, out, end
	}
	b.out.keep(out)
	b.buf = nil
	if b.track {
		b.usage.scan(out)
	}
	if !bytes.Equal(out, doc) {
		b.rec.tally.events++
	}
	act, out := b.keepOr(out, chunk)
	return act, out, end
}

// frame runs decoded bytes through the SSE framer: complete events come
// out rewritten, an unfinished one is held (released raw when final).
func (b *respBody) frame(in []byte, final bool) []byte {
	out := b.out.keep(b.sse.Write(b.out.borrow(), in, final))
	b.sseStats()
	if b.track {
		b.usage.scan(out)
	}
	return out
}

// gzipFailed ends decoding after a gzip error (a body labelled gzip that
// is not, a truncated one, a bomb). Closed (the default): while nothing
// was released the response is refused (a 502 where Envoy still holds
// the headers, a reset after), never emptied under a 200; once bytes
// were released, what decoded cleanly goes out and the rest is dropped.
// With on_oversize: pass, a body still whole is handed back as it came,
// content-encoding restored.
func (b *respBody) gzipFailed(dec []byte, restorable bool) (chunkAction, []byte) {
	b.rec.pass(reasonGzipError)
	_, _ = b.gz.Close(nil)
	b.gz = nil
	switch {
	case b.oversizePass && restorable:
		b.stop()
		return actRestore, nil
	case b.oversizePass && !b.released:
		// Fail open, as configured: the bytes go on as they came.
		b.stop()
		return actKeep, nil
	case !b.released:
		return b.fail(refusal(502, refuseResponseEncoding, "the upstream response is labelled gzip but does not decode")), nil
	}
	// content-encoding is already gone and bytes were released: release
	// the complete events of what decoded cleanly and drop the rest (an
	// unfinished event included: it was never rewritten) rather than send
	// compressed bytes as identity. Counted (gzip_error).
	var out []byte
	switch b.kind {
	case bodySSE:
		out = b.frame(dec, false)
		b.sse.Discard()
	case bodyJSON:
		out = append(b.buf, dec...)
	default:
		out = dec
	}
	b.buf = nil
	b.kind = bodyDropping
	return actEmit, out
}

// keepOr is actKeep when out is exactly the chunk Envoy sent (and no
// content-encoding was removed), else actEmit with out.
func (b *respBody) keepOr(out, chunk []byte) (chunkAction, []byte) {
	if b.origEnc == "" && bytes.Equal(out, chunk) {
		return actKeep, nil
	}
	return actEmit, out
}

// stop gives rewriting up: the decoder is closed and a held document
// dropped. An unfinished SSE event stays in the framer, never released,
// and counts as held when the stream ends.
func (b *respBody) stop() {
	b.kind = bodyStopped
	b.buf = nil
	if b.gz != nil {
		_, _ = b.gz.Close(nil)
		b.gz = nil
	}
}

// holding is what the body keeps between messages, for the held-bytes
// bound: the collected document, the unfinished event, decoding scratch.
func (b *respBody) holding() int {
	n := cap(b.buf) + cap(b.dec)
	if b.sse != nil {
		n += b.sse.Held()
	}
	return n
}

// maxKeptScratch bounds the decoding scratch a body keeps between
// messages: one large chunk must not pin its peak for the rest of the
// stream.
const maxKeptScratch = 64 << 10

// shrink lets go of scratch beyond maxKeptScratch and of the rewriter's
// reference to the last document (after a message).
func (b *respBody) shrink() {
	if cap(b.dec) > maxKeptScratch {
		b.dec = nil
	}
	if b.rw != nil {
		b.rw.Release()
	}
}

// held is the number of body bytes held back and not yet released.
func (b *respBody) held() int {
	n := len(b.buf)
	if b.sse != nil {
		n += b.sse.Held()
	}
	return n
}

// sseStats turns the framer's running counts into metrics.
func (b *respBody) sseStats() {
	s := b.sse.Stats()
	if d := s.Rewritten - b.prev.Rewritten; d > 0 {
		b.rec.tally.events += d
	}
	if d := s.Invalid - b.prev.Invalid; d > 0 {
		b.rec.passN(reasonInvalidJSON, d)
	}
	if d := s.Oversize - b.prev.Oversize; d > 0 {
		b.rec.passN(reasonSSEEventOversize, d)
	}
	if d := s.Unreadable - b.prev.Unreadable; d > 0 {
		b.rec.passN(reasonSSEEventUnreadable, d)
	}
	b.prev = s
}
