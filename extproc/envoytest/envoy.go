// Package envoytest plays Envoy's side of the ext_proc protocol against an
// ExternalProcessorClient, and provides a mock OpenAI-compatible upstream and
// generators for its bodies.
//
// The emulation follows the proto contract (go-control-plane envoy@v1.40.0:
// service/ext_proc/v3/external_processor.pb.go,
// extensions/filters/http/ext_proc/v3/{ext_proc,processing_mode}.pb.go) and
// the behaviour of Envoy's filter (source/extensions/filters/http/ext_proc:
// processor_state.cc, mutation_utils.cc, ext_proc.cc): one message per step,
// replies matched to the callback state (anything else is "spurious"),
// header mutations read from raw_value, content-length removed for streamed
// bodies and checked against a replaced BUFFERED body, streamed_response only
// in FULL_DUPLEX_STREAMED, mode_override honoured only in header state when
// allowed, dynamic metadata accepted only for receiving namespaces.
//
// It is a test double: timing, flow control and watermarks are not modelled;
// every STREAMED chunk waits for its reply before the next is sent.
package envoytest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	procv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// Config mirrors the ext_proc filter settings the emulation honours
// (extensions/filters/http/ext_proc/v3.ExternalProcessor).
type Config struct {
	// ProcessingMode is processing_mode. Nil means Envoy's defaults:
	// headers SEND, bodies NONE, trailers SKIP.
	ProcessingMode *procv3.ProcessingMode
	// AllowModeOverride is allow_mode_override.
	AllowModeOverride bool
	// LiteralModeOverride emulates Envoy releases that apply every field of
	// a mode_override literally (newer releases treat DEFAULT header and
	// trailer modes as "no change").
	LiteralModeOverride bool
	// ObservabilityMode is observability_mode: messages are sent without
	// waiting and any reply is a violation.
	ObservabilityMode bool
	// SendProtocolConfig sends ProcessingRequest.protocol_config in the
	// first message (recent Envoys always do).
	SendProtocolConfig bool
	// RequestAttributes sends request.time and source.address
	// (request_attributes: [request.time, source.address]).
	RequestAttributes bool
	// RequestTime is request.time (zero: time.Now()). SourceAddress is
	// source.address.
	RequestTime   time.Time
	SourceAddress string
	// FailureModeAllow is failure_mode_allow.
	FailureModeAllow bool
	// MutationRules is mutation_rules.
	MutationRules MutationRules
	// ReceivingNamespaces is metadata_options.receiving_namespaces.untyped.
	ReceivingNamespaces []string
	// AllowContentLengthHeader is allow_content_length_header.
	AllowContentLengthHeader bool
	// BufferLimit is the connection buffer limit (default 1 MiB, Envoy's
	// per_connection_buffer_limit_bytes default): BUFFERED bodies above it
	// fail (413 request, 500 response); BUFFERED_PARTIAL sends up to it.
	BufferLimit int
	// StatusOnError is status_on_error (default 500).
	StatusOnError int
	// MessageTimeout is message_timeout; zero disables the timer. It does
	// not apply to FULL_DUPLEX_STREAMED bodies or observability mode, as in
	// Envoy.
	MessageTimeout time.Duration
}

// MutationRules mirrors config.common.mutation_rules.v3.HeaderMutationRules.
// The zero value is Envoy's default checker: everything may change except
// host, :authority, :scheme, :method and x-envoy-* headers, whose changes
// are ignored.
type MutationRules struct {
	AllowAllRouting bool
	AllowEnvoy      bool
	DisallowSystem  bool
	DisallowAll     bool
	DisallowIsError bool
}

// Exchange is one HTTP request sent through the emulated Envoy.
type Exchange struct {
	Method    string // default POST
	Path      string // default /v1/chat/completions
	Authority string // default upstream.test
	Header    http.Header
	Body      []byte
	// OmitContentLength leaves content-length out of the request headers
	// (a chunked request); by default it is added for a non-empty body.
	OmitContentLength bool
	Trailers          http.Header
	RequestChunker    Chunker // default Whole()
	ResponseChunker   Chunker // default Whole()
	// Upstream is called in-process; UpstreamURL is used when Upstream is
	// nil (the request goes to UpstreamURL + path).
	Upstream    http.Handler
	UpstreamURL string
}

// UpstreamRequest is what reached the upstream.
type UpstreamRequest struct {
	Method   string
	Path     string
	Header   http.Header
	Body     []byte
	Trailers http.Header
}

// Result is what the client saw, plus what happened on the side stream.
type Result struct {
	Status   int
	Header   http.Header
	Body     []byte
	Trailers http.Header

	// Upstream is the request as forwarded; nil when it never left Envoy.
	Upstream *UpstreamRequest
	// Immediate is the processor's immediate response, when it sent one.
	Immediate *extprocv3.ImmediateResponse
	// LocalReply is the details of any local reply (an immediate response,
	// or an error Envoy raised itself: spurious message, rejected mutation,
	// buffer overflow, gRPC failure); "" when the upstream answered.
	LocalReply string
	// Metadata is the dynamic metadata accepted, by namespace, and
	// MetadataOn the kinds of the replies that carried it
	// ("request_headers", "request_body", "immediate_response", ...).
	Metadata   map[string]*structpb.Struct
	MetadataOn []string
	// ModeOverrides counts mode_override fields Envoy honoured.
	ModeOverrides int
	// RequestMode and ResponseMode are the body modes in force at the end.
	RequestMode, ResponseMode procv3.ProcessingMode_BodySendMode
	// Sent and Received are the side-stream messages, in order.
	Sent     []*extprocv3.ProcessingRequest
	Received []*extprocv3.ProcessingResponse
	// Violations lists every protocol-contract breach by the processor
	// (each is also an error path or a silent fix-up in Envoy).
	Violations []string
}

