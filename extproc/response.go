package extproc

import (
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	procv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/distillguard/distillguard/mutate"
	"github.com/distillguard/distillguard/scoring"
)

type respKind uint8

const (
	respPass   respKind = iota // left untouched
	respSSE                    // text/event-stream, framed and rewritten per event
	respNDJSON                 // application/x-ndjson (Ollama), framed and rewritten per line
	respJSON                   // one JSON document, buffered and rewritten whole
	respRefuse                 // refused at the headers (announced too large to rewrite)
)

func (st *stream) onResponseHeaders(h *extprocv3.HttpHeaders) {
	hdr := h.GetHeaders()
	kind, mode, override := st.responsePlan(hdr, h.GetEndOfStream())
	if kind == respRefuse {
		// Envoy still holds the response headers: the local reply replaces
		// the response.
		st.rs.phase.to(respPassing)
		st.emit(st.refuse(st.rs.refusal))
		return
	}
	if kind == respPass {
		st.rs.phase.to(respPassing)
		r := headersReply(false, nil)
		if !h.GetEndOfStream() && !st.rejected {
			r.ModeOverride = st.skipBody()
		}
		st.emit(r)
		return
	}
	r := headersReply(false, st.startBody(hdr, kind, mode))
	r.ModeOverride = override
	st.emit(r)
}

