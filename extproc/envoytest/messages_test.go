package envoytest

import (
	"context"
	"net/http"
	"reflect"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	procv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// TestMessages: every constructor builds the message Envoy sends, written
// out field by field here.
func TestMessages(t *testing.T) {
	hm := &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: ":path", RawValue: []byte("/v1/x")}, {Key: "a", RawValue: []byte("")}}}
	tm := &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "grpc-status", RawValue: []byte("0")}}}
	body := []byte(`{"x":1}`)
	cases := []struct {
		name      string
		got, want *extprocv3.ProcessingRequest
	}{
		{"request headers", RequestHeaders(HeaderMap(":path", "/v1/x", "a", ""), true),
			&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: hm, EndOfStream: true}}}},
		{"response headers", ResponseHeaders(hm, false),
			&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{Headers: hm}}}},
		{"request body", RequestBody(body, false),
			&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: body}}}},
		{"response body", ResponseBody(body, true),
			&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: body, EndOfStream: true}}}},
		{"request trailers", RequestTrailers(tm),
			&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestTrailers{RequestTrailers: &extprocv3.HttpTrailers{Trailers: tm}}}},
		{"response trailers", ResponseTrailers(tm),
			&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: &extprocv3.HttpTrailers{Trailers: tm}}}},
	}
	for _, tc := range cases {
		if !proto.Equal(tc.got, tc.want) {
			t.Errorf("%s:\n got %v\nwant %v", tc.name, tc.got, tc.want)
		}
	}
	if h := Header("x-a", "b"); h.GetKey() != "x-a" || string(h.GetRawValue()) != "b" || h.GetValue() != "" {
		t.Errorf("Header puts the value in raw_value only: %v", h)
	}
	pc := ProtocolConfig(procv3.ProcessingMode_BUFFERED, procv3.ProcessingMode_FULL_DUPLEX_STREAMED)
	if pc.GetRequestBodyMode() != procv3.ProcessingMode_BUFFERED || pc.GetResponseBodyMode() != procv3.ProcessingMode_FULL_DUPLEX_STREAMED {
		t.Errorf("protocol config %v", pc)
	}
}

// TestAttributes: request.time is an RFC 3339 timestamp in UTC, under the
// ext_proc filter's name.
func TestAttributes(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 8000, time.FixedZone("x", 3600))
	a := Attributes(at, "192.0.2.1:5555")
	want := map[string]*structpb.Struct{"envoy.filters.http.ext_proc": {Fields: map[string]*structpb.Value{
		"request.time":   structpb.NewStringValue("2026-03-04T04:06:07.000008Z"),
		"source.address": structpb.NewStringValue("192.0.2.1:5555"),
	}}}
	if len(a) != 1 || !proto.Equal(a["envoy.filters.http.ext_proc"], want["envoy.filters.http.ext_proc"]) {
		t.Fatalf("attributes %v", a)
	}
}

func TestReplyKind(t *testing.T) {
	cases := map[string]*extprocv3.ProcessingResponse{
		"request_headers":             {Response: &extprocv3.ProcessingResponse_RequestHeaders{}},
		"request_body":                {Response: &extprocv3.ProcessingResponse_RequestBody{}},
		"request_trailers":            {Response: &extprocv3.ProcessingResponse_RequestTrailers{}},
		"response_headers":            {Response: &extprocv3.ProcessingResponse_ResponseHeaders{}},
		"response_body":               {Response: &extprocv3.ProcessingResponse_ResponseBody{}},
		"response_trailers":           {Response: &extprocv3.ProcessingResponse_ResponseTrailers{}},
		"immediate_response":          {Response: &extprocv3.ProcessingResponse_ImmediateResponse{}},
		"streamed_immediate_response": {Response: &extprocv3.ProcessingResponse_StreamedImmediateResponse{}},
		"none":                        {ModeOverride: &procv3.ProcessingMode{}},
	}
	for want, r := range cases {
		if got := ReplyKind(r); got != want {
			t.Errorf("ReplyKind = %q, want %q", got, want)
		}
	}
}