// Envoy is an emulated Envoy ext_proc filter.
type Envoy struct {
	client extprocv3.ExternalProcessorClient
	cfg    Config
}

// New returns an emulated filter talking to client.
func New(client extprocv3.ExternalProcessorClient, cfg Config) *Envoy {
	if cfg.ProcessingMode == nil {
		cfg.ProcessingMode = &procv3.ProcessingMode{}
	} else {
		cfg.ProcessingMode = proto.Clone(cfg.ProcessingMode).(*procv3.ProcessingMode)
	}
	if cfg.BufferLimit <= 0 {
		cfg.BufferLimit = 1 << 20
	}
	if cfg.StatusOnError == 0 {
		cfg.StatusOnError = http.StatusInternalServerError
	}
	return &Envoy{client: client, cfg: cfg}
}

// expected reply kinds (Envoy's callback states).
type expect int

const (
	expReqHeaders expect = iota
	expReqBody
	expReqTrailers
	expRespHeaders
	expRespBody
	expRespTrailers
)

var expNames = [...]string{"request_headers", "request_body", "request_trailers", "response_headers", "response_body", "response_trailers"}

func replyKind(r *extprocv3.ProcessingResponse) string {
	switch r.GetResponse().(type) {
	case *extprocv3.ProcessingResponse_RequestHeaders:
		return "request_headers"
	case *extprocv3.ProcessingResponse_RequestBody:
		return "request_body"
	case *extprocv3.ProcessingResponse_RequestTrailers:
		return "request_trailers"
	case *extprocv3.ProcessingResponse_ResponseHeaders:
		return "response_headers"
	case *extprocv3.ProcessingResponse_ResponseBody:
		return "response_body"
	case *extprocv3.ProcessingResponse_ResponseTrailers:
		return "response_trailers"
	case *extprocv3.ProcessingResponse_ImmediateResponse:
		return "immediate_response"
	case *extprocv3.ProcessingResponse_StreamedImmediateResponse:
		return "streamed_immediate_response"
	}
	return "none"
}

type outcome int

const (
	replied  outcome = iota // a matching reply arrived and may be applied
	bypassed                // processing is complete: continue unprocessed
	ended                   // a local reply ends the exchange
)

type run struct {
	cfg    *Config
	client extprocv3.ExternalProcessorClient
	ctx    context.Context    // the exchange (upstream calls)
	sctx   context.Context    // the side stream
	cancel context.CancelFunc // cancels sctx
	st     extprocv3.ExternalProcessor_ProcessClient
	res    *Result
	mode   *procv3.ProcessingMode

	mu        sync.Mutex // guards res.Sent and st.Send (duplex sender)
	timedOut  atomic.Bool
	pcSent    bool
	attrsSent bool
	complete  bool // Envoy's processing_complete_: the processor is ignored
	local     bool // a local reply was sent
}

// Do drives one exchange. The error reports bad input or an unreachable
// upstream; every side-stream problem shows in the Result the way Envoy
// would surface it (a local reply, or processing continuing unprocessed).
func (e *Envoy) Do(ctx context.Context, ex *Exchange) (*Result, error) {
	if ex.Upstream == nil && ex.UpstreamURL == "" {
		return nil, errors.New("envoytest: Exchange needs Upstream or UpstreamURL")
	}
	m := e.cfg.ProcessingMode
	for _, bm := range []procv3.ProcessingMode_BodySendMode{m.GetRequestBodyMode(), m.GetResponseBodyMode()} {
		if bm == procv3.ProcessingMode_GRPC {
			return nil, errors.New("envoytest: GRPC body mode is not emulated")
		}
	}
	if m.GetRequestBodyMode() == procv3.ProcessingMode_FULL_DUPLEX_STREAMED && m.GetRequestTrailerMode() != procv3.ProcessingMode_SEND ||
		m.GetResponseBodyMode() == procv3.ProcessingMode_FULL_DUPLEX_STREAMED && m.GetResponseTrailerMode() != procv3.ProcessingMode_SEND {
		// processing_mode.proto: "The corresponding trailer mode has to be
		// set to SEND"; Envoy refuses the configuration otherwise.
		return nil, errors.New("envoytest: FULL_DUPLEX_STREAMED needs the trailer mode of its direction set to SEND")
	}
	sctx, cancel := context.WithCancel(ctx)
	r := &run{cfg: &e.cfg, client: e.client, ctx: ctx, sctx: sctx, cancel: cancel,
		res: &Result{Metadata: map[string]*structpb.Struct{}}, mode: proto.Clone(m).(*procv3.ProcessingMode)}
	defer r.close()

	hdr := &headerList{}
	method := cmp(ex.Method, http.MethodPost)
	path := cmp(ex.Path, "/v1/chat/completions")
	hdr.add(":authority", cmp(ex.Authority, "upstream.test"))
	hdr.add(":path", path)
	hdr.add(":method", method)
	hdr.add(":scheme", "http")
	for _, p := range fromHTTP(ex.Header).kv {
		hdr.add(p[0], p[1])
	}
	if _, ok := hdr.get("content-length"); !ok && len(ex.Body) > 0 && !ex.OmitContentLength {
		hdr.add("content-length", strconv.Itoa(len(ex.Body)))
	}
	var trl *headerList
	if len(ex.Trailers) > 0 {
		trl = fromHTTP(ex.Trailers)
	}
	body := r.path(true, hdr, ex.Body, chunker(ex.RequestChunker)(ex.Body), trl)
	if r.local {
		return r.finish(), nil
	}

	status, rh, rbody, rtrl, err := r.forward(ex, hdr, body, trl)
	if err != nil {
		return nil, err
	}
	rh.kv = append([][2]string{{":status", strconv.Itoa(status)}}, rh.kv...)
	rbody = r.path(false, rh, rbody, chunker(ex.ResponseChunker)(rbody), rtrl)
	if r.local {
		return r.finish(), nil
	}
	st, _ := rh.get(":status")
	r.res.Status, _ = strconv.Atoi(st)
	r.res.Header = rh.http()
	r.res.Body = rbody
	if rtrl != nil {
		r.res.Trailers = rtrl.http()
	}
	if cl, ok := rh.get("content-length"); ok {
		if n, err := strconv.Atoi(cl); err != nil || n != len(rbody) {
			r.violate("response content-length %q does not match the %d-byte body the client receives", cl, len(rbody))
		}
	}
	return r.finish(), nil
}

