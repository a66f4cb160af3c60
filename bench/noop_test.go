package bench

import (
	"bytes"
	"context"
	"testing"
	"time"

	procmodev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/distillguard/distillguard/extproc/envoytest"
)

func TestNoopReplies(t *testing.T) {
	client := processorClient(t, NewNoop())

	body := []byte("data: {\"x\":1}\n\n")
	cases := []struct {
		name     string
		respMode procmodev3.ProcessingMode_BodySendMode
		send     *extprocv3.ProcessingRequest
		check    func(*extprocv3.ProcessingResponse) bool
	}{
		{"request headers", procmodev3.ProcessingMode_STREAMED, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{}}},
			func(r *extprocv3.ProcessingResponse) bool {
				return r.GetRequestHeaders() != nil && r.GetRequestHeaders().GetResponse() == nil
			}},
		{"request body", procmodev3.ProcessingMode_STREAMED, envoytest.RequestBody([]byte("{}"), true),
			func(r *extprocv3.ProcessingResponse) bool {
				return r.GetRequestBody() != nil && r.GetRequestBody().GetResponse() == nil
			}},
		{"response headers", procmodev3.ProcessingMode_STREAMED, responseHeaders("text/event-stream", -1),
			func(r *extprocv3.ProcessingResponse) bool { return r.GetResponseHeaders() != nil }},
		{"streamed body: empty reply", procmodev3.ProcessingMode_STREAMED, envoytest.ResponseBody(body, false),
			func(r *extprocv3.ProcessingResponse) bool {
				return r.GetResponseBody() != nil && r.GetResponseBody().GetResponse() == nil
			}},
		{"full duplex body: echo", procmodev3.ProcessingMode_FULL_DUPLEX_STREAMED, envoytest.ResponseBody(body, true),
			func(r *extprocv3.ProcessingResponse) bool {
				sr := r.GetResponseBody().GetResponse().GetBodyMutation().GetStreamedResponse()
				return sr != nil && bytes.Equal(sr.Body, body) && sr.EndOfStream
			}},
		{"response trailers", procmodev3.ProcessingMode_STREAMED, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: &extprocv3.HttpTrailers{}}},
			func(r *extprocv3.ProcessingResponse) bool { return r.GetResponseTrailers() != nil }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			st := openStream(t, ctx, client, tc.respMode)
			// An observability-mode message gets no reply.
			if err := st.Send(&extprocv3.ProcessingRequest{Request: tc.send.Request, ObservabilityMode: true}); err != nil {
				t.Fatal(err)
			}
			if err := st.Send(tc.send); err != nil {
				t.Fatal(err)
			}
			r, err := st.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(r) {
				t.Errorf("unexpected reply %v", r)
			}
			if err := st.CloseSend(); err != nil {
				t.Fatal(err)
			}
			if r, err := st.Recv(); err == nil {
				t.Errorf("extra reply %v (an observability-mode message was answered?)", r)
			}
		})
	}
}
