package extproc

import (
	"bytes"
	"encoding/json"
	"strconv"

	procv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/distillguard/distillguard/mutate"
	"github.com/distillguard/distillguard/scoring"
)

type respKind uint8

const (
	respPass respKind = iota // untouched
	respSSE                  // text/event-stream, framed and rewritten per event
	respJSON                 // one JSON document, buffered and rewritten whole
	respRaw                  // given up on rewriting; only decoding continues
)

type respState struct {
	kind respKind
	// mode is the body mode the body is expected in, after any override.
	mode bodyMode
	// hadLength: the upstream sent content-length (removed on the headers
	// reply, restored on a whole BUFFERED body).
	hadLength bool

	gz      *mutate.Gunzip
	origEnc string
	// dead: gzip failed after decoded bytes were released; the remaining
	// input cannot be passed (content-encoding is gone) and is dropped.
	dead bool

	rw   *mutate.Rewriter
	sse  *mutate.SSEStream
	prev mutate.StreamStats
	buf  []byte // JSON held until complete

	decBuf []byte // scratch: decoded gzip output
	// outBuf is the scratch the rewritten output is appended to. It is
	// borrowed from the server's pool for one message (see outScratch and
	// sent), so an idle stream between two tokens holds none.
	outBuf []byte
	outPtr *[]byte // the pool's box for outBuf, reused to give it back

	// emitted: body bytes were already released, so the original can no
	// longer be restored.
	emitted bool
	// cut: the body turned out to be cut at Envoy's buffer limit.
	cut bool
}

func (st *stream) onResponseHeaders(h *extprocv3.HttpHeaders) {
	rs := &st.rs
	hdr := h.GetHeaders()
	if st.done {
		st.emit(headersReply(false, nil))
		return
	}
	if !st.decided {
		// The response started before the request was decided (request
		// headers skipped, or an upstream answering early). Rewrite with the
		// route's allow tier rather than not at all.
		st.pass(reasonNoDecision)
		st.decided = true
		st.action = st.cfg.Resolve(st.rq.path, "", scoring.Allow)
	}
	if h.GetEndOfStream() || st.observe {
		st.emit(headersReply(false, nil))
		return
	}
	out := st.action.Output
	if out.IsNoop() {
		st.emit(headersReply(false, nil))
		return
	}
	if status := parseStatus(getHeader(hdr, ":status")); status < 200 || status > 299 {
		st.pass(reasonNon2xx)
		st.emit(headersReply(false, nil))
		return
	}
	mt := mediaType(getHeader(hdr, "content-type"))
	ce := getHeader(hdr, "content-encoding")
	enc := parseEncoding(ce)
	kind := respPass
	switch {
	case isSSE(mt):
		kind = respSSE
	case isJSON(mt):
		kind = respJSON
	default:
		st.pass(reasonUnknownContentType)
	}
	if kind != respPass && enc == encUnknown {
		st.pass(reasonUnknownEncoding)
		kind = respPass
	}
	if kind == respJSON && enc == encIdentity {
		// A JSON body announced larger than the bound would be passed
		// through anyway: do not ask Envoy to buffer it.
		if n, err := strconv.ParseInt(getHeader(hdr, "content-length"), 10, 64); err == nil && n > int64(st.cfg.Processing.MaxBodyBytes) {
			st.pass(reasonBodyTooLarge)
			kind = respPass
		}
	}
	mode := st.respMode
	var override *procv3.ProcessingMode
	if kind != respPass && st.cfg.Processing.ModeOverride &&
		// allow_mode_override "is not supported if the body send mode is
		// FULL_DUPLEX_STREAMED"; Envoy ignores overrides when either
		// direction is configured that way.
		!streamedMode(st.reqMode) && !streamedMode(st.respMode) &&
		// From NONE, an override Envoy ignores would leave no body
		// messages while content-encoding is already removed.
		!(enc == encGzip && mode == modeNone) {
		want := modeStreamed
		if kind == respJSON {
			want = modeBuffered
		}
		if want != mode {
			override = st.overrideMode(want)
			mode = want
		}
	}
	if kind == respPass || mode == modeNone || mode == modeGRPC {
		st.emit(headersReply(false, nil))
		return
	}
	rs.kind, rs.mode = kind, mode
	var m mutation
	if hasHeader(hdr, "content-length") {
		rs.hadLength = true
		m.removeHeader("content-length")
	}
	if enc == encGzip {
		rs.origEnc = ce
		m.removeHeader("content-encoding")
		rs.gz = mutate.NewGunzip(st.cfg.Processing.MaxDecompressedBytes)
	}
	rs.rw = mutate.NewRewriter(out, st.seed)
	if kind == respSSE {
		rs.sse = mutate.NewSSEStream(rs.rw, st.cfg.Processing.MaxHeldBytes)
	}
	r := headersReply(false, &m)
	r.ModeOverride = override
	st.emit(r)
}

