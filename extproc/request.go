package extproc

import (
	"strconv"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/distillguard/distillguard/mutate"
	"github.com/distillguard/distillguard/scoring"
)

func (st *stream) onRequestHeaders(h *extprocv3.HttpHeaders) {
	rq := &st.rq
	rq.hdr = h.GetHeaders()
	rq.path = getHeader(rq.hdr, ":path")
	rq.encoded = parseEncoding(getHeader(rq.hdr, "content-encoding")) != encIdentity
	if h.GetEndOfStream() || st.reqMode == modeNone || st.reqMode == modeGRPC {
		// No body will be seen (none exists, body mode NONE, or gRPC frames
		// that are not OpenAI JSON): decide from the headers now.
		rq.phase.to(reqPassing)
		if rej, _ := st.decide(nil); rej != nil {
			st.emit(rej)
			return
		}
		var m mutation
		st.identityEncoding(&m)
		r := headersReply(true, &m)
		st.attachMeta(r)
		st.emit(r)
		return
	}
	switch st.reqMode {
	case modeDuplex:
		// The headers reply waits for the body (reqHoldingHeaders).
		rq.phase.to(reqHoldingHeaders)
	case modeStreamed:
		// Chunks are held until the body is complete, then replaced by the
		// (possibly rewritten) whole: the length may change and header
		// mutations on STREAMED body replies are ignored, so the length goes
		// now. Envoy removes it itself in this mode unless
		// allow_content_length_header is set.
		rq.phase.to(reqHolding)
		var m mutation
		if hasHeader(rq.hdr, "content-length") {
			m.removeHeader("content-length")
		}
		st.preIdentityEncoding(&m)
		st.emit(headersReply(true, &m))
	default:
		// BUFFERED and BUFFERED_PARTIAL: Envoy holds the headers until the
		// body reply, whose header_mutation carries every change.
		rq.phase.to(reqHolding)
		st.emit(headersReply(true, nil))
	}
}

func (st *stream) onRequestBody(b *extprocv3.HttpBody) {
	data, eos := b.GetBody(), b.GetEndOfStream()
	st.countIn(len(data))
	rq := &st.rq
	switch {
	case st.rejected:
		if !streamedMode(st.reqMode) {
			st.emit(st.passBody(true))
		}
		return
	case !rq.phase.holding():
		st.passRequestChunk(data, eos)
		return
	}
	rq.phase.to(reqHolding) // a body before any headers (request headers skipped) is held the same way
	if len(rq.buf)+len(data) > st.cfg.Processing.MaxBodyBytes {
		// Too large to parse within bounds: decide from the headers and let
		// the body through untouched.
		st.pass(reasonBodyTooLarge)
		held := rq.buf
		rq.buf = nil
		st.releaseRequest(held, data, eos)
		return
	}
	if st.reqMode == modePartial && !eos {
		// BUFFERED_PARTIAL without end_of_stream: Envoy cut the body at its
		// buffer limit and streams the rest past the processor, so the
		// JSON can be neither parsed whole nor rewritten.
		st.pass(reasonPartialBody)
		st.releaseRequest(nil, data, eos)
		return
	}
	// BUFFERED sends the whole body in one message; end_of_stream is false
	// there only when trailers follow.
	if !eos && st.reqMode != modeBuffered {
		rq.buf = append(rq.buf, data...)
		if !streamedMode(st.reqMode) {
			// Hold the chunk: it is re-injected with the whole body later.
			rb := st.nextReply()
			cr := rb.common()
			cr.BodyMutation = rb.replaceBody(nil)
			st.emit(rb.bodyReply(true, cr))
		}
		return
	}
	body, held := data, len(rq.buf) > 0
	if held {
		rq.buf = append(rq.buf, data...)
		body = rq.buf
	}
	st.finishRequest(body, held, eos)
	rq.buf = nil
}

func (st *stream) onRequestTrailers() {
	rq := &st.rq
	if !st.rejected && rq.phase.holding() {
		switch {
		case streamedMode(st.reqMode):
			// In FULL_DUPLEX_STREAMED trailers announce that "the complete
			// body has arrived" (processing_mode.proto): release it with
			// end_of_stream false, then answer the trailers.
			body := rq.buf
			rq.buf = nil
			st.finishRequest(body, len(body) > 0, false)
			if st.rejected {
				return
			}
		case len(rq.buf) > 0:
			// A trailers reply cannot carry body bytes: what was held is
			// lost to the upstream. Only a non-duplex mode with trailers
			// gets here (HTTP/2 request trailers with request_trailer_mode
			// SEND); count it loudly.
			st.pass(reasonHeldAtTrailers)
			st.srv.log.Warn("request trailers arrived while body bytes were held", "stream", st.id, "held", len(rq.buf))
			rq.phase.to(reqPassing)
			body := rq.buf
			rq.buf = nil
			if rej, _ := st.decide(body); rej != nil {
				st.emit(rej)
				return
			}
		default:
			rq.phase.to(reqPassing)
			if rej, _ := st.decide(nil); rej != nil {
				st.emit(rej)
				return
			}
		}
	}
	r := trailersReply(true)
	st.attachMeta(r)
	st.emit(r)
}

