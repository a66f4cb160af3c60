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
	"github.com/distillguard/distillguard/extproc/keys"
	"github.com/distillguard/distillguard/mutate"
	"github.com/distillguard/distillguard/scoring"
	"github.com/distillguard/distillguard/watermark"
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
// buffer are reused (nextReply, scratch), and Process sends them before it
// calls either.
type stream struct {
	srv *Server
	ctx context.Context
	recorder
	cfg *config.Config
	id  uint64

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

	rq reqState
	rs respState

	// rejected is set once an immediate response was sent: Envoy ignores
	// every later message of the stream (ProcessingResponse.immediate_response).
	rejected bool
	decided  bool
	// verdict is the scorer's verdict (only it: the decision's signals
	// live on in meta until that is sent, not for the whole stream).
	verdict scoring.Verdict
	action  config.Action
	shadow  bool
	seed    uint64
	// lpMark is the logprob watermark in this request's context, when
	// the tier marks logprobs (watermark.go).
	lpMark *mutate.LogprobMark
	// served is the response's served record (watermark.log_served).
	served *watermark.Served
	// meta is the decision's dynamic metadata until a reply carries it.
	meta *structpb.Struct

	out []*extprocv3.ProcessingResponse
	// replies are the reply trees reused across messages (see nextReply);
	// nreplies of them are in use by the current message's replies.
	replies  []*replyBuf
	nreplies int
	// scratch is the output buffer rewritten bodies are written into.
	scratch outBuf
	// mem is the stream's share of the server-wide bound on held bytes.
	mem memHold
	// session is the decision's session, for ObserveResponse.
	session string
}

// reqState is the request direction of a stream.
type reqState struct {
	phase reqPhase
	hdr   *corev3.HeaderMap
	path  string // :path, normalized (normalizePath)
	view  config.RouteView
	// format is the inference API the path speaks (config.FormatFor): it
	// chooses the request fields read and the response walk.
	format mutate.Format
	enc    encoding // content-encoding
	// quiet: the body was read and the request as forwarded asks for no
	// logprobs in any form (mutate.Body.Asks, after the request policy).
	quiet bool
	buf   []byte // the body held for the decision
}

// respState is the response direction of a stream.
type respState struct {
	phase respPhase
	// hadLength: the upstream sent content-length (removed on the headers
	// reply, restored on a whole BUFFERED body).
	hadLength bool
	body      respBody // in respRewriting
	// refusal is the answer of a response refused at its headers.
	refusal *mutate.RequestError
}

func (s *Server) newStream(ctx context.Context) *stream {
	cfg := s.config()
	if cfg == nil {
		cfg = s.fallback
	}
	st := &stream{srv: s, ctx: ctx, recorder: recorder{m: s.m, mctx: metricsContext(ctx)}, cfg: cfg, id: s.ids.Add(1), arrival: s.now()}
	st.reqTime = st.arrival
	st.reqMode = parseMode(cfg.Processing.RequestBodyMode)
	st.respMode = parseMode(cfg.Processing.ResponseBodyMode)
	st.scratch.pool = &s.outBufs
	st.mem.b = &s.mem
	return st
}

const levelDebug = slog.LevelDebug

// warn logs a warning about this stream, at most one line per second per
// kind server-wide (see logLimiter).
func (st *stream) warn(kind, msg string, args ...any) {
	st.srv.logs.warn(st.srv.log, time.Now(), kind, msg, append([]any{"stream", st.id}, args...)...)
}

