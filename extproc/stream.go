package extproc

import (
	"context"
	"log/slog"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	procv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/scoring"
)

type bodyMode = procv3.ProcessingMode_BodySendMode

const (
	modeNone     = procv3.ProcessingMode_NONE
	modeStreamed = procv3.ProcessingMode_STREAMED
	modeBuffered = procv3.ProcessingMode_BUFFERED
	modePartial  = procv3.ProcessingMode_BUFFERED_PARTIAL
	modeDuplex   = procv3.ProcessingMode_FULL_DUPLEX_STREAMED
	modeGRPC     = procv3.ProcessingMode_GRPC
)

// maxStreamedChunk bounds one streamed_response body: ProcessingMode
// FULL_DUPLEX_STREAMED recommends "no greater than 64K bytes".
const maxStreamedChunk = 64 << 10

// attrNamespace is the key Envoy files request attributes under
// (ProcessingRequest.attributes is keyed by filter name).
const attrNamespace = "envoy.filters.http.ext_proc"

// metaNamespace is the dynamic-metadata namespace distillguard writes;
// Envoy must list it in metadata_options.receiving_namespaces.untyped.
const metaNamespace = "distillguard"

func parseMode(s string) bodyMode {
	if v, ok := procv3.ProcessingMode_BodySendMode_value[s]; ok {
		return bodyMode(v)
	}
	return modeNone
}

// streamedMode reports whether body replies must be streamed_response
// messages (FULL_DUPLEX_STREAMED, and GRPC, which has the same reply shape).
func streamedMode(m bodyMode) bool { return m == modeDuplex || m == modeGRPC }

// headerMutationsApply reports whether Envoy applies a header_mutation sent
// on a body reply: CommonResponse.header_mutation "will only take effect if
// the current processing mode for the body is BUFFERED"; Envoy's
// BUFFERED_PARTIAL callback applies them too while it still holds the
// headers.
func headerMutationsApply(m bodyMode) bool { return m == modeBuffered || m == modePartial }

// stream is the state of one ext_proc stream (one HTTP exchange). It is
// owned by the goroutine running Server.Process and never shared. The
// replies returned by handle, and the byte slices they carry, are valid
// until the next call to handle: Process sends them before receiving again.
type stream struct {
	srv *Server
	ctx context.Context
	cfg *config.Config
	id  uint64

	started  bool
	observe  bool
	reqMode  bodyMode
	respMode bodyMode
	lastKind msgKind
	msgs     int
	end      string

	arrival time.Time
	reqTime time.Time
	timeSet bool
	srcAddr string

	// done is set once an immediate response was sent: Envoy ignores every
	// later message of the stream (ProcessingResponse.immediate_response).
	done            bool
	seenReqTrailers bool
	// Message-order bookkeeping, for protocol-violation warnings only.
	reqEnded, respHeaders, respEnded bool

	rq reqState
	rs respState

	decided  bool
	parsed   bool
	decision scoring.Decision
	action   config.Action
	shadow   bool
	seed     uint64
	meta     *structpb.Struct
	metaSent bool

	out []*extprocv3.ProcessingResponse
}

type reqState struct {
	hdr        *corev3.HeaderMap
	path       string
	sawHeaders bool
	encoded    bool
	// hdrPending: FULL_DUPLEX_STREAMED request headers whose reply is held
	// until the body is known, which the mode allows ("the server may also
	// choose to buffer the entire message, including the headers").
	hdrPending bool
	buf        []byte
	// bodyDone: the decision no longer depends on the body; later chunks
	// pass untouched.
	bodyDone bool
}

func (s *Server) newStream(ctx context.Context) *stream {
	cfg := s.config()
	if cfg == nil {
		cfg = s.fallback
	}
	st := &stream{srv: s, ctx: ctx, cfg: cfg, id: s.ids.Add(1), arrival: s.now()}
	st.reqTime = st.arrival
	st.reqMode = parseMode(cfg.Processing.RequestBodyMode)
	st.respMode = parseMode(cfg.Processing.ResponseBodyMode)
	return st
}

