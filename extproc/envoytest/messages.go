package envoytest

import (
	"strconv"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	procv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/distillguard/distillguard/extproc/keys"
)

// The messages Envoy's ext_proc filter sends, built as it builds them, and
// the decision read back from the replies. The emulator (Envoy.Do), the
// bench load generator and the lab's replay client all use these, so the
// shape of Envoy's side is written once.

// Header is one header as Envoy sends it: the key as given (Envoy
// lower-cases every key) and the value in raw_value (HttpHeaders.headers:
// "The header value is encoded in the raw_value field").
func Header(key, value string) *corev3.HeaderValue {
	return &corev3.HeaderValue{Key: key, RawValue: []byte(value)}
}

// HeaderMap builds a header map from key, value pairs, in order.
func HeaderMap(kv ...string) *corev3.HeaderMap {
	m := &corev3.HeaderMap{Headers: make([]*corev3.HeaderValue, 0, len(kv)/2)}
	for i := 0; i+1 < len(kv); i += 2 {
		m.Headers = append(m.Headers, Header(kv[i], kv[i+1]))
	}
	return m
}

// RequestHeaders is a request_headers message; eos is set when the request
// has no body (HttpHeaders.end_of_stream).
func RequestHeaders(h *corev3.HeaderMap, eos bool) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
		RequestHeaders: &extprocv3.HttpHeaders{Headers: h, EndOfStream: eos}}}
}

// ResponseHeaders is a response_headers message (the upstream's response
// headers, :status first when Envoy forwards them).
func ResponseHeaders(h *corev3.HeaderMap, eos bool) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
		ResponseHeaders: &extprocv3.HttpHeaders{Headers: h, EndOfStream: eos}}}
}

// RequestBody is a request_body message: one chunk, or the whole body in
// BUFFERED mode; eos marks the last one (false when trailers follow).
func RequestBody(b []byte, eos bool) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
		RequestBody: &extprocv3.HttpBody{Body: b, EndOfStream: eos}}}
}

// ResponseBody is a response_body message.
func ResponseBody(b []byte, eos bool) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
		ResponseBody: &extprocv3.HttpBody{Body: b, EndOfStream: eos}}}
}

// RequestTrailers is a request_trailers message.
func RequestTrailers(t *corev3.HeaderMap) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestTrailers{
		RequestTrailers: &extprocv3.HttpTrailers{Trailers: t}}}
}

// ResponseTrailers is a response_trailers message.
func ResponseTrailers(t *corev3.HeaderMap) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseTrailers{
		ResponseTrailers: &extprocv3.HttpTrailers{Trailers: t}}}
}

// ProtocolConfig is ProcessingRequest.protocol_config, which Envoy puts on
// the first message of a stream only: the body modes in force.
func ProtocolConfig(request, response procv3.ProcessingMode_BodySendMode) *extprocv3.ProtocolConfiguration {
	return &extprocv3.ProtocolConfiguration{RequestBodyMode: request, ResponseBodyMode: response}
}

// Attributes is ProcessingRequest.attributes as the filter fills it with
// request_attributes [request.time, source.address] (envoy/envoy.yaml),
// on the first request-path message: request.time is rendered as an RFC
// 3339 timestamp, source.address as ip:port.
func Attributes(requestTime time.Time, sourceAddress string) map[string]*structpb.Struct {
	return map[string]*structpb.Struct{keys.AttributeNamespace: {Fields: map[string]*structpb.Value{
		keys.RequestTime:   structpb.NewStringValue(requestTime.UTC().Format(time.RFC3339Nano)),
		keys.SourceAddress: structpb.NewStringValue(sourceAddress),
	}}}
}

// ReplyKind names the kind of a reply: the ProcessingResponse.response
// case ("request_headers", "response_body", "immediate_response", ...), or
// "none" when it carries none (a standalone mode_override, or a bare
// override_message_timeout).
func ReplyKind(r *extprocv3.ProcessingResponse) string {
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

// Decision is what distillguard told Envoy about a request: its dynamic
// metadata in keys.MetadataNamespace, and the immediate response when it
// answered the request itself.
type Decision struct {
	// Tagged is set once a reply carried metadata in the namespace.
	Tagged  bool
	Verdict string
	Action  string
	Score   float64
	Session string
	Policy  string
	Shadow  bool
	// Signals maps signal names to their contributions.
	Signals map[string]float64
	// Rejected is set when an immediate response answered the request;
	// Status is its HTTP status.
	Rejected bool
	Status   int
}

// Read takes what reply r says about the request into d (fields a reply
// does not carry keep their values) and reports whether r ends the
// exchange: an immediate response.
func (d *Decision) Read(r *extprocv3.ProcessingResponse) (ended bool) {
	d.readMetadata(r.GetDynamicMetadata().GetFields()[keys.MetadataNamespace].GetStructValue())
	ir := r.GetImmediateResponse()
	if ir == nil {
		return false
	}
	d.Rejected, d.Status = true, int(ir.GetStatus().GetCode())
	return true
}

// readMetadata merges the fields of the namespace's struct (nil: absent)
// into d, as Envoy merges the metadata of successive replies key by key.
// The score is a number; a decimal string, as a processor writing its
// metadata through a string-only API would send, is read too.
func (d *Decision) readMetadata(ns *structpb.Struct) {
	if ns == nil {
		return
	}
	d.Tagged = true
	for k, v := range ns.GetFields() {
		switch k {
		case keys.Verdict:
			d.Verdict = v.GetStringValue()
		case keys.Action:
			d.Action = v.GetStringValue()
		case keys.Score:
			d.Score = v.GetNumberValue()
			if s := v.GetStringValue(); s != "" {
				d.Score, _ = strconv.ParseFloat(s, 64)
			}
		case keys.Session:
			d.Session = v.GetStringValue()
		case keys.Policy:
			d.Policy = v.GetStringValue()
		case keys.Shadow:
			d.Shadow = v.GetBoolValue()
		case keys.Signals:
			d.Signals = map[string]float64{}
			for name, c := range v.GetStructValue().GetFields() {
				d.Signals[name] = c.GetNumberValue()
			}
		}
	}
}

// Decision is the decision the exchange's replies carried, as Envoy
// accepted it: the metadata of keys.MetadataNamespace (when the namespace
// is among Config.ReceivingNamespaces) and the immediate response.
func (r *Result) Decision() Decision {
	var d Decision
	d.readMetadata(r.Metadata[keys.MetadataNamespace])
	if r.Immediate != nil {
		d.Rejected, d.Status = true, int(r.Immediate.GetStatus().GetCode())
	}
	return d
}