// handle processes one message and returns the replies to send, in order.
// In every mode but FULL_DUPLEX_STREAMED that is exactly one reply per
// message; in observability mode it is none (Envoy does not wait).
func (st *stream) handle(req *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
	st.out = st.out[:0]
	st.nreplies = 0
	st.msgs++
	// protocol_config "is only encoded in the first ProcessingRequest".
	if pc := req.GetProtocolConfig(); pc != nil && st.msgs == 1 {
		st.reqMode = pc.GetRequestBodyMode()
		st.respMode = pc.GetResponseBodyMode()
	}
	if req.GetObservabilityMode() {
		if !st.observe && req.GetProtocolConfig() == nil && !streamedMode(st.reqMode) {
			// In observability mode Envoy sends bodies only in STREAMED
			// mode, chunk by chunk, without protocol_config: a configured
			// BUFFERED mode would read each chunk as a whole body.
			st.reqMode, st.respMode = modeStreamed, modeStreamed
		}
		st.observe = true
	}
	if attrs := req.GetAttributes(); len(attrs) > 0 {
		st.readAttributes(attrs)
	}
	// Envoy never sends a message after the end of its direction or a
	// second headers message; such input is answered all the same (a
	// missing reply would stall the stream) but warned about. A direction
	// ends here, after its handler.
	rq, rs := &st.rq, &st.rs
	switch r := req.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		st.lastKind = kindRequestHeaders
		if st.check(rq.phase != reqStart, protoOutOfOrder) {
			st.emit(headersReply(true, nil))
			break
		}
		st.onRequestHeaders(r.RequestHeaders)
		if r.RequestHeaders.GetEndOfStream() {
			rq.phase.to(reqEnded)
		}
	case *extprocv3.ProcessingRequest_RequestBody:
		st.lastKind = kindRequestBody
		st.check(rq.phase.ended(), protoAfterEnd)
		st.onRequestBody(r.RequestBody)
		if r.RequestBody.GetEndOfStream() {
			rq.phase.to(reqEnded)
		}
	case *extprocv3.ProcessingRequest_RequestTrailers:
		st.lastKind = kindRequestTrailers
		st.check(rq.phase.ended(), protoAfterEnd)
		st.onRequestTrailers()
		rq.phase.to(reqTrailers)
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		st.lastKind = kindResponseHeaders
		if st.check(rs.phase != respStart, protoOutOfOrder) {
			st.emit(headersReply(false, nil))
			break
		}
		st.onResponseHeaders(r.ResponseHeaders)
		if r.ResponseHeaders.GetEndOfStream() {
			rs.phase.to(respEnded)
		}
	case *extprocv3.ProcessingRequest_ResponseBody:
		st.lastKind = kindResponseBody
		st.check(rs.phase == respEnded, protoAfterEnd)
		st.onResponseBody(r.ResponseBody)
		if r.ResponseBody.GetEndOfStream() {
			rs.phase.to(respEnded)
		}
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		st.lastKind = kindResponseTrailers
		st.check(rs.phase == respEnded, protoAfterEnd)
		st.onResponseTrailers()
		rs.phase.to(respEnded)
	default:
		// Nothing to answer: a reply would be spurious. Flow-control-only
		// messages are not implemented by Envoy, so this is a client bug.
		st.lastKind = kindUnknown
		st.srv.m.protocolError(st.mctx, protoEmptyRequest)
		st.warn("protocol_"+protoEmptyRequest, "ext_proc message without a request")
	}
	if !rq.phase.holding() {
		// The request side is finished (decided, its replies built): its
		// header map, the largest thing a stream would otherwise keep
		// for its whole life, is no longer read.
		rq.hdr = nil
	}
	if st.observe {
		st.out = st.out[:0]
		return nil
	}
	return st.out
}

// check counts and warns about a protocol violation when bad holds, and
// returns bad.
func (st *stream) check(bad bool, kind string) bool {
	if !bad {
		return false
	}
	st.srv.m.protocolError(st.mctx, kind)
	st.warn("protocol_"+kind, "ext_proc protocol violation", "violation", kind, "message", st.lastKind.String())
	return true
}

func (st *stream) emit(r *extprocv3.ProcessingResponse) {
	if st.observe {
		return
	}
	st.out = append(st.out, r)
}

// account counts a processed message; the counts reach the shared counters
// in batches (see tally).
func (st *stream) account() {
	st.tally.messages[st.lastKind]++
	if st.tally.pending++; st.tally.pending >= tallyFlushEvery {
		st.m.flush(st.mctx, &st.tally)
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
	a := attrs[keys.AttributeNamespace]
	if a == nil {
		return
	}
	f := a.GetFields()
	if v, ok := f[keys.SourceAddress]; ok && st.srcAddr == "" {
		st.srcAddr = v.GetStringValue()
	}
	if v, ok := f[keys.RequestTime]; ok && !st.timeSet {
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

// sent is called once the replies of a message have been sent (Process) or
// when the stream ends: the output scratch they pointed into goes back to
// the server's pool, the reply trees drop what they pointed at, decoding
// scratch beyond a small size is let go, and the memory reservation
// shrinks to what the stream still holds, so streams waiting for their
// next chunk hold nothing the next message does not need.
func (st *stream) sent() {
	st.scratch.giveBack()
	for _, rb := range st.replies {
		*rb = replyBuf{}
	}
	clear(st.out)
	st.out = st.out[:0]
	st.rs.body.shrink()
	st.mem.settle(cap(st.rq.buf) + st.rs.body.holding())
}

// release drops everything the stream holds. It runs on every exit path of
// Process.
func (st *stream) release() {
	st.traceEnd()
	st.sent()
	if !st.rejected && (len(st.rq.buf) > 0 || st.rs.body.held() > 0) {
		// The stream ended with body bytes still held back, which only a
		// body ending without end_of_stream (trailers under STREAMED) or an
		// aborted exchange leaves behind.
		st.pass(reasonHeldAtEnd)
		if st.end == "eof" {
			st.warn("held_at_end", "ext_proc stream closed while body bytes were held")
		}
	}
	st.rs.body.stop()
	st.logServed()
	st.mem.release()
	st.m.flush(st.mctx, &st.tally)
	if st.srv.log.Enabled(st.ctx, slog.LevelDebug) {
		st.srv.log.Debug("ext_proc stream done", "stream", st.id, "messages", st.msgs,
			"end", st.end, "endpoint", endpointOf(st.rq.path), "verdict", st.verdict.String(),
			"policy", st.action.Policy, "shadow", st.shadow, "rejected", st.rejected,
			"request_mode", st.reqMode.String(), "response_mode", st.respMode.String())
	}
	st.rq = reqState{}
	st.rs = respState{}
	st.out = nil
	st.replies = nil
	st.meta = nil
}