// handle processes one message and returns the replies to send, in order.
// In every mode but FULL_DUPLEX_STREAMED that is exactly one reply per
// message; in observability mode it is none (Envoy does not wait).
func (st *stream) handle(req *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
	st.out = st.out[:0]
	st.msgs++
	if !st.started {
		st.started = true
		// protocol_config "is only encoded in the first ProcessingRequest".
		if pc := req.GetProtocolConfig(); pc != nil {
			st.reqMode = pc.GetRequestBodyMode()
			st.respMode = pc.GetResponseBodyMode()
		}
	}
	if req.GetObservabilityMode() {
		st.observe = true
	}
	if attrs := req.GetAttributes(); len(attrs) > 0 {
		st.readAttributes(attrs)
	}
	// Envoy never sends a message after the end of its direction or a
	// second headers message; such input is answered all the same (a
	// missing reply would stall the stream) but warned about.
	switch r := req.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		st.lastKind = kindRequestHeaders
		st.check(st.rq.sawHeaders || st.reqEnded, protoOutOfOrder)
		st.reqEnded = r.RequestHeaders.GetEndOfStream()
		st.onRequestHeaders(r.RequestHeaders)
	case *extprocv3.ProcessingRequest_RequestBody:
		st.lastKind = kindRequestBody
		st.check(st.reqEnded, protoAfterEnd)
		st.reqEnded = st.reqEnded || r.RequestBody.GetEndOfStream()
		st.onRequestBody(r.RequestBody)
	case *extprocv3.ProcessingRequest_RequestTrailers:
		st.lastKind = kindRequestTrailers
		st.check(st.reqEnded, protoAfterEnd)
		st.reqEnded = true
		st.onRequestTrailers()
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		st.lastKind = kindResponseHeaders
		st.check(st.respHeaders || st.respEnded, protoOutOfOrder)
		st.respHeaders = true
		st.respEnded = r.ResponseHeaders.GetEndOfStream()
		st.onResponseHeaders(r.ResponseHeaders)
	case *extprocv3.ProcessingRequest_ResponseBody:
		st.lastKind = kindResponseBody
		st.check(st.respEnded, protoAfterEnd)
		st.respEnded = st.respEnded || r.ResponseBody.GetEndOfStream()
		st.onResponseBody(r.ResponseBody)
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		st.lastKind = kindResponseTrailers
		st.check(st.respEnded, protoAfterEnd)
		st.respEnded = true
		st.onResponseTrailers()
	default:
		// Nothing to answer: a reply would be spurious. Flow-control-only
		// messages are not implemented by Envoy, so this is a client bug.
		st.lastKind = kindUnknown
		st.srv.m.protocolError(st.ctx, protoEmptyRequest)
		st.srv.log.Warn("ext_proc message without a request", "stream", st.id)
	}
	if st.observe {
		st.out = st.out[:0]
		return nil
	}
	return st.out
}

// check counts and warns about a protocol violation when bad holds.
func (st *stream) check(bad bool, kind string) {
	if !bad {
		return
	}
	st.srv.m.protocolError(st.ctx, kind)
	st.srv.log.Warn("ext_proc protocol violation", "stream", st.id, "violation", kind, "message", st.lastKind.String())
}

func (st *stream) emit(r *extprocv3.ProcessingResponse) {
	if st.observe {
		return
	}
	st.out = append(st.out, r)
}

func (st *stream) pass(reason string) { st.srv.m.pass(st.ctx, reason) }

func (st *stream) countOut(n int) {
	if n > 0 {
		st.srv.m.bytes.Add(st.ctx, int64(n), st.srv.m.outOpt)
	}
}

func (st *stream) countIn(n int) {
	if n > 0 {
		st.srv.m.bytes.Add(st.ctx, int64(n), st.srv.m.inOpt)
	}
}

// readAttributes takes request.time and source.address from Envoy's request
// attributes (ExternalProcessor.request_attributes). request.time becomes the
// request's clock unless it lies further in the future than max_clock_skew:
// a data plane with a broken clock must not be able to age sessions.
func (st *stream) readAttributes(attrs map[string]*structpb.Struct) {
	a := attrs[attrNamespace]
	if a == nil {
		return
	}
	f := a.GetFields()
	if v, ok := f["source.address"]; ok && st.srcAddr == "" {
		st.srcAddr = v.GetStringValue()
	}
	if v, ok := f["request.time"]; ok && !st.timeSet {
		st.timeSet = true
		t, err := time.Parse(time.RFC3339Nano, v.GetStringValue())
		switch {
		case err != nil:
			st.pass(reasonBadRequestTime)
		case t.After(st.arrival.Add(st.cfg.Processing.MaxClockSkew)):
			st.pass(reasonClockSkew)
		default:
			st.reqTime = t
		}
	}
}

