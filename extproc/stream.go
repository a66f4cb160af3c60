package extproc

import (
	"context"
	"log/slog"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	procv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"go.opentelemetry.io/otel/trace"
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
// until the next call to handle or sent: their reply trees and output
// buffers are reused (nextReply, outScratch), and Process sends them before
// it calls either.
type stream struct {
	srv *Server
	ctx context.Context
	// mctx is the context measurements are recorded with: ctx itself when
	// it carries a span (exemplars), else context.Background(), so the
	// SDK's per-measurement span lookup does not walk gRPC's context chain.
	mctx context.Context
	cfg  *config.Config
	id   uint64

	started  bool
	observe  bool
	reqMode  bodyMode
	respMode bodyMode
	lastKind msgKind
	msgs     int
	bodyMsgs int // body messages so far (duration sampling)
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

	decided bool
	parsed  bool
	// verdict is the scorer's verdict (only it: the decision's signals
	// live on in meta until that is sent, not for the whole stream).
	verdict scoring.Verdict
	action  config.Action
	shadow  bool
	seed    uint64
	// meta is the decision's dynamic metadata until a reply carries it.
	meta     *structpb.Struct
	metaSent bool

	out []*extprocv3.ProcessingResponse
	// replies are the reply trees reused across messages (see nextReply);
	// nreplies of them are in use by the current message's replies.
	replies  []*replyBuf
	nreplies int

	tally tally
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
	st := &stream{srv: s, ctx: ctx, mctx: metricsContext(ctx), cfg: cfg, id: s.ids.Add(1), arrival: s.now()}
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
	st.nreplies = 0
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
		st.srv.m.protocolError(st.mctx, protoEmptyRequest)
		st.srv.log.Warn("ext_proc message without a request", "stream", st.id)
	}
	if st.rq.bodyDone && !st.rq.hdrPending {
		// The request side is finished (decided, its replies built): its
		// header map, the largest thing a stream would otherwise keep
		// for its whole life, is no longer read.
		st.rq.hdr = nil
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
	st.srv.m.protocolError(st.mctx, kind)
	st.srv.log.Warn("ext_proc protocol violation", "stream", st.id, "violation", kind, "message", st.lastKind.String())
}

func (st *stream) emit(r *extprocv3.ProcessingResponse) {
	if st.observe {
		return
	}
	st.out = append(st.out, r)
}

func (st *stream) pass(reason string) { st.srv.m.pass(st.mctx, reason) }

func (st *stream) countOut(n int) { st.tally.bytesOut += int64(n) }

func (st *stream) countIn(n int) { st.tally.bytesIn += int64(n) }

// account counts a processed message; the counts reach the shared counters
// in batches (see tally).
func (st *stream) account() {
	st.tally.messages[st.lastKind]++
	if st.tally.pending++; st.tally.pending >= tallyFlushEvery {
		st.srv.m.flush(st.mctx, &st.tally)
	}
}

// durationSampleEvery: one body message in this many, per stream, has its
// processing time recorded in distillguard_message_duration; headers and
// trailers messages (where requests are decided) always do. Reading the
// clock twice and recording a histogram measurement cost about as much as
// everything else the server does per streamed token besides the rewrite,
// and a systematic sample of a stream's chunks estimates their distribution
// as well.
const durationSampleEvery = 8

// timed reports whether the processing time of req is to be recorded.
func (st *stream) timed(req *extprocv3.ProcessingRequest) bool {
	switch req.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestBody, *extprocv3.ProcessingRequest_ResponseBody:
		st.bodyMsgs++
		return st.bodyMsgs%durationSampleEvery == 1 // the 1st, 9th, 17th, ...
	}
	return true
}