func join(chunks [][]byte) []byte {
	var out []byte
	for _, c := range chunks {
		out = append(out, c...)
	}
	return out
}

func cmp(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func chunker(c Chunker) Chunker {
	if c == nil {
		return Whole()
	}
	return c
}

func (r *run) finish() *Result {
	r.res.RequestMode = r.mode.GetRequestBodyMode()
	r.res.ResponseMode = r.mode.GetResponseBodyMode()
	return r.res
}

func (r *run) violate(format string, args ...any) {
	r.res.Violations = append(r.res.Violations, fmt.Sprintf(format, args...))
}

// close ends the side stream the way Envoy does (half-close) and checks the
// processor sends nothing more.
func (r *run) close() {
	defer r.cancel()
	if r.st == nil {
		return
	}
	r.mu.Lock()
	_ = r.st.CloseSend()
	r.mu.Unlock()
	for {
		m, err := r.st.Recv()
		if err != nil {
			return
		}
		r.res.Received = append(r.res.Received, m)
		if !r.complete || r.cfg.ObservabilityMode {
			r.violate("unexpected %s reply after the exchange", replyKind(m))
		}
	}
}

func (r *run) open() error {
	if r.st != nil {
		return nil
	}
	st, err := r.client.Process(r.sctx)
	if err != nil {
		return err
	}
	r.st = st
	return nil
}

// send adds what Envoy puts on a message (protocol_config on the first one,
// request attributes on the first request-path one, the observability flag)
// and sends it.
func (r *run) send(m *extprocv3.ProcessingRequest, request bool) error {
	if err := r.open(); err != nil {
		return err
	}
	if r.cfg.ObservabilityMode {
		m.ObservabilityMode = true
	} else if r.cfg.SendProtocolConfig && !r.pcSent {
		r.pcSent = true
		m.ProtocolConfig = &extprocv3.ProtocolConfiguration{
			RequestBodyMode:  r.mode.GetRequestBodyMode(),
			ResponseBodyMode: r.mode.GetResponseBodyMode(),
		}
	}
	if request && r.cfg.RequestAttributes && !r.attrsSent {
		r.attrsSent = true
		t := r.cfg.RequestTime
		if t.IsZero() {
			t = time.Now()
		}
		m.Attributes = map[string]*structpb.Struct{"envoy.filters.http.ext_proc": {Fields: map[string]*structpb.Value{
			"request.time":   structpb.NewStringValue(t.UTC().Format(time.RFC3339Nano)),
			"source.address": structpb.NewStringValue(r.cfg.SourceAddress),
		}}}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.res.Sent = append(r.res.Sent, m)
	return r.st.Send(m)
}

// recv waits for one reply, bounded by message_timeout when it applies.
func (r *run) recv(timed bool) (*extprocv3.ProcessingResponse, error) {
	if timed && r.cfg.MessageTimeout > 0 {
		t := time.AfterFunc(r.cfg.MessageTimeout, func() {
			r.timedOut.Store(true)
			r.cancel()
		})
		defer t.Stop()
	}
	m, err := r.st.Recv()
	if err == nil {
		r.res.Received = append(r.res.Received, m)
	}
	return m, err
}

// await waits for the reply to the message just sent (callback state exp)
// and classifies it as Envoy's onReceiveMessage does.
func (r *run) await(exp expect, timed bool) (*extprocv3.ProcessingResponse, outcome) {
	if r.complete {
		return nil, bypassed
	}
	for {
		m, err := r.recv(timed)
		if err != nil {
			return nil, r.streamFailed(err)
		}
		if m.GetOverrideMessageTimeout() != nil {
			continue // "ignores other fields in the response"
		}
		header := exp == expReqHeaders || exp == expRespHeaders
		if m.GetModeOverride() != nil {
			r.modeOverride(m.GetModeOverride(), header)
		}
		kind := replyKind(m)
		r.acceptMetadata(m, kind)
		if ir := m.GetImmediateResponse(); ir != nil {
			r.immediate(ir)
			return nil, ended
		}
		if kind != expNames[exp] {
			return nil, r.spurious("%s reply while waiting for %s", kind, expNames[exp])
		}
		return m, replied
	}
}

func (r *run) streamFailed(err error) outcome {
	if errors.Is(err, io.EOF) {
		// onGrpcClose: "Successful close. We can ignore the stream for the
		// rest of our request and response processing."
		r.complete = true
		return bypassed
	}
	if r.timedOut.Load() {
		// message_timeout fired.
		if r.cfg.FailureModeAllow {
			r.complete = true
			return bypassed
		}
		r.localReply(http.StatusGatewayTimeout, nil, nil, "ext_proc_error_per-message_timeout_exceeded")
		return ended
	}
	if r.cfg.FailureModeAllow {
		r.complete = true
		return bypassed
	}
	r.localReply(r.cfg.StatusOnError, nil, nil, fmt.Sprintf("ext_proc_error_gRPC_error_%d", status.Code(err)))
	return ended
}

// spurious handles a reply that does not match the callback state: Envoy
// fails open with failure_mode_allow, else answers with status_on_error.
func (r *run) spurious(format string, args ...any) outcome {
	msg := fmt.Sprintf(format, args...)
	r.violate("spurious message: %s", msg)
	if r.cfg.FailureModeAllow {
		r.complete = true
		return bypassed
	}
	r.localReply(r.cfg.StatusOnError, nil, nil, "spurious_message")
	return ended
}

// mutationFailed is handleErrorResponse: a rejected mutation always ends
// the exchange with status_on_error.
func (r *run) mutationFailed(err error) {
	r.violate("rejected mutation: %v", err)
	r.localReply(r.cfg.StatusOnError, nil, nil, strings.ReplaceAll(err.Error(), " ", "_"))
}

func (r *run) modeOverride(mo *procv3.ProcessingMode, header bool) {
	cm := r.cfg.ProcessingMode
	if !r.cfg.AllowModeOverride || !header ||
		cm.GetRequestBodyMode() == procv3.ProcessingMode_FULL_DUPLEX_STREAMED ||
		cm.GetResponseBodyMode() == procv3.ProcessingMode_FULL_DUPLEX_STREAMED {
		return // ignored by Envoy
	}
	var next *procv3.ProcessingMode
	if r.cfg.LiteralModeOverride {
		next = proto.Clone(mo).(*procv3.ProcessingMode)
	} else {
		// effectiveModeOverride: DEFAULT header/trailer modes keep the
		// filter's configuration; body modes are always explicit.
		next = proto.Clone(cm).(*procv3.ProcessingMode)
		if mo.GetRequestHeaderMode() != procv3.ProcessingMode_DEFAULT {
			next.RequestHeaderMode = mo.GetRequestHeaderMode()
		}
		if mo.GetResponseHeaderMode() != procv3.ProcessingMode_DEFAULT {
			next.ResponseHeaderMode = mo.GetResponseHeaderMode()
		}
		if mo.GetRequestTrailerMode() != procv3.ProcessingMode_DEFAULT {
			next.RequestTrailerMode = mo.GetRequestTrailerMode()
		}
		if mo.GetResponseTrailerMode() != procv3.ProcessingMode_DEFAULT {
			next.ResponseTrailerMode = mo.GetResponseTrailerMode()
		}
		next.RequestBodyMode = mo.GetRequestBodyMode()
		next.ResponseBodyMode = mo.GetResponseBodyMode()
	}
	r.mode = next
	r.res.ModeOverrides++
}

func (r *run) acceptMetadata(m *extprocv3.ProcessingResponse, kind string) {
	dm := m.GetDynamicMetadata()
	if dm == nil {
		return
	}
	accepted := false
	for ns, v := range dm.GetFields() {
		if !slices.Contains(r.cfg.ReceivingNamespaces, ns) {
			continue // "namespace not configured for receiving"
		}
		s := v.GetStructValue()
		if s == nil {
			continue
		}
		cur := r.res.Metadata[ns]
		if cur == nil {
			cur = &structpb.Struct{Fields: map[string]*structpb.Value{}}
			r.res.Metadata[ns] = cur
		}
		for k, fv := range s.GetFields() {
			cur.Fields[k] = fv
		}
		accepted = true
	}
	if accepted {
		r.res.MetadataOn = append(r.res.MetadataOn, kind)
	}
}

func (r *run) immediate(ir *extprocv3.ImmediateResponse) {
	r.res.Immediate = ir
	code := int(ir.GetStatus().GetCode())
	if code < 200 {
		code = 200 // DefaultImmediateStatus; invalid codes are ignored
	}
	r.localReply(code, ir.GetBody(), ir.GetHeaders(), strings.ReplaceAll(ir.GetDetails(), " ", "_"))
}

// localReply is sendLocalReply: the body as text/plain with its length,
// then the processor's header mutations (errors only logged by Envoy).
func (r *run) localReply(code int, body []byte, hm *extprocv3.HeaderMutation, details string) {
	h := &headerList{}
	if len(body) > 0 {
		h.set("content-type", "text/plain")
	}
	h.set("content-length", strconv.Itoa(len(body)))
	if hm != nil {
		if err := r.applyHeaderMutation(hm, h, false); err != nil {
			r.violate("immediate response header mutation: %v", err)
		}
	}
	r.res.Status = code
	r.res.Header = h.http()
	r.res.Body = body
	r.res.LocalReply = details
	r.local = true
	r.complete = true
}

type checkResult int

const (
	checkOK checkResult = iota
	checkIgnore
	checkFail
)

func (r *run) check(key string) checkResult {
	mr := r.cfg.MutationRules
	deny := mr.DisallowAll ||
		(!mr.AllowAllRouting && (key == "host" || key == ":authority" || key == ":scheme" || key == ":method")) ||
		(!mr.AllowEnvoy && strings.HasPrefix(key, "x-envoy")) ||
		(mr.DisallowSystem && strings.HasPrefix(key, ":"))
	switch {
	case !deny:
		return checkOK
	case mr.DisallowIsError:
		return checkFail
	}
	return checkIgnore
}

// applyHeaderMutation is MutationUtils::applyHeaderMutations.
func (r *run) applyHeaderMutation(hm *extprocv3.HeaderMutation, h *headerList, skipContentLength bool) error {
	for _, k := range hm.GetRemoveHeaders() {
		if !validName(k) {
			return errors.New("invalid character in remove_headers mutation")
		}
		k = strings.ToLower(k)
		if strings.HasPrefix(k, ":") || k == "host" {
			continue // "Attempts to remove system headers ... will be ignored"
		}
		switch r.check(k) {
		case checkOK:
			h.remove(k)
		case checkFail:
			return fmt.Errorf("invalid attempt to remove %s", k)
		}
	}
	for _, o := range hm.GetSetHeaders() {
		hv := o.GetHeader()
		if hv == nil {
			continue
		}
		k := strings.ToLower(hv.GetKey())
		if skipContentLength && k == "content-length" {
			continue
		}
		if hv.GetValue() != "" && len(hv.GetRawValue()) > 0 {
			return errors.New("only one of value or raw_value in the HeaderValue message should be set")
		}
		if hv.GetValue() != "" {
			r.violate("header %q set with value only: Envoy reads raw_value and sets it empty", k)
		}
		v := string(hv.GetRawValue())
		if !validName(k) || !validValue(v) {
			return errors.New("invalid character in set_headers mutation")
		}
		switch r.check(k) {
		case checkOK:
			if o.GetAppend().GetValue() { // "defaults to false when used in this message"
				h.add(k, v)
			} else {
				h.set(k, v)
			}
		case checkFail:
			return fmt.Errorf("invalid attempt to modify %s", k)
		}
	}
	return nil
}

// applyBody applies a non-streamed body mutation to a chunk.
func (r *run) applyBody(bm *extprocv3.BodyMutation, chunk []byte) ([]byte, bool) {
	switch m := bm.GetMutation().(type) {
	case nil:
		return chunk, true
	case *extprocv3.BodyMutation_Body:
		return m.Body, true
	case *extprocv3.BodyMutation_ClearBody:
		if m.ClearBody {
			return nil, true
		}
		return chunk, true
	}
	return nil, false // streamed_response outside FULL_DUPLEX_STREAMED
}

func (r *run) bodyMode(request bool) procv3.ProcessingMode_BodySendMode {
	if request {
		return r.mode.GetRequestBodyMode()
	}
	return r.mode.GetResponseBodyMode()
}

func (r *run) sendHeaders(request bool) bool {
	if request {
		return r.mode.GetRequestHeaderMode() != procv3.ProcessingMode_SKIP
	}
	return r.mode.GetResponseHeaderMode() != procv3.ProcessingMode_SKIP
}

func (r *run) sendTrailers(request bool) bool {
	if request {
		return r.mode.GetRequestTrailerMode() == procv3.ProcessingMode_SEND
	}
	return r.mode.GetResponseTrailerMode() == procv3.ProcessingMode_SEND
}

// shouldRemoveContentLength is ProcessorState::shouldRemoveContentLength:
// in these modes Envoy strips content-length after sending the headers and
// skips content-length in set_headers, unless allow_content_length_header
// makes the processor responsible for it.
func (r *run) shouldRemoveContentLength(request bool) bool {
	if r.cfg.AllowContentLengthHeader {
		return false
	}
	switch r.bodyMode(request) {
	case procv3.ProcessingMode_STREAMED, procv3.ProcessingMode_BUFFERED_PARTIAL, procv3.ProcessingMode_FULL_DUPLEX_STREAMED:
		return true
	case procv3.ProcessingMode_BUFFERED:
		return !r.sendHeaders(request)
	}
	return false
}

func headersMsg(request bool, h *headerList, eos bool) *extprocv3.ProcessingRequest {
	hh := &extprocv3.HttpHeaders{Headers: h.proto(), EndOfStream: eos}
	if request {
		return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: hh}}
	}
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: hh}}
}

