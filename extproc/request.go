package extproc

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"strconv"
	"strings"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/distillguard/distillguard/mutate"
	"github.com/distillguard/distillguard/scoring"
)

func (st *stream) onRequestHeaders(h *extprocv3.HttpHeaders) {
	rq := &st.rq
	rq.hdr = h.GetHeaders()
	rq.path = normalizePath(getHeader(rq.hdr, ":path"))
	rq.view = st.cfg.View(rq.path)
	rq.format = formatOf(st.cfg, getHeader(rq.hdr, ":method"), rq.path)
	if st.observe {
		// Envoy acts on no reply in observability mode: nothing is
		// enforced, and bodies are read for scoring only.
		rq.view.Guarded = false
	}
	hasBody := !h.GetEndOfStream() && st.reqMode != modeNone && st.reqMode != modeGRPC
	rq.enc = parseEncoding(getHeader(rq.hdr, "content-encoding"))
	if n := headerCount(rq.hdr, "content-encoding"); n > 1 {
		rq.enc = encUnknown
	}
	if rq.view.Guarded {
		e := st.checkRequestHeaders(!h.GetEndOfStream())
		if e == nil && !h.GetEndOfStream() && !hasBody {
			// Body mode NONE (or GRPC) on a route that needs the body: it
			// would reach the upstream unread.
			e = refusal(500, refuseBodyNotSent, "the gateway is configured not to inspect request bodies on a route that requires it")
		}
		if e != nil {
			rq.phase.to(reqPassing)
			st.emit(st.refuse(e))
			return
		}
	}
	if !hasBody {
		// No body will be seen (none exists, body mode NONE, or gRPC frames
		// that are not OpenAI JSON): decide from the headers now.
		rq.phase.to(reqPassing)
		if rej := st.decide(nil, nil); rej != nil {
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
		// now, and so does a gzip content-encoding the body will be
		// forwarded without. Envoy removes content-length itself in this
		// mode unless allow_content_length_header is set.
		rq.phase.to(reqHolding)
		var m mutation
		if hasHeader(rq.hdr, "content-length") {
			m.removeHeader("content-length")
		}
		if st.decodesRequest() {
			m.removeHeader("content-encoding")
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

// decodesRequest reports whether a gzip request body is decoded and
// forwarded as identity: on guarded routes, where it must be read.
func (st *stream) decodesRequest() bool { return st.rq.view.Guarded && st.rq.enc == encGzip }

// checkRequestHeaders refuses, on a guarded route, what makes the request
// ambiguous before its body is read: a credential header sent twice (the
// first is what distillguard would score, while upstreams differ on which
// one they bill), and, when a body follows, no credential and no client
// address at all (nothing to attribute the prompt to), or a content-type or
// content-encoding the body could not be read under (a lenient upstream
// ignores both and parses the bytes as JSON, so a body distillguard would
// skip as "encoded" or "not JSON" would still be acted on).
func (st *stream) checkRequestHeaders(hasBody bool) *mutate.RequestError {
	rq := &st.rq
	for _, name := range st.credentialHeaders() {
		if headerCount(rq.hdr, name) > 1 {
			return refusal(400, refuseDuplicateCredential, "the "+name+" header is sent more than once")
		}
	}
	if !hasBody {
		// Nothing a body-less request says reaches a model: it is scored
		// (anonymous ones in one session, counted no_identity) and passed.
		return nil
	}
	if st.cfg.Scoring.Enabled && !scoring.Attributable(&st.cfg.Scoring, st.identitySources(), st.scoringRequest()) {
		return refusal(401, refuseUnattributable, "the request has no credential and no client address to attribute it to")
	}
	if headerCount(rq.hdr, "content-type") > 1 {
		return refusal(415, mutate.RefuseMediaType, "the content-type header is sent more than once")
	}
	if ct := getHeader(rq.hdr, "content-type"); ct != "" {
		if mt := mediaType(ct); !isJSON(mt) {
			return refusal(415, mutate.RefuseMediaType, "content-type "+strconv.Quote(mt)+" is not accepted; send application/json")
		}
		if !charsetOK(ct) {
			return refusal(415, mutate.RefuseMediaType, "content-type "+strconv.Quote(ct)+": only the UTF-8 charset is accepted")
		}
	}
	if rq.enc == encUnknown {
		ce := strings.Join(headerValues(rq.hdr, "content-encoding"), ", ")
		return refusal(415, mutate.RefuseContentEnc, "content-encoding "+strconv.Quote(ce)+" is not accepted; send identity or gzip")
	}
	return nil
}

// credentialHeaders are the header names identity may be read from on
// this request: the configured sources and the route's.
func (st *stream) credentialHeaders() []string {
	out := make([]string, 0, 4)
	add := func(srcs []string) {
		for _, s := range srcs {
			name := "authorization"
			if h, ok := strings.CutPrefix(s, "header:"); ok {
				name = strings.ToLower(strings.TrimSpace(h))
			} else if s != "authorization" {
				continue
			}
			if !containsString(out, name) {
				out = append(out, name)
			}
		}
	}
	add(st.cfg.Scoring.Identity)
	add(st.rq.view.Identity)
	return out
}

func containsString(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
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
	if rq.phase == reqStart {
		// A body before any headers (request_header_mode SKIP): the path
		// is unknown, so the view is the one of a path no route names
		// (the default set's), and the body is held the same way.
		rq.view = st.cfg.View("")
		if st.observe {
			rq.view.Guarded = false
		}
	}
	rq.phase.to(reqHolding)
	if len(rq.buf)+len(data) > st.cfg.Processing.MaxBodyBytes {
		if rq.view.Guarded && !rq.view.OversizePass {
			st.emit(st.refuse(refusal(413, mutate.RefuseTooLarge,
				"request body: larger than "+strconv.Itoa(st.cfg.Processing.MaxBodyBytes)+" bytes")))
			return
		}
		// Too large to parse within bounds, on a route that lets it
		// through: decide from the headers and pass the body untouched.
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
		if rq.view.Guarded && !rq.view.OversizePass {
			st.emit(st.refuse(refusal(413, mutate.RefuseTooLarge, "request body: larger than the gateway's buffer limit")))
			return
		}
		st.pass(reasonPartialBody)
		st.releaseRequest(nil, data, eos)
		return
	}
	// The body (or what is held of it) and what reading it costs (the
	// rewritten copy) must fit the server-wide bound.
	if !st.mem.ensure(2*(len(rq.buf)+len(data)), st.cfg.Processing.MaxHeldTotalBytes) {
		st.pass(reasonOverBudget)
		st.emit(st.refuse(refusal(503, refuseOverloaded, "the gateway is holding too many request bodies; retry shortly")))
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
			// SEND); count it loudly. The body is still read for the
			// decision (and refused when it is not understood).
			st.pass(reasonHeldAtTrailers)
			st.warn("held_at_trailers", "request trailers arrived while body bytes were held", "held", len(rq.buf))
			rq.phase.to(reqPassing)
			body := rq.buf
			rq.buf = nil
			b, _, e := st.readRequestBody(body)
			if e != nil {
				st.emit(st.refuse(e))
				return
			}
			if rej := st.decide(b, body); rej != nil {
				st.emit(rej)
				return
			}
		default:
			rq.phase.to(reqPassing)
			if rej := st.decide(nil, nil); rej != nil {
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

// releaseRequest decides without the body (too large, or cut, on a route
// that lets such bodies pass) and lets the held bytes and the current
// chunk through unchanged.
func (st *stream) releaseRequest(held, data []byte, eos bool) {
	headersHeld := st.settle()
	if rej := st.decide(nil, nil); rej != nil {
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

// readRequestBody reads a complete request body. On a guarded route it is
// decoded when gzip-encoded and read strictly: the error is the refusal.
// Elsewhere it is read when it can be, for scoring, and passed as it is
// otherwise (counted). fwd is what goes upstream unless rewritten: body,
// or its decoded form.
func (st *stream) readRequestBody(body []byte) (b *mutate.Body, fwd []byte, e *mutate.RequestError) {
	if len(body) == 0 {
		return nil, body, nil
	}
	rq := &st.rq
	p := &st.cfg.Processing
	opts := mutate.ReadOptions{Format: rq.format, MaxPrompt: p.MaxPromptBytes, MaxBiasEntries: p.MaxLogitBiasEntries}
	if !rq.view.Guarded {
		if rq.enc != encIdentity {
			st.pass(reasonRequestEncoded)
			return nil, body, nil
		}
		b, err := mutate.ReadRequest(body, opts)
		if err != nil {
			st.pass(reasonBadRequestJSON)
			return nil, body, nil
		}
		return b, body, nil
	}
	fwd = body
	if rq.enc == encGzip {
		dec, err := st.gunzipRequest(body)
		if err != nil {
			return nil, nil, err
		}
		fwd = dec
	}
	b, err := mutate.ReadRequest(fwd, opts)
	if err != nil {
		var re *mutate.RequestError
		if errors.As(err, &re) {
			return nil, nil, re
		}
		return nil, nil, refusal(400, mutate.RefuseSyntax, "request body: "+err.Error())
	}
	return b, fwd, nil
}

// gunzipRequest decodes a gzip request body (RFC 1952; concatenated
// members are one body) within max_body_bytes.
func (st *stream) gunzipRequest(body []byte) ([]byte, *mutate.RequestError) {
	limit := st.cfg.Processing.MaxBodyBytes
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		return nil, refusal(400, mutate.RefuseContentEnc, "request body: labelled gzip but does not decode ("+err.Error()+")")
	}
	var out bytes.Buffer
	n, err := io.Copy(&out, io.LimitReader(zr, int64(limit)+1))
	switch {
	case n > int64(limit):
		return nil, refusal(413, mutate.RefuseTooLarge, "request body: decodes to more than "+strconv.Itoa(limit)+" bytes")
	case err != nil:
		return nil, refusal(400, mutate.RefuseContentEnc, "request body: labelled gzip but does not decode ("+err.Error()+")")
	}
	if !st.mem.ensure(len(body)+2*out.Len(), st.cfg.Processing.MaxHeldTotalBytes) {
		st.pass(reasonOverBudget)
		return nil, refusal(503, refuseOverloaded, "the gateway is holding too many request bodies; retry shortly")
	}
	return out.Bytes(), nil
}

// finishRequest decides on the complete body and releases it, rewritten.
// held says earlier chunks were held back (and cleared) so the reply must
// carry the whole body.
func (st *stream) finishRequest(body []byte, held, eos bool) {
	headersHeld := st.settle()
	b, fwd, e := st.readRequestBody(body)
	if e != nil {
		st.emit(st.refuse(e))
		return
	}
	if rej := st.decide(b, fwd); rej != nil {
		st.emit(rej)
		return
	}
	decoded := len(fwd) != len(body) || (len(fwd) > 0 && &fwd[0] != &body[0])
	st.rq.quiet = b != nil && (!b.Asks() || st.action.Request.StripLogprobs)
	out, changed := fwd, decoded
	if b != nil && !st.action.Request.IsNoop() {
		if nb, ch := b.Rewrite(nil, st.action.Request); ch {
			out, changed = nb, true
		}
	}
	var m mutation
	st.identityEncoding(&m)
	if decoded {
		m.removeHeader("content-encoding")
	}
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
// request headers): the model is unknown, so any tier of any route the
// path may resolve to that rewrites responses counts. Gzip decoding on the
// response covers what this misses.
func (st *stream) preIdentityEncoding(m *mutation) {
	if !st.cfg.Processing.IdentityEncoding || !hasHeader(st.rq.hdr, "accept-encoding") {
		return
	}
	if st.rq.view.Rewrites {
		m.removeHeader("accept-encoding")
	}
}