func (st *stream) onResponseBody(b *extprocv3.HttpBody) {
	data, eos := b.GetBody(), b.GetEndOfStream()
	st.countIn(len(data))
	rs := &st.rs
	if st.done {
		if !streamedMode(st.respMode) {
			st.emit(st.passBody(false))
		}
		return
	}
	if rs.kind == respPass || st.observe {
		if streamedMode(st.respMode) {
			st.emitStreamed(false, data, eos, false)
			return
		}
		st.countOut(len(data))
		st.emit(st.passBody(false))
		return
	}
	if streamedMode(rs.mode) {
		out, fr := st.feed(data, eos, false, false)
		if fr == fedKeep {
			out = data
		}
		st.emitStreamed(false, out, eos, false)
		return
	}
	mode := rs.mode
	// BUFFERED delivers the whole body at once; end_of_stream is false there
	// only when trailers follow, or when Envoy ignored our override and is
	// really streaming (ambiguous, resolved by whether the JSON is whole).
	// BUFFERED_PARTIAL without end_of_stream was cut at Envoy's buffer limit
	// and the rest will bypass the processor.
	final := eos || mode == modeBuffered
	ambiguous := mode == modeBuffered && !eos
	cut := mode == modePartial && !eos
	restorable := headerMutationsApply(mode) && !rs.emitted
	var out []byte
	var fr feedResult
	if cut && (rs.kind == respJSON || rs.gz != nil) {
		// A cut JSON document cannot be rewritten, and a cut gzip stream
		// continues compressed past the processor: leave both as sent.
		st.pass(reasonPartialBody)
		fr = fedKeep
		if rs.gz != nil && restorable {
			fr = fedRestore
		}
		st.giveUp()
	} else {
		out, fr = st.feed(data, final || cut, restorable, ambiguous)
	}
	rb := st.nextReply()
	cr := rb.common()
	var m mutation
	sent := out
	switch fr {
	case fedRestore:
		// Header mutations on this reply take effect (BUFFERED, or
		// BUFFERED_PARTIAL while Envoy holds the headers): put the encoding
		// back and pass the original bytes.
		sent = data
		m.setHeader("content-encoding", rs.origEnc)
	case fedKeep:
		sent = data
	case fedHold:
		sent = nil
		cr.BodyMutation = rb.replaceBody(nil)
	default:
		cr.BodyMutation = rb.replaceBody(out)
	}
	if fr != fedHold && final && !cut && !rs.cut && !rs.emitted && rs.hadLength {
		// This reply carries the entire body: a replaced BUFFERED body needs
		// a matching content-length (Envoy rejects a mismatch), and it
		// restores the header removed on the headers reply.
		m.setHeader("content-length", strconv.Itoa(len(sent)))
	}
	if headerMutationsApply(rs.mode) {
		cr.HeaderMutation = m.proto()
	}
	if len(sent) > 0 {
		rs.emitted = true
	}
	st.countOut(len(sent))
	st.emit(rb.bodyReply(false, cr))
}

func (st *stream) onResponseTrailers() {
	rs := &st.rs
	if !st.done && !st.observe && rs.kind != respPass {
		if streamedMode(rs.mode) {
			// Trailers end a FULL_DUPLEX_STREAMED body: flush what is held
			// (end_of_stream false: the trailers reply follows).
			out, _ := st.feed(nil, true, false, false)
			st.emitStreamed(false, out, false, false)
		} else if len(rs.buf) > 0 || (rs.sse != nil && rs.sse.Held() > 0) {
			st.pass(reasonHeldAtTrailers)
			st.srv.log.Warn("response trailers arrived while body bytes were held", "stream", st.id)
		}
		st.giveUp()
	}
	st.emit(trailersReply(false))
}

// giveUp stops rewriting and releases the decoder.
func (st *stream) giveUp() {
	rs := &st.rs
	rs.kind = respPass
	rs.buf = nil
	if rs.gz != nil {
		_, _ = rs.gz.Close(nil)
		rs.gz = nil
	}
}

type feedResult uint8

const (
	fedEmit    feedResult = iota // release the returned bytes in place of the chunk
	fedKeep                      // the chunk goes on unchanged
	fedRestore                   // gzip failed on a still-whole body: pass the original, restore content-encoding
	fedHold                      // nothing to release yet
)