// metricsContext is ctx when it carries a span context (the SDK's
// trace-based exemplar filter looks for one), else context.Background().
func metricsContext(ctx context.Context) context.Context {
	if trace.SpanContextFromContext(ctx).IsValid() {
		return ctx
	}
	return context.Background()
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

// maxPooledOut bounds the output scratch buffers kept in the server's pool:
// a token event needs about 1 KiB, and a large buffered JSON body's buffer
// is better left to the garbage collector than kept around.
const maxPooledOut = 64 << 10

// outScratch returns the (empty) buffer rewritten output is appended to,
// borrowed from the server's pool when the stream holds none. The bytes
// appended to it stay valid until sent gives it back.
func (st *stream) outScratch() []byte {
	rs := &st.rs
	if rs.outBuf == nil {
		if p, ok := st.srv.outBufs.Get().(*[]byte); ok {
			rs.outPtr, rs.outBuf = p, *p
		}
	}
	return rs.outBuf[:0]
}

// sent is called once the replies of a message have been sent (Process) or
// when the stream ends: the output scratch they pointed into goes back to
// the server's pool, so streams waiting for their next chunk hold none.
func (st *stream) sent() {
	rs := &st.rs
	if rs.outBuf == nil {
		return
	}
	if cap(rs.outBuf) <= maxPooledOut {
		p := rs.outPtr
		if p == nil {
			p = new([]byte)
		}
		*p = rs.outBuf[:0]
		st.srv.outBufs.Put(p)
	}
	rs.outBuf, rs.outPtr = nil, nil
}

// release drops everything the stream holds. It runs on every exit path of
// Process.
func (st *stream) release() {
	st.sent()
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
	st.srv.m.flush(st.mctx, &st.tally)
	if st.srv.log.Enabled(st.ctx, slog.LevelDebug) {
		st.srv.log.Debug("ext_proc stream done", "stream", st.id, "messages", st.msgs,
			"end", st.end, "endpoint", endpointOf(st.rq.path), "verdict", st.verdict.String(),
			"policy", st.action.Policy, "shadow", st.shadow, "rejected", st.done,
			"request_mode", st.reqMode.String(), "response_mode", st.respMode.String())
	}
	st.rq = reqState{}
	st.rs = respState{}
	st.out = nil
	st.replies = nil
	st.meta = nil
}

// attachMeta puts the decision's dynamic metadata on r, once per stream.
func (st *stream) attachMeta(r *extprocv3.ProcessingResponse) {
	if st.meta == nil || st.metaSent {
		return
	}
	r.DynamicMetadata = st.meta
	st.metaSent = true
	st.meta = nil // the reply holds it until sent; the stream no longer needs it
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

func trailersReply(request bool) *extprocv3.ProcessingResponse {
	if request {
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{RequestTrailers: &extprocv3.TrailersResponse{}}}
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{ResponseTrailers: &extprocv3.TrailersResponse{}}}
}

// replyBuf is the reply tree of one body message (ProcessingResponse ->
// BodyResponse -> CommonResponse -> BodyMutation), kept by the stream and
// reused for every body message instead of building six objects per
// message. Reuse is safe because grpc-go's serverStream.SendMsg marshals
// the message (prepareMsg -> encode) before it returns and keeps only the
// encoded bytes, and Process sends a message's replies before it handles
// the next message. The same holds for the body bytes a reply points at.
type replyBuf struct {
	resp     extprocv3.ProcessingResponse
	reqBody  extprocv3.ProcessingResponse_RequestBody
	respBody extprocv3.ProcessingResponse_ResponseBody
	br       extprocv3.BodyResponse
	cr       extprocv3.CommonResponse
	bm       extprocv3.BodyMutation
	body     extprocv3.BodyMutation_Body
	clear    extprocv3.BodyMutation_ClearBody
	streamed extprocv3.BodyMutation_StreamedResponse
	sbr      extprocv3.StreamedBodyResponse
}

// maxKeptReplies bounds the reply trees a stream keeps. A message gets one
// body reply, except a large FULL_DUPLEX_STREAMED release cut into 64 KiB
// chunks: replies beyond this many are allocated and not kept.
const maxKeptReplies = 2

// nextReply returns an empty reply tree for the current message. Its
// replies stay valid until the next call to handle.
func (st *stream) nextReply() *replyBuf {
	i := st.nreplies
	st.nreplies++
	if i < len(st.replies) {
		b := st.replies[i]
		*b = replyBuf{}
		return b
	}
	b := new(replyBuf)
	if i < maxKeptReplies {
		st.replies = append(st.replies, b)
	}
	return b
}

// common returns the tree's (empty) CommonResponse.
func (b *replyBuf) common() *extprocv3.CommonResponse { return &b.cr }

// bodyReply wires the tree as a request or response body reply carrying cr
// (nil: no common response, the chunk goes on unchanged).
func (b *replyBuf) bodyReply(request bool, cr *extprocv3.CommonResponse) *extprocv3.ProcessingResponse {
	b.br.Response = cr
	if request {
		b.reqBody.RequestBody = &b.br
		b.resp.Response = &b.reqBody
	} else {
		b.respBody.ResponseBody = &b.br
		b.resp.Response = &b.respBody
	}
	return &b.resp
}

// replaceBody is a non-streamed body mutation that replaces the chunk Envoy
// sent with data (CommonResponse.body_mutation: "simply replace or clear the
// body chunk that was sent with that request").
func (b *replyBuf) replaceBody(data []byte) *extprocv3.BodyMutation {
	if len(data) == 0 {
		b.clear.ClearBody = true
		b.bm.Mutation = &b.clear
	} else {
		b.body.Body = data
		b.bm.Mutation = &b.body
	}
	return &b.bm
}

// streamedBody is a FULL_DUPLEX_STREAMED body mutation
// (BodyMutation.streamed_response).
func (b *replyBuf) streamedBody(chunk []byte, eos bool) *extprocv3.BodyMutation {
	b.sbr.Body, b.sbr.EndOfStream = chunk, eos
	b.streamed.StreamedResponse = &b.sbr
	b.bm.Mutation = &b.streamed
	return &b.bm
}

// passBody is a body reply that lets the chunk go on unchanged.
func (st *stream) passBody(request bool) *extprocv3.ProcessingResponse {
	return st.nextReply().bodyReply(request, nil)
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
		rb := st.nextReply()
		cr := rb.common()
		cr.BodyMutation = rb.streamedBody(chunk, eos && len(b) == 0)
		r := rb.bodyReply(request, cr)
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