// passRequestChunk answers a request chunk the server no longer looks at.
func (st *stream) passRequestChunk(data []byte, eos bool) {
	if streamedMode(st.reqMode) {
		st.emitStreamed(true, data, eos, true)
		return
	}
	st.countOut(len(data))
	r := st.passBody(true)
	st.attachMeta(r)
	st.emit(r)
}

// settle ends the request's holding phase: the decision no longer depends
// on the body. It reports whether the headers reply was held with the body
// (reqHoldingHeaders), in which case it must now precede the body.
func (st *stream) settle() (headersHeld bool) {
	headersHeld = st.rq.phase == reqHoldingHeaders
	st.rq.phase.to(reqPassing)
	return headersHeld
}

// releaseRequest decides without the body (too large, or cut) and lets the
// held bytes and the current chunk through unchanged.
func (st *stream) releaseRequest(held, data []byte, eos bool) {
	headersHeld := st.settle()
	if rej, _ := st.decide(nil); rej != nil {
		st.emit(rej)
		return
	}
	var m mutation
	st.identityEncoding(&m)
	if streamedMode(st.reqMode) {
		if headersHeld {
			st.emit(headersReply(true, &m))
		}
		st.emitStreamed(true, append(held, data...), eos, true)
		return
	}
	rb := st.nextReply()
	cr := rb.common()
	if len(held) > 0 {
		cr.BodyMutation = rb.replaceBody(append(held, data...))
	}
	st.countOut(len(held) + len(data))
	if headerMutationsApply(st.reqMode) {
		cr.HeaderMutation = m.proto()
	}
	r := rb.bodyReply(true, cr)
	st.attachMeta(r)
	st.emit(r)
}

// finishRequest decides on the complete body and releases it, rewritten.
// held says earlier chunks were held back (and cleared) so the reply must
// carry the whole body.
func (st *stream) finishRequest(body []byte, held, eos bool) {
	headersHeld := st.settle()
	rej, parsed := st.decide(body)
	if rej != nil {
		st.emit(rej)
		return
	}
	out, changed := body, false
	if parsed && !st.action.Request.IsNoop() {
		nb, ch, err := mutate.RewriteRequest(nil, body, st.action.Request)
		if err != nil {
			st.pass(reasonBadRequestJSON)
		} else if ch {
			out, changed = nb, true
		}
	}
	var m mutation
	st.identityEncoding(&m)
	if streamedMode(st.reqMode) {
		if changed && hasHeader(st.rq.hdr, "content-length") {
			// Removed first, then set: Envoy skips content-length in
			// set_headers when it strips the header for streamed bodies,
			// and applies it when allow_content_length_header keeps it.
			m.removeHeader("content-length")
			m.setHeader("content-length", strconv.Itoa(len(out)))
		}
		if headersHeld {
			st.emit(headersReply(true, &m))
		}
		st.emitStreamed(true, out, eos, true)
		return
	}
	rb := st.nextReply()
	cr := rb.common()
	if changed || held {
		cr.BodyMutation = rb.replaceBody(out)
	}
	st.countOut(len(out))
	if headerMutationsApply(st.reqMode) {
		// A replaced BUFFERED body needs a matching content-length in the
		// same reply, or Envoy rejects the mutation (ProcessingMode
		// BodySendMode: "it is the external processor's responsibility to
		// set the content length correctly").
		if changed && hasHeader(st.rq.hdr, "content-length") {
			m.setHeader("content-length", strconv.Itoa(len(out)))
		}
		cr.HeaderMutation = m.proto()
	}
	r := rb.bodyReply(true, cr)
	st.attachMeta(r)
	st.emit(r)
}

// identityEncoding removes accept-encoding when the response will be
// rewritten, so the upstream answers uncompressed; Envoy's compressor
// re-compresses for the client.
func (st *stream) identityEncoding(m *mutation) {
	if !st.cfg.Processing.IdentityEncoding || !st.decided || st.action.Output.IsNoop() || st.action.Reject != nil {
		return
	}
	if hasHeader(st.rq.hdr, "accept-encoding") {
		m.removeHeader("accept-encoding")
	}
}

// preIdentityEncoding is identityEncoding before the decision (STREAMED
// request headers): the model is unknown, so the route is resolved without
// it, and any rewriting tier counts. Gzip decoding on the response covers
// what this misses.
func (st *stream) preIdentityEncoding(m *mutation) {
	if !st.cfg.Processing.IdentityEncoding || !hasHeader(st.rq.hdr, "accept-encoding") {
		return
	}
	for v := scoring.Allow; v <= scoring.Block; v++ {
		a := st.cfg.Resolve(st.rq.path, "", v)
		if a.Reject == nil && !a.Output.IsNoop() {
			m.removeHeader("accept-encoding")
			return
		}
	}
}