// feed runs one chunk through decoding and rewriting. final flushes what
// is held; restorable says nothing was released yet and header mutations
// apply, so a gzip failure can still hand back the original; ambiguous says
// a BUFFERED message without end_of_stream may really be a STREAMED chunk.
func (st *stream) feed(data []byte, final, restorable, ambiguous bool) ([]byte, feedResult) {
	rs := &st.rs
	if rs.dead {
		return nil, fedHold
	}
	in := data
	if rs.gz != nil {
		dec, err := rs.gz.Write(rs.decBuf[:0], data)
		closed := false
		if err == nil && final && !ambiguous {
			dec, err = rs.gz.Close(dec)
			closed = true
		}
		if err != nil {
			st.pass(reasonGzipError)
			_, _ = rs.gz.Close(nil)
			rs.gz = nil
			if restorable {
				rs.kind = respPass
				rs.buf = nil
				return data, fedRestore
			}
			// content-encoding is already gone and bytes were released:
			// release what decoded cleanly and drop the rest rather than
			// send compressed bytes as identity.
			out := st.drain(dec)
			rs.dead = true
			return out, fedEmit
		}
		rs.decBuf = dec[:0]
		in = dec
		if closed {
			rs.gz = nil
		}
	}
	switch rs.kind {
	case respSSE:
		out := rs.sse.Write(st.outScratch(), in, final)
		rs.outBuf = out[:0]
		st.sseStats()
		return out, st.keepOr(out, data)
	case respJSON:
		if len(rs.buf)+len(in) > st.cfg.Processing.MaxBodyBytes {
			st.pass(reasonBodyTooLarge)
			if restorable && rs.origEnc != "" {
				st.giveUp()
				return data, fedRestore
			}
			out := append(rs.buf, in...)
			rs.buf = nil
			rs.kind = respRaw
			return out, st.keepOr(out, data)
		}
		if !final {
			rs.buf = append(rs.buf, in...)
			return nil, fedHold
		}
		doc := in
		if len(rs.buf) > 0 {
			rs.buf = append(rs.buf, in...)
			doc = rs.buf
		}
		if ambiguous && !json.Valid(doc) {
			// Not a whole document, so Envoy ignored the BUFFERED override.
			// (The rewriter cannot tell: it passes documents without
			// logprobs through unvalidated.)
			if st.respMode == modePartial {
				// Cut at Envoy's buffer limit; the rest bypasses us.
				st.pass(reasonPartialBody)
				rs.cut = true
				encoded := rs.origEnc != ""
				st.giveUp()
				if encoded {
					return data, fedRestore
				}
				return data, fedKeep
			}
			// Streaming: hold and continue as STREAMED.
			if len(rs.buf) == 0 {
				rs.buf = append(rs.buf, in...)
			}
			rs.mode = modeStreamed
			return nil, fedHold
		}
		out, err := rs.rw.Rewrite(st.outScratch(), doc)
		if err != nil {
			st.pass(reasonInvalidJSON)
			rs.buf = nil
			return doc, st.keepOr(doc, data)
		}
		rs.outBuf = out[:0]
		rs.buf = nil
		if !bytes.Equal(out, doc) {
			st.tally.events++
		}
		return out, st.keepOr(out, data)
	default: // respRaw
		return in, st.keepOr(in, data)
	}
}

// keepOr reports fedKeep when out is exactly the chunk Envoy sent.
func (st *stream) keepOr(out, data []byte) feedResult {
	if st.rs.origEnc == "" && bytes.Equal(out, data) {
		return fedKeep
	}
	return fedEmit
}

// drain releases what is decoded and held after a gzip failure.
func (st *stream) drain(dec []byte) []byte {
	rs := &st.rs
	var out []byte
	switch rs.kind {
	case respSSE:
		out = rs.sse.Write(st.outScratch(), dec, true)
		rs.outBuf = out[:0]
		st.sseStats()
	case respJSON:
		out = append(rs.buf, dec...)
	default:
		out = dec
	}
	rs.buf = nil
	return out
}

// sseStats turns the framer's running counts into metrics.
func (st *stream) sseStats() {
	rs := &st.rs
	s := rs.sse.Stats()
	if d := s.Rewritten - rs.prev.Rewritten; d > 0 {
		st.tally.events += d
	}
	if d := s.Invalid - rs.prev.Invalid; d > 0 {
		st.srv.m.passthrough.Add(st.mctx, d, st.srv.m.reasonOpt[reasonInvalidJSON])
	}
	if s.FailedOpen && !rs.prev.FailedOpen {
		st.pass(reasonHeldOverflow)
	}
	rs.prev = s
}