func bodyMsg(request bool, b []byte, eos bool) *extprocv3.ProcessingRequest {
	hb := &extprocv3.HttpBody{Body: b, EndOfStream: eos}
	if request {
		return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: hb}}
	}
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: hb}}
}

func trailersMsg(request bool, t *headerList) *extprocv3.ProcessingRequest {
	ht := &extprocv3.HttpTrailers{Trailers: t.proto()}
	if request {
		return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestTrailers{RequestTrailers: ht}}
	}
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: ht}}
}

func exps(request bool) (h, b, t expect) {
	if request {
		return expReqHeaders, expReqBody, expReqTrailers
	}
	return expRespHeaders, expRespBody, expRespTrailers
}

func commonOf(m *extprocv3.ProcessingResponse) *extprocv3.CommonResponse {
	switch x := m.GetResponse().(type) {
	case *extprocv3.ProcessingResponse_RequestHeaders:
		return x.RequestHeaders.GetResponse()
	case *extprocv3.ProcessingResponse_ResponseHeaders:
		return x.ResponseHeaders.GetResponse()
	case *extprocv3.ProcessingResponse_RequestBody:
		return x.RequestBody.GetResponse()
	case *extprocv3.ProcessingResponse_ResponseBody:
		return x.ResponseBody.GetResponse()
	}
	return nil
}

