package envoytest

import (
	"net/http"
	"time"

	procv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/distillguard/distillguard/extproc/keys"
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
	// InitialMetadata is sent as the side stream's gRPC initial metadata:
	// the grpc_service's initial_metadata, and the trace context Envoy's
	// tracer injects there when tracing is on (traceparent for the
	// OpenTelemetry tracer, x-b3-* for Zipkin; envoyproxy/envoy#33665).
	InitialMetadata metadata.MD
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
	// Reset: the processor answered with an immediate response after the
	// response headers had gone downstream, so Envoy reset the stream: the
	// client got the status and whatever body bytes were sent before, then
	// an error (Status and Body are what it had received by then).
	Reset bool
}

// ShippedConfig is the filter configuration envoy/envoy.yaml (and the Helm
// chart's attachments) give the ext_proc filter: request and response
// headers sent, BUFFERED request bodies, STREAMED response bodies,
// allow_mode_override, protocol config, the request attributes
// (request.time, source.address) and the distillguard metadata namespace,
// with Envoy's default 16 MiB buffer limit. sourceAddress is the
// downstream address Envoy reports.
func ShippedConfig(sourceAddress string) Config {
	return Config{
		ProcessingMode: &procv3.ProcessingMode{
			RequestHeaderMode:  procv3.ProcessingMode_SEND,
			ResponseHeaderMode: procv3.ProcessingMode_SEND,
			RequestBodyMode:    procv3.ProcessingMode_BUFFERED,
			ResponseBodyMode:   procv3.ProcessingMode_STREAMED,
		},
		AllowModeOverride:   true,
		SendProtocolConfig:  true,
		RequestAttributes:   true,
		SourceAddress:       sourceAddress,
		ReceivingNamespaces: []string{keys.MetadataNamespace},
		BufferLimit:         16 << 20,
	}
}