// responsePlan decides from the response headers whether the body is
// rewritten, and in which body mode it will arrive (with the mode_override
// that asks for it, if any).
func (st *stream) responsePlan(hdr *corev3.HeaderMap, eos bool) (respKind, bodyMode, *procv3.ProcessingMode) {
	if st.rejected {
		return respPass, 0, nil
	}
	if !st.decided {
		// The response started before the request was decided (request
		// headers skipped, or an upstream answering early). Rewrite with the
		// route's allow tier rather than not at all.
		st.pass(reasonNoDecision)
		st.decided = true
		st.action = st.cfg.Resolve(st.rq.path, "", scoring.Allow)
	}
	if eos || st.observe || st.unchangeable() {
		return respPass, 0, nil
	}
	if status := parseStatus(getHeader(hdr, ":status")); status < 200 || status > 299 {
		st.pass(reasonNon2xx)
		return respPass, 0, nil
	}
	mt := mediaType(getHeader(hdr, "content-type"))
	enc := parseEncoding(getHeader(hdr, "content-encoding"))
	kind := respPass
	switch {
	case isSSE(mt):
		kind = respSSE
	case isNDJSON(mt):
		kind = respNDJSON
	case isJSON(mt):
		kind = respJSON
	default:
		st.pass(reasonUnknownContentType)
	}
	if kind != respPass && (enc == encUnknown || headerCount(hdr, "content-encoding") > 1) {
		if !st.action.OversizePass {
			// A body the policy would change, in an encoding it cannot be
			// read in (br, zstd, a list): never pass it raw.
			st.rs.refusal = refusal(502, refuseResponseEncoding, "the upstream response has a content-encoding the gateway cannot rewrite")
			return respRefuse, 0, nil
		}
		st.pass(reasonUnknownEncoding)
		kind = respPass
	}
	if kind == respJSON && enc == encIdentity {
		// A JSON body announced larger than the bound would be passed
		// through anyway: do not ask Envoy to buffer it.
		if n, err := strconv.ParseInt(getHeader(hdr, "content-length"), 10, 64); err == nil && n > int64(st.cfg.Processing.MaxBodyBytes) {
			if !st.action.OversizePass {
				// The policy would change this document, and it cannot
				// be read within bounds: refuse it now, while the status
				// can still say so.
				st.rs.refusal = refusal(502, refuseResponseTooLarge, "the upstream response is larger than the gateway can rewrite")
				return respRefuse, 0, nil
			}
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
	if kind != respPass && (mode == modeNone || mode == modeGRPC) && !st.action.OversizePass {
		// The body would reach the client without passing here (response
		// body mode NONE and no override): refuse rather than pass it raw.
		st.rs.refusal = refusal(502, refuseBodyNotSent, "the gateway is configured not to inspect responses on a route that rewrites them")
		return respRefuse, 0, nil
	}
	if kind == respPass || mode == modeNone || mode == modeGRPC {
		return respPass, 0, nil
	}
	return kind, mode, override
}

// unchangeable reports whether the resolved policy cannot change this
// response, so its body need not be seen: the output policy is a no-op, or
// the forwarded request asks for no logprobs and the format sends none
// unasked. Gemini sends avgLogprobs with every candidate and TGI's
// streamed tokens carry their logprob whatever details says
// (mutate.RequestFields notes), so their bodies are always read while
// the policy acts on logprobs; embeddings are rounded whatever the request
// says. The text watermark changes the text of every response whose
// format it marks (mutate.Format.TextEnds), logprobs asked for or not.
func (st *stream) unchangeable() bool {
	p := st.action.Output
	if p.IsNoop() {
		return true
	}
	if p.Watermark && st.cfg.Marks() != nil && st.rq.format.TextEnds() {
		return false
	}
	if !st.rq.quiet {
		return false
	}
	switch st.rq.format {
	case mutate.FormatOpenAIChat, mutate.FormatOpenAICompletions, mutate.FormatOpenAIResponses,
		mutate.FormatLlamaCpp, mutate.FormatOllama, mutate.FormatAnthropic:
		return true
	case mutate.FormatOpenAI, mutate.FormatOpenAIEmbeddings:
		return p.EmbeddingDecimals < 0
	}
	return false
}

// skipBody is the mode_override that stops Envoy sending a response body
// nothing here will read (a response passed at its headers), so a stream
// costs no message per token: ProcessingResponse.mode_override, honoured
// only with allow_mode_override on the filter and only on a headers reply
// ("If set in a response to body or trailer requests, it will be ignored
// by the data plane"), never with FULL_DUPLEX_STREAMED (ExternalProcessor.
// allow_mode_override). Should Envoy ignore it, the body comes and is
// passed message by message, as without it.
func (st *stream) skipBody() *procv3.ProcessingMode {
	if !st.cfg.Processing.ModeOverride || streamedMode(st.reqMode) || streamedMode(st.respMode) ||
		st.respMode == modeNone {
		return nil
	}
	return st.overrideMode(modeNone)
}

// startBody sets the response body up for rewriting (respRewriting) and
// returns the headers reply's mutation: the length and encoding the
// rewritten body no longer has go.
func (st *stream) startBody(hdr *corev3.HeaderMap, kind respKind, mode bodyMode) *mutation {
	rs := &st.rs
	rs.phase.to(respRewriting)
	p := &st.cfg.Processing
	b := &rs.body
	*b = respBody{kind: bodyJSON, mode: mode, configured: st.respMode, maxBody: p.MaxBodyBytes, out: &st.scratch, rec: &st.recorder,
		oversizePass: st.action.OversizePass, mem: &st.mem, memLimit: p.MaxHeldTotalBytes}
	if kind == respSSE || kind == respNDJSON {
		b.kind = bodySSE
	}
	var m mutation
	if hasHeader(hdr, "content-length") {
		rs.hadLength = true
		m.removeHeader("content-length")
	}
	if ce := getHeader(hdr, "content-encoding"); parseEncoding(ce) == encGzip {
		b.origEnc = ce
		m.removeHeader("content-encoding")
		b.gz = mutate.NewGunzip(p.MaxDecompressedBytes)
		// What one message decodes to is what its reply carries: bounded
		// per chunk for a stream, by the document bound for a document.
		if b.kind == bodySSE {
			b.gz.LimitChunk(p.MaxDecodedChunkBytes)
		} else {
			b.gz.LimitChunk(p.MaxBodyBytes + 1)
		}
	}
	// The walk is the request's format's; the framing is what the
	// content-type says the body is (Ollama answers stream: false with one
	// application/json document, Gemini's streamGenerateContent without
	// alt=sse with one JSON array).
	b.rw = mutate.NewRewriterFor(st.rq.format, st.action.Output, st.seed)
	b.rw.SetScratchPool(&st.srv.rwScratch)
	st.watermark(b.rw)
	if _, ok := st.srv.scorer.(scoring.ResponseObserver); ok && st.session != "" {
		b.track = true
		b.usage.reset(st.rq.format)
	}
	switch kind {
	case respSSE:
		s := mutate.NewSSEStream(b.rw, p.MaxHeldBytes)
		if st.action.OversizePass {
			s.PassOversize()
		}
		b.sse = s
	case respNDJSON:
		s := mutate.NewNDJSONStream(b.rw, p.MaxHeldBytes)
		if st.action.OversizePass {
			s.PassOversize()
		}
		b.sse = s
	}
	return &m
}

func (st *stream) onResponseBody(hb *extprocv3.HttpBody) {
	data, eos := hb.GetBody(), hb.GetEndOfStream()
	st.countIn(len(data))
	rs := &st.rs
	switch {
	case st.rejected:
		if !streamedMode(st.respMode) {
			st.emit(st.passBody(false))
		}
		return
	case rs.phase != respRewriting || st.observe:
		// Nothing to rewrite, a body without headers (response headers
		// skipped), or observability mode, where nobody reads the reply.
		rs.phase.to(respPassing)
		if streamedMode(st.respMode) {
			st.emitStreamed(false, data, eos, false)
			return
		}
		st.countOut(len(data))
		st.emit(st.passBody(false))
		return
	}
	b := &rs.body
	act, out, whole := b.Write(data, eos)
	if eos {
		st.observeUsage()
	}
	if b.kind == bodyStopped {
		rs.phase.to(respPassing)
	}
	if act == actAbort {
		st.emit(st.refuse(b.abort))
		return
	}
	sent := released(act, out, data)
	if streamedMode(b.mode) {
		st.emitStreamed(false, sent, eos, false)
		return
	}
	rb := st.nextReply()
	cr := rb.common()
	var m mutation
	switch act {
	case actRestore:
		// Header mutations on this reply take effect (BUFFERED, or
		// BUFFERED_PARTIAL while Envoy holds the headers): put the encoding
		// back and pass the original bytes.
		m.setHeader("content-encoding", b.origEnc)
	case actHold:
		cr.BodyMutation = rb.replaceBody(nil)
	case actEmit:
		cr.BodyMutation = rb.replaceBody(sent)
	}
	if whole && rs.hadLength {
		// This reply carries the entire body: a replaced BUFFERED body needs
		// a matching content-length (Envoy rejects a mismatch), and it
		// restores the header removed on the headers reply.
		m.setHeader("content-length", strconv.Itoa(len(sent)))
	}
	if headerMutationsApply(b.mode) {
		cr.HeaderMutation = m.proto()
	}
	st.countOut(len(sent))
	st.emit(rb.bodyReply(false, cr))
}

func (st *stream) onResponseTrailers() {
	rs := &st.rs
	if !st.rejected && !st.observe && rs.phase == respRewriting {
		b := &rs.body
		if streamedMode(b.mode) {
			// Trailers end a FULL_DUPLEX_STREAMED body: flush what is held
			// (end_of_stream false: the trailers reply follows).
			act, out, _ := b.Write(nil, true)
			st.observeUsage()
			st.emitStreamed(false, released(act, out, nil), false, false)
		} else if b.held() > 0 {
			st.pass(reasonHeldAtTrailers)
			st.srv.log.Warn("response trailers arrived while body bytes were held", "stream", st.id)
		}
		st.observeUsage()
		b.stop()
	}
	st.emit(trailersReply(false))
}
