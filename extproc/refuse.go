package extproc

import (
	"encoding/json"
	"strconv"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/distillguard/distillguard/extproc/keys"
	"github.com/distillguard/distillguard/mutate"
)

// Refusal reasons beyond mutate's (mutate.RequestError.Reason), as counted
// in distillguard_refusals{reason}.
const (
	refuseDuplicateCredential = "duplicate_credential"  // a credential header twice
	refuseUnattributable      = "unattributable"        // no credential and no client address
	refuseOverloaded          = "overloaded"            // max_held_total_bytes reached
	refuseBodyNotSent         = "body_not_sent"         // request body mode NONE on a guarded route
	refuseResponseTooLarge    = "response_too_large"    // a JSON response beyond max_body_bytes
	refuseResponseEncoding    = "response_encoding"     // a gzip response that does not decode
	refuseResponseUnreadable  = "response_invalid_json" // a JSON response with logprobs that does not parse
)

// refusalCode is the OpenAI-style error code of a refusal.
func refusalCode(reason string) string {
	switch reason {
	case mutate.RefuseTooLarge:
		return "request_too_large"
	case mutate.RefuseMediaType, mutate.RefuseContentEnc:
		return "unsupported_media_type"
	case refuseOverloaded:
		return "overloaded"
	case refuseUnattributable:
		return "missing_credentials"
	case refuseResponseTooLarge, refuseResponseEncoding, refuseResponseUnreadable:
		return "bad_upstream_response"
	}
	return "invalid_request_body"
}

func refusalType(status int) string {
	switch {
	case status == 401:
		return "authentication_error"
	case status >= 500:
		return "server_error"
	}
	return "invalid_request_error"
}

// refuse answers the exchange immediately with e: an OpenAI-style error
// body (https://platform.openai.com/docs/guides/error-codes) naming the
// problem, retry-after on 503, details "distillguard_refused_<reason>",
// and the reason in the dynamic metadata. It works at any point: before
// the response headers went downstream Envoy sends it as a local reply,
// after them Envoy resets the stream (the only honest end of a response
// that cannot be completed).
func (st *stream) refuse(e *mutate.RequestError) *extprocv3.ProcessingResponse {
	body := apiError{Error: apiErrorBody{Message: e.Message, Type: refusalType(e.Status)}}
	code := refusalCode(e.Reason)
	body.Error.Code = &code
	if e.Param != "" {
		p := e.Param
		body.Error.Param = &p
	}
	b, _ := json.Marshal(body) // plain strings: cannot fail
	var m mutation
	m.setHeader("content-type", "application/json")
	if e.Status == 503 {
		m.setHeader("retry-after", "1")
	}
	ir := &extprocv3.ImmediateResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode(e.Status)},
		Headers: m.proto(),
		Body:    b,
		Details: "distillguard_refused_" + e.Reason,
	}
	r := &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: ir}}
	if st.meta == nil && !st.decided {
		st.meta = &structpb.Struct{Fields: map[string]*structpb.Value{keys.MetadataNamespace: structpb.NewStructValue(
			&structpb.Struct{Fields: map[string]*structpb.Value{keys.Refused: structpb.NewStringValue(e.Reason)}})}}
	}
	st.attachMeta(r)
	st.rejected = true
	st.decided = true
	st.rq.buf = nil
	if !st.observe {
		st.srv.m.immediateResponse(st.mctx, e.Status)
		st.srv.m.refusal(st.mctx, e.Reason)
	}
	if st.srv.log.Enabled(st.ctx, levelDebug) {
		st.srv.log.Debug("exchange refused", "stream", st.id, "status", strconv.Itoa(e.Status), "reason", e.Reason, "message", e.Message)
	}
	return r
}

// refusal builds a RequestError for the reasons extproc decides itself.
func refusal(status int, reason, msg string) *mutate.RequestError {
	return &mutate.RequestError{Status: status, Reason: reason, Message: msg}
}
