package extproc

import (
	"encoding/json"
	"math"
	"sort"
	"strconv"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/mutate"
	"github.com/distillguard/distillguard/scoring"
)

func (st *stream) onRequestHeaders(h *extprocv3.HttpHeaders) {
	rq := &st.rq
	rq.sawHeaders = true
	rq.hdr = h.GetHeaders()
	rq.path = getHeader(rq.hdr, ":path")
	rq.encoded = parseEncoding(getHeader(rq.hdr, "content-encoding")) != encIdentity
	if st.done {
		st.emit(headersReply(true, nil))
		return
	}
	if h.GetEndOfStream() || st.reqMode == modeNone || st.reqMode == modeGRPC {
		// No body will be seen (none exists, body mode NONE, or gRPC frames
		// that are not OpenAI JSON): decide from the headers now.
		rq.bodyDone = true
		if rej := st.decide(nil, false); rej != nil {
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
		rq.hdrPending = true
	case modeStreamed:
		// Chunks are held until the body is complete, then replaced by the
		// (possibly rewritten) whole: the length may change and header
		// mutations on STREAMED body replies are ignored, so the length goes
		// now. Envoy removes it itself in this mode unless
		// allow_content_length_header is set.
		var m mutation
		if hasHeader(rq.hdr, "content-length") {
			m.removeHeader("content-length")
		}
		st.preIdentityEncoding(&m)
		st.emit(headersReply(true, &m))
	default:
		// BUFFERED and BUFFERED_PARTIAL: Envoy holds the headers until the
		// body reply, whose header_mutation carries every change.
		st.emit(headersReply(true, nil))
	}
}

func (st *stream) onRequestBody(b *extprocv3.HttpBody) {
	data, eos := b.GetBody(), b.GetEndOfStream()
	st.countIn(len(data))
	rq := &st.rq
	streamed := streamedMode(st.reqMode)
	if st.done {
		if !streamed {
			st.emit(st.passBody(true))
		}
		return
	}
	if rq.bodyDone {
		st.passRequestChunk(data, eos)
		return
	}
	if len(rq.buf)+len(data) > st.cfg.Processing.MaxBodyBytes {
		// Too large to parse within bounds: decide from the headers and let
		// the body through untouched.
		st.pass(reasonBodyTooLarge)
		held := rq.buf
		rq.buf = nil
		rq.bodyDone = true
		if rej := st.decide(nil, false); rej != nil {
			st.emit(rej)
			return
		}
		st.releaseRequest(held, data, eos)
		return
	}
	if st.reqMode == modePartial && !eos {
		// BUFFERED_PARTIAL without end_of_stream: Envoy cut the body at its
		// buffer limit and streams the rest past the processor, so the
		// JSON can be neither parsed whole nor rewritten.
		st.pass(reasonPartialBody)
		rq.bodyDone = true
		if rej := st.decide(nil, false); rej != nil {
			st.emit(rej)
			return
		}
		st.releaseRequest(nil, data, eos)
		return
	}
	// BUFFERED sends the whole body in one message; end_of_stream is false
	// there only when trailers follow.
	if !eos && st.reqMode != modeBuffered {
		rq.buf = append(rq.buf, data...)
		if !streamed {
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
	st.finishRequest(body, held, eos, false)
	rq.buf = nil
}

func (st *stream) onRequestTrailers() {
	st.seenReqTrailers = true
	rq := &st.rq
	if !st.done && !rq.bodyDone {
		switch {
		case streamedMode(st.reqMode):
			// In FULL_DUPLEX_STREAMED trailers announce that "the complete
			// body has arrived" (processing_mode.proto): release it with
			// end_of_stream false, then answer the trailers.
			body := rq.buf
			rq.buf = nil
			st.finishRequest(body, len(body) > 0, false, true)
			if st.done {
				return
			}
		case len(rq.buf) > 0:
			// A trailers reply cannot carry body bytes: what was held is
			// lost to the upstream. Only a non-duplex mode with trailers
			// gets here (HTTP/2 request trailers with request_trailer_mode
			// SEND); count it loudly.
			st.pass(reasonHeldAtTrailers)
			st.srv.log.Warn("request trailers arrived while body bytes were held", "stream", st.id, "held", len(rq.buf))
			rq.bodyDone = true
			body := rq.buf
			rq.buf = nil
			if rej := st.decide(body, true); rej != nil {
				st.emit(rej)
				return
			}
		default:
			rq.bodyDone = true
			if rej := st.decide(nil, false); rej != nil {
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

// releaseRequest lets held bytes and the current chunk through unchanged
// after a decision that did not need (or could not use) the body.
func (st *stream) releaseRequest(held, data []byte, eos bool) {
	var m mutation
	st.identityEncoding(&m)
	if streamedMode(st.reqMode) {
		st.sendPendingHeaders(&m)
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

func (st *stream) sendPendingHeaders(m *mutation) {
	if st.rq.hdrPending {
		st.rq.hdrPending = false
		st.emit(headersReply(true, m))
	}
}

// finishRequest decides on the complete body and releases it, rewritten.
// held says earlier chunks were held back (and cleared) so the reply must
// carry the whole body; viaTrailers says trailers, not end_of_stream, ended
// a FULL_DUPLEX_STREAMED body.
func (st *stream) finishRequest(body []byte, held, eos, viaTrailers bool) {
	st.rq.bodyDone = true
	if rej := st.decide(body, true); rej != nil {
		st.emit(rej)
		return
	}
	out, changed := body, false
	if st.parsed && !st.action.Request.IsNoop() {
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
		st.sendPendingHeaders(&m)
		st.emitStreamed(true, out, eos && !viaTrailers, true)
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

func (st *stream) reqHeader(name string) string { return getHeader(st.rq.hdr, name) }

// decide scores the request once and resolves its action. It returns the
// immediate response when the action rejects.
func (st *stream) decide(body []byte, haveBody bool) *extprocv3.ProcessingResponse {
	if st.decided {
		return nil
	}
	st.decided = true
	rq := &st.rq
	sr := &scoring.Request{
		Time:          st.reqTime,
		Header:        st.reqHeader,
		SourceAddress: st.srcAddr,
		Path:          rq.path,
		Endpoint:      endpointOf(rq.path),
	}
	model := ""
	if haveBody && len(body) > 0 {
		switch {
		case rq.encoded:
			st.pass(reasonRequestEncoded)
		case !mutate.StartsLikeObject(body):
			st.pass(reasonBadRequestJSON)
		default:
			p, err := mutate.ParseRequest(body, st.cfg.Processing.MaxPromptBytes)
			if err != nil || p == nil {
				st.pass(reasonBadRequestJSON)
				break
			}
			st.parsed = true
			model = p.Model
			sr.Model, sr.Prompt, sr.Messages = p.Model, p.Prompt, p.Messages
			sr.Stream, sr.N, sr.MaxTokens, sr.Temperature = p.Stream, p.N, p.MaxTokens, p.Temperature
			sr.Logprobs, sr.TopLogprobs, sr.LogitBiasSize = p.Logprobs, p.TopLogprobs, p.LogitBiasSize
			sr.Echo, sr.ShapeKeys = p.Echo, p.ShapeKeys
			sr.System, sr.Tools, sr.ToolCount, sr.FirstUser = p.System, p.Tools, p.ToolCount, p.FirstUser
			sr.UserTurns, sr.AssistantTurns, sr.ToolTurns, sr.AfterUser = p.UserTurns, p.AssistantTurns, p.ToolTurns, p.AfterUser
		}
	}
	d := st.score(sr)
	shadow := d.Shadow || st.cfg.Scoring.Shadow || st.cfg.Resolve(rq.path, model, scoring.Allow).Shadow
	acted := d.Verdict
	if shadow {
		acted = scoring.Allow
	}
	st.verdict = d.Verdict
	st.shadow = shadow
	st.action = st.cfg.Resolve(rq.path, model, acted)
	st.seed = mutate.PerturbSeed(d.Session, body)
	st.meta = metadata(d, st.action, shadow)
	st.srv.m.request(st.mctx, d.Verdict.String(), st.action.Policy, shadow)
	if st.action.Reject != nil {
		return st.reject(st.action.Reject)
	}
	return nil
}

// score calls the scorer and fails open: a panic inside Score allows the
// request, counted.
func (st *stream) score(r *scoring.Request) (d scoring.Decision) {
	defer func() {
		if p := recover(); p != nil {
			st.pass(reasonScorerPanic)
			st.srv.log.Warn("scorer panicked; request allowed", "stream", st.id, "panic", p)
			d = scoring.Decision{Verdict: scoring.Allow}
		}
	}()
	d = st.srv.scorer.Score(r)
	if d.Verdict < scoring.Allow || d.Verdict > scoring.Block {
		d.Verdict = scoring.Block // config.Resolve treats unknown verdicts the same way
	}
	return d
}

type apiError struct {
	Error apiErrorBody `json:"error"`
}

type apiErrorBody struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// reject builds the immediate response: an OpenAI-style error body
// (https://platform.openai.com/docs/guides/error-codes), JSON content type,
// retry-after on 429, and details "distillguard_<verdict>" for Envoy's
// %RESPONSE_CODE_DETAILS%.
func (st *stream) reject(rj *config.Reject) *extprocv3.ProcessingResponse {
	e := apiError{Error: apiErrorBody{Message: rj.Message, Type: rj.Type}}
	if rj.Code != "" {
		code := rj.Code
		e.Error.Code = &code
	}
	body, _ := json.Marshal(e) // plain strings: cannot fail
	var m mutation
	// ImmediateResponse.body is sent "using the text/plain content type"
	// unless the header mutation overrides it.
	m.setHeader("content-type", "application/json")
	if rj.Status == 429 && rj.RetryAfter > 0 {
		m.setHeader("retry-after", strconv.FormatInt(int64(math.Ceil(rj.RetryAfter.Seconds())), 10))
	}
	ir := &extprocv3.ImmediateResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode(rj.Status)},
		Headers: m.proto(),
		Body:    body,
		Details: "distillguard_" + st.action.Verdict.String(),
	}
	r := &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: ir}}
	st.attachMeta(r)
	st.done = true
	st.rq.buf = nil
	if !st.observe { // in observability mode nothing reaches Envoy
		st.srv.m.immediateResponse(st.mctx, rj.Status)
	}
	return r
}

// maxSignals bounds the signals exported in metadata (access logs).
const maxSignals = 5

// metadata is the dynamic metadata of a decision, under the "distillguard"
// namespace (ProcessingResponse.dynamic_metadata: "placed in the
// namespace(s) specified by the top-level field name(s) of the struct").
// verdict is what the scorer said, action what was enforced (Allow in
// shadow mode).
func metadata(d scoring.Decision, a config.Action, shadow bool) *structpb.Struct {
	sigs := make([]scoring.Signal, len(d.Signals))
	copy(sigs, d.Signals)
	sort.SliceStable(sigs, func(i, j int) bool { return sigs[i].Contribution > sigs[j].Contribution })
	if len(sigs) > maxSignals {
		sigs = sigs[:maxSignals]
	}
	sf := make(map[string]*structpb.Value, len(sigs))
	for _, s := range sigs {
		sf[s.Name] = structpb.NewNumberValue(finite(math.Round(s.Contribution*1000) / 1000))
	}
	inner := &structpb.Struct{Fields: map[string]*structpb.Value{
		"verdict": structpb.NewStringValue(d.Verdict.String()),
		"action":  structpb.NewStringValue(a.Verdict.String()),
		"score":   structpb.NewNumberValue(finite(d.Score)),
		"session": structpb.NewStringValue(d.Session),
		"signals": structpb.NewStructValue(&structpb.Struct{Fields: sf}),
		"policy":  structpb.NewStringValue(a.Policy),
		"shadow":  structpb.NewBoolValue(shadow),
	}}
	return &structpb.Struct{Fields: map[string]*structpb.Value{metaNamespace: structpb.NewStructValue(inner)}}
}

// finite maps NaN and infinities to 0: they have no JSON form in access logs.
func finite(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}