// release drops everything the stream holds. It runs on every exit path of
// Process.
func (st *stream) release() {
	if !st.done && (len(st.rq.buf) > 0 || len(st.rs.buf) > 0 || (st.rs.sse != nil && st.rs.sse.Held() > 0)) {
		// The stream ended with body bytes still held back, which only a
		// body ending without end_of_stream (trailers under STREAMED) or an
		// aborted exchange leaves behind.
		st.pass(reasonHeldAtEnd)
		if st.end == "eof" {
			st.srv.log.Warn("ext_proc stream closed while body bytes were held", "stream", st.id)
		}
	}
	if st.rs.gz != nil {
		_, _ = st.rs.gz.Close(nil)
		st.rs.gz = nil
	}
	if st.srv.log.Enabled(st.ctx, slog.LevelDebug) {
		st.srv.log.Debug("ext_proc stream done", "stream", st.id, "messages", st.msgs,
			"end", st.end, "endpoint", endpointOf(st.rq.path), "verdict", st.decision.Verdict.String(),
			"policy", st.action.Policy, "shadow", st.shadow, "rejected", st.done,
			"request_mode", st.reqMode.String(), "response_mode", st.respMode.String())
	}
	st.rq = reqState{}
	st.rs = respState{}
	st.out = nil
	st.meta = nil
}

// attachMeta puts the decision's dynamic metadata on r, once per stream.
func (st *stream) attachMeta(r *extprocv3.ProcessingResponse) {
	if st.meta == nil || st.metaSent {
		return
	}
	r.DynamicMetadata = st.meta
	st.metaSent = true
}

// --- reply builders ---

func headersReply(request bool, m *mutation) *extprocv3.ProcessingResponse {
	hr := &extprocv3.HeadersResponse{}
	if m != nil && !m.empty() {
		hr.Response = &extprocv3.CommonResponse{HeaderMutation: m.proto()}
	}
	if request {
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: hr}}
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: hr}}
}

func bodyReply(request bool, cr *extprocv3.CommonResponse) *extprocv3.ProcessingResponse {
	br := &extprocv3.BodyResponse{Response: cr}
	if request {
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: br}}
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: br}}
}

func trailersReply(request bool) *extprocv3.ProcessingResponse {
	if request {
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{RequestTrailers: &extprocv3.TrailersResponse{}}}
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{ResponseTrailers: &extprocv3.TrailersResponse{}}}
}

// replaceBody builds a non-streamed body reply that replaces the chunk Envoy
// sent with b (CommonResponse.body_mutation: "simply replace or clear the
// body chunk that was sent with that request").
func replaceBody(b []byte) *extprocv3.BodyMutation {
	if len(b) == 0 {
		return &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_ClearBody{ClearBody: true}}
	}
	return &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: b}}
}

// emitStreamed sends b as streamed_response chunks of at most 64 KiB; the
// last carries eos. Nothing is sent for an empty, non-final b. With meta the
// decision's metadata rides on the first chunk.
func (st *stream) emitStreamed(request bool, b []byte, eos, meta bool) {
	if len(b) == 0 && !eos {
		return
	}
	st.countOut(len(b))
	for first := true; first || len(b) > 0; first = false {
		n := min(len(b), maxStreamedChunk)
		chunk := b[:n]
		b = b[n:]
		cr := &extprocv3.CommonResponse{BodyMutation: &extprocv3.BodyMutation{
			Mutation: &extprocv3.BodyMutation_StreamedResponse{StreamedResponse: &extprocv3.StreamedBodyResponse{
				Body: chunk, EndOfStream: eos && len(b) == 0,
			}},
		}}
		r := bodyReply(request, cr)
		if meta {
			st.attachMeta(r)
		}
		st.emit(r)
	}
}

// overrideMode builds a mode_override that changes only the response body
// mode. Envoy applies an override to both directions and takes its body
// modes literally (older versions take every field literally), so the
// request body mode in force is copied; header and trailer modes are
// DEFAULT ("no change") except where the mode in force is known.
func (st *stream) overrideMode(want bodyMode) *procv3.ProcessingMode {
	m := &procv3.ProcessingMode{
		RequestHeaderMode:  procv3.ProcessingMode_DEFAULT, // ignored in overrides
		ResponseHeaderMode: procv3.ProcessingMode_SEND,    // we are processing them
		RequestBodyMode:    st.reqMode,
		ResponseBodyMode:   want,
	}
	if st.seenReqTrailers {
		m.RequestTrailerMode = procv3.ProcessingMode_SEND
	}
	return m
}