func trailerMutationOf(m *extprocv3.ProcessingResponse) *extprocv3.HeaderMutation {
	switch x := m.GetResponse().(type) {
	case *extprocv3.ProcessingResponse_RequestTrailers:
		return x.RequestTrailers.GetHeaderMutation()
	case *extprocv3.ProcessingResponse_ResponseTrailers:
		return x.ResponseTrailers.GetHeaderMutation()
	}
	return nil
}

// path runs one direction (request or response) through the filter and
// returns the body that continues downstream of it.
func (r *run) path(request bool, h *headerList, body []byte, chunks [][]byte, trl *headerList) []byte {
	if r.complete {
		return body
	}
	if r.cfg.ObservabilityMode {
		return r.observe(request, h, body, chunks, trl)
	}
	expH, _, _ := exps(request)
	eos := len(body) == 0 && trl == nil
	mode := r.bodyMode(request)
	duplex := mode == procv3.ProcessingMode_FULL_DUPLEX_STREAMED && !eos
	replaced := false
	if r.sendHeaders(request) {
		if err := r.send(headersMsg(request, h, eos), request); err != nil {
			if r.streamFailed(err) == ended {
				return nil
			}
			return body
		}
		// decodeHeaders/encodeHeaders strip content-length right after
		// sending headers, before any reply, by the mode in force then.
		if r.shouldRemoveContentLength(request) {
			h.remove("content-length")
		}
		if duplex {
			return r.duplex(request, h, chunks, trl, true)
		}
		m, out := r.await(expH, true)
		switch out {
		case ended:
			return nil
		case replied:
			cr := commonOf(m)
			if err := r.applyHeaderMutation(cr.GetHeaderMutation(), h, r.shouldRemoveContentLength(request)); err != nil {
				r.mutationFailed(err)
				return nil
			}
			if cr.GetStatus() == extprocv3.CommonResponse_CONTINUE_AND_REPLACE {
				// Replace the whole message; nothing more is sent.
				if bm := cr.GetBodyMutation(); bm != nil {
					h.remove("content-length")
					nb, ok := r.applyBody(bm, nil)
					if !ok {
						r.spurious("streamed_response in a headers reply")
						return nil
					}
					body, replaced = nb, true
				}
				return body
			}
		}
	} else if r.shouldRemoveContentLength(request) {
		h.remove("content-length")
	}
	if eos || r.complete || replaced {
		return body
	}
	mode = r.bodyMode(request) // a mode_override may have changed it
	var out []byte
	switch mode {
	case procv3.ProcessingMode_NONE:
		out = body
	case procv3.ProcessingMode_BUFFERED:
		out = r.buffered(request, h, body, trl)
	case procv3.ProcessingMode_STREAMED:
		out = r.streamed(request, chunks, trl)
	case procv3.ProcessingMode_BUFFERED_PARTIAL:
		out = r.partial(request, h, body, chunks, trl)
	case procv3.ProcessingMode_FULL_DUPLEX_STREAMED:
		return r.duplex(request, h, chunks, trl, false)
	}
	if r.local {
		return nil
	}
	r.trailers(request, trl)
	return out
}