func meta(t *testing.T, fields map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(map[string]any{"distillguard": fields})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestDecisionRead: metadata is merged key by key over the replies, a
// string score is read, other namespaces are ignored, and an immediate
// response ends the exchange with its status.
func TestDecisionRead(t *testing.T) {
	var d Decision
	if d.Read(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{}}) || d.Tagged {
		t.Fatalf("a reply without metadata: %+v", d)
	}
	other, _ := structpb.NewStruct(map[string]any{"other": map[string]any{"verdict": "block"}})
	d.Read(&extprocv3.ProcessingResponse{DynamicMetadata: other})
	if d.Tagged || d.Verdict != "" {
		t.Fatalf("another namespace was read: %+v", d)
	}
	first := &extprocv3.ProcessingResponse{
		Response: &extprocv3.ProcessingResponse_RequestBody{},
		DynamicMetadata: meta(t, map[string]any{
			"verdict": "degrade", "action": "allow", "score": 0.625, "session": "s1", "policy": "default", "shadow": true,
			"signals": map[string]any{"volume": 0.5, "template": 0.125},
		}),
	}
	if d.Read(first) {
		t.Fatal("a body reply ended the exchange")
	}
	want := Decision{Tagged: true, Verdict: "degrade", Action: "allow", Score: 0.625, Session: "s1", Policy: "default", Shadow: true,
		Signals: map[string]float64{"volume": 0.5, "template": 0.125}}
	if !equalDecision(d, want) {
		t.Fatalf("got %+v\nwant %+v", d, want)
	}
	second := &extprocv3.ProcessingResponse{
		Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocv3.ImmediateResponse{
			Status: &typev3.HttpStatus{Code: typev3.StatusCode_TooManyRequests}}},
		DynamicMetadata: meta(t, map[string]any{"verdict": "throttle", "score": "0.75"}),
	}
	if !d.Read(second) {
		t.Fatal("an immediate response did not end the exchange")
	}
	want.Verdict, want.Score, want.Rejected, want.Status = "throttle", 0.75, true, 429
	if !equalDecision(d, want) {
		t.Fatalf("after merge got %+v\nwant %+v", d, want)
	}
}

func equalDecision(a, b Decision) bool { return reflect.DeepEqual(a, b) }

// TestResultDecision: the emulator's result reads the decision from the
// metadata Envoy accepted (receiving namespaces only) and from an
// immediate response.
func TestResultDecision(t *testing.T) {
	md := meta(t, map[string]any{"verdict": "block", "session": "s9", "score": 0.9})
	srv := &script{answer: func(req *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
		if req.GetRequestBody() == nil {
			return []*extprocv3.ProcessingResponse{passthrough(req)}
		}
		return []*extprocv3.ProcessingResponse{{
			DynamicMetadata: md,
			Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocv3.ImmediateResponse{
				Status: &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden}}},
		}}
	}}
	client := dial(t, srv)
	for _, ns := range [][]string{{"distillguard"}, nil} {
		e := New(client, Config{ProcessingMode: mode(procv3.ProcessingMode_BUFFERED, procv3.ProcessingMode_NONE), ReceivingNamespaces: ns})
		res, err := e.Do(context.Background(), &Exchange{Body: []byte(`{}`), Upstream: echo()})
		if err != nil {
			t.Fatal(err)
		}
		d := res.Decision()
		if res.Status != http.StatusForbidden || !d.Rejected || d.Status != http.StatusForbidden {
			t.Fatalf("namespaces %v: status %d, decision %+v", ns, res.Status, d)
		}
		if tagged := ns != nil; d.Tagged != tagged || (tagged && (d.Verdict != "block" || d.Session != "s9" || d.Score != 0.9)) {
			t.Errorf("namespaces %v: decision %+v", ns, d)
		}
	}
}