// bodyReply sends sent as one body message (BUFFERED sends the whole body
// so, BUFFERED_PARTIAL what it has queued), awaits the reply and applies its
// header mutation. With done the caller returns ret at once: nil when the
// exchange ended (a local reply, or a header mutation Envoy rejects), body
// when Envoy continues without the processor. Otherwise the caller applies
// cr's body mutation.
func (r *run) bodyReply(request bool, h *headerList, body, sent []byte, eos bool) (cr *extprocv3.CommonResponse, ret []byte, done bool) {
	_, expB, _ := exps(request)
	if err := r.send(bodyMsg(request, sent, eos), request); err != nil {
		if r.streamFailed(err) == ended {
			return nil, nil, true
		}
		return nil, body, true
	}
	m, out := r.await(expB, true)
	if out != replied {
		return nil, body, true
	}
	cr = commonOf(m)
	if hm := cr.GetHeaderMutation(); hm != nil {
		if err := r.applyHeaderMutation(hm, h, r.shouldRemoveContentLength(request)); err != nil {
			r.mutationFailed(err)
			return nil, nil, true
		}
	}
	return cr, nil, false
}

func (r *run) buffered(request bool, h *headerList, body []byte, trl *headerList) []byte {
	if len(body) > r.cfg.BufferLimit {
		// StopIterationAndBuffer past the buffer limit: Envoy's own reply.
		if request {
			r.localReply(http.StatusRequestEntityTooLarge, []byte("Payload Too Large"), nil, "request_payload_too_large")
		} else {
			r.localReply(http.StatusInternalServerError, []byte("Internal Server Error"), nil, "response_payload_too_large")
		}
		return nil
	}
	cr, ret, done := r.bodyReply(request, h, body, body, trl == nil)
	if done {
		return ret
	}
	if bm := cr.GetBodyMutation(); bm != nil {
		nb, ok := r.applyBody(bm, body)
		if !ok {
			r.spurious("streamed_response while the body mode is BUFFERED")
			return body
		}
		if cl, ok := h.get("content-length"); ok {
			if n, err := strconv.Atoi(cl); err == nil && n != len(bm.GetBody()) {
				r.mutationFailed(fmt.Errorf("mismatch between content length %d and the length of the mutated body %d", n, len(bm.GetBody())))
				return nil
			}
		}
		body = nb
	}
	return body
}

func (r *run) streamed(request bool, chunks [][]byte, trl *headerList) []byte {
	_, expB, _ := exps(request)
	var out []byte
	for i, c := range chunks {
		if r.complete {
			out = append(out, c...)
			continue
		}
		if err := r.send(bodyMsg(request, c, i == len(chunks)-1 && trl == nil), request); err != nil {
			if r.streamFailed(err) == ended {
				return nil
			}
			out = append(out, c...)
			continue
		}
		m, res := r.await(expB, true)
		switch res {
		case ended:
			return nil
		case bypassed:
			out = append(out, c...) // clearAsyncState injects the queued chunk
			continue
		}
		nb, ok := r.applyBody(commonOf(m).GetBodyMutation(), c)
		if !ok {
			if r.spurious("streamed_response while the body mode is STREAMED") == ended {
				return nil
			}
			nb = c
		}
		out = append(out, nb...)
	}
	return out
}

func (r *run) partial(request bool, h *headerList, body []byte, chunks [][]byte, trl *headerList) []byte {
	// Chunks queue up until end of stream or until the queue exceeds the
	// buffer limit, then everything queued goes in one message.
	n, i := 0, 0
	for i < len(chunks) {
		n += len(chunks[i])
		i++
		if n > r.cfg.BufferLimit {
			break
		}
	}
	sent, rest := body[:n], body[n:]
	eos := i == len(chunks) && trl == nil
	cr, ret, done := r.bodyReply(request, h, body, sent, eos)
	if done {
		return ret
	}
	nb, ok := r.applyBody(cr.GetBodyMutation(), sent)
	if !ok {
		if r.spurious("streamed_response while the body mode is BUFFERED_PARTIAL") == ended {
			return nil
		}
		nb = sent
	}
	return append(append([]byte(nil), nb...), rest...)
}

// duplex runs a FULL_DUPLEX_STREAMED body: chunks (and trailers) are sent
// without waiting while replies are collected; the headers reply must come
// first, then streamed_response chunks until end_of_stream (or the trailers
// reply when trailers were sent).
func (r *run) duplex(request bool, h *headerList, chunks [][]byte, trl *headerList, awaitHeaders bool) []byte {
	expH, expB, expT := exps(request)
	sendTrl := trl != nil
	if err := r.open(); err != nil {
		if r.streamFailed(err) == ended {
			return nil
		}
		return join(chunks)
	}
	var wg sync.WaitGroup
	finished := false
	defer func() {
		if !finished {
			r.cancel() // unblock the sender: this side stream is over
		}
		wg.Wait()
	}()
	sendErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i, c := range chunks {
			if err := r.send(bodyMsg(request, c, i == len(chunks)-1 && !sendTrl), request); err != nil {
				sendErr <- err
				return
			}
		}
		if sendTrl {
			if err := r.send(trailersMsg(request, trl), request); err != nil {
				sendErr <- err
			}
		}
	}()
	var out []byte
	if awaitHeaders {
		m, res := r.await(expH, false)
		switch res {
		case ended:
			return nil
		case bypassed:
			return r.duplexLost()
		}
		if err := r.applyHeaderMutation(commonOf(m).GetHeaderMutation(), h, r.shouldRemoveContentLength(request)); err != nil {
			r.mutationFailed(err)
			return nil
		}
	}
	bodyDone, trlDone := false, !sendTrl
	for !trlDone || !(bodyDone || sendTrl) {
		m, err := r.recv(false)
		if err != nil {
			if r.streamFailed(err) == ended {
				return nil
			}
			return r.duplexLost()
		}
		if m.GetModeOverride() != nil {
			r.modeOverride(m.GetModeOverride(), false)
		}
		kind := replyKind(m)
		r.acceptMetadata(m, kind)
		if ir := m.GetImmediateResponse(); ir != nil {
			r.immediate(ir)
			return nil
		}
		switch kind {
		case expNames[expB]:
			sr := commonOf(m).GetBodyMutation().GetStreamedResponse()
			if sr == nil {
				if r.spurious("normal body mutation while the body mode is FULL_DUPLEX_STREAMED") == ended {
					return nil
				}
				return r.duplexLost()
			}
			if bodyDone {
				r.violate("streamed_response after end_of_stream")
			}
			out = append(out, sr.GetBody()...)
			if sr.GetEndOfStream() {
				bodyDone = true
			}
		case expNames[expT]:
			if !sendTrl {
				if r.spurious("trailers reply without trailers") == ended {
					return nil
				}
				return r.duplexLost()
			}
			if err := r.applyHeaderMutation(trailerMutationOf(m), trl, false); err != nil {
				r.mutationFailed(err)
				return nil
			}
			trlDone = true
			bodyDone = true
		default:
			if r.spurious("%s reply during a FULL_DUPLEX_STREAMED body", kind) == ended {
				return nil
			}
			return r.duplexLost()
		}
	}
	finished = true
	wg.Wait()
	select {
	case err := <-sendErr:
		r.violate("sending the body failed: %v", err)
	default:
	}
	return out
}

// duplexLost handles a side stream that failed open in the middle of a
// FULL_DUPLEX_STREAMED body. Envoy drains each chunk once it is sent to the
// processor, so there is nothing left to continue with: it cannot fail open
// (Filter::failureModeAllow is false once a duplex body was received) and
// answers status_on_error.
func (r *run) duplexLost() []byte {
	r.violate("side stream ended during a FULL_DUPLEX_STREAMED body")
	r.localReply(r.cfg.StatusOnError, nil, nil, "ext_proc_error_full_duplex_stream_lost")
	return nil
}

func (r *run) trailers(request bool, trl *headerList) {
	if trl == nil || r.complete || !r.sendTrailers(request) {
		return
	}
	_, _, expT := exps(request)
	if err := r.send(trailersMsg(request, trl), request); err != nil {
		r.streamFailed(err)
		return
	}
	m, out := r.await(expT, true)
	if out != replied {
		return
	}
	if err := r.applyHeaderMutation(trailerMutationOf(m), trl, false); err != nil {
		r.mutationFailed(err)
	}
}

// observe sends one direction in observability mode: headers, the body
// only in STREAMED mode, trailers when configured; nothing is awaited.
func (r *run) observe(request bool, h *headerList, body []byte, chunks [][]byte, trl *headerList) []byte {
	eos := len(body) == 0 && trl == nil
	if r.sendHeaders(request) {
		if err := r.send(headersMsg(request, h, eos), request); err != nil {
			r.streamFailed(err)
			return body
		}
	}
	if !eos && r.bodyMode(request) == procv3.ProcessingMode_STREAMED {
		for i, c := range chunks {
			if err := r.send(bodyMsg(request, c, i == len(chunks)-1 && trl == nil), request); err != nil {
				r.streamFailed(err)
				return body
			}
		}
	}
	if trl != nil && r.sendTrailers(request) {
		if err := r.send(trailersMsg(request, trl), request); err != nil {
			r.streamFailed(err)
		}
	}
	return body
}

// forward sends the request upstream and returns the response.
func (r *run) forward(ex *Exchange, h *headerList, body []byte, trl *headerList) (int, *headerList, []byte, *headerList, error) {
	method, _ := h.get(":method")
	path, _ := h.get(":path")
	host, _ := h.get(":authority")
	hh := h.http()
	if cl, ok := h.get("content-length"); ok {
		if n, err := strconv.Atoi(cl); err != nil || n != len(body) {
			r.violate("request content-length %q does not match the %d-byte body forwarded upstream", cl, len(body))
		}
	}
	up := &UpstreamRequest{Method: method, Path: path, Header: hh.Clone(), Body: bytes.Clone(body)}
	if trl != nil {
		up.Trailers = trl.http()
	}
	r.res.Upstream = up
	var resp *http.Response
	if ex.Upstream != nil {
		req, err := http.NewRequestWithContext(r.ctx, method, "http://"+host+path, bytes.NewReader(body))
		if err != nil {
			return 0, nil, nil, nil, err
		}
		req.Header = hh
		req.Host = host
		req.ContentLength = int64(len(body))
		req.RequestURI = path
		if trl != nil {
			req.Trailer = trl.http()
		}
		rec := httptest.NewRecorder()
		ex.Upstream.ServeHTTP(rec, req)
		resp = rec.Result()
	} else {
		req, err := http.NewRequestWithContext(r.ctx, method, strings.TrimSuffix(ex.UpstreamURL, "/")+path, bytes.NewReader(body))
		if err != nil {
			return 0, nil, nil, nil, err
		}
		req.Header = hh
		req.Host = host
		// The upstream's content-encoding reaches the filter untouched.
		c := &http.Client{Transport: &http.Transport{DisableCompression: true}}
		resp, err = c.Do(req)
		if err != nil {
			return 0, nil, nil, nil, err
		}
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, nil, nil, err
	}
	rh := fromHTTP(resp.Header)
	var rt *headerList
	if len(resp.Trailer) > 0 {
		rt = fromHTTP(resp.Trailer)
	}
	return resp.StatusCode, rh, rb, rt, nil
}
