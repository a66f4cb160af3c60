package extproc

import (
	"context"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/extproc/envoytest"
	"github.com/distillguard/distillguard/scoring"
)

// BenchmarkProcessJSON100K: one buffered ~100 KB chat completion with
// top-5 logprobs through the state machine (request, response headers,
// body), no gRPC: what a BUFFERED JSON response costs the processor.
func BenchmarkProcessJSON100K(b *testing.B) {
	cfg := testConfig(nil)
	srv, err := New(Options{Config: func() *config.Config { return cfg }, Scorer: verdictScorer(scoring.Allow)})
	if err != nil {
		b.Fatal(err)
	}
	doc := envoytest.NewGen(9).ChatCompletion(envoytest.Options{Tokens: 400, Logprobs: true, TopLogprobs: 5})
	mode := &extprocv3.ProtocolConfiguration{RequestBodyMode: mBuffered, ResponseBodyMode: mBuffered}
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		st := srv.newStream(context.Background())
		st.handle(&extprocv3.ProcessingRequest{ProtocolConfig: mode, Request: &extprocv3.ProcessingRequest_RequestHeaders{
			RequestHeaders: &extprocv3.HttpHeaders{Headers: hmap(":path", "/v1/chat/completions", ":method", "POST", "content-type", "application/json", "authorization", "Bearer bench")}}})
		st.handle(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
			RequestBody: &extprocv3.HttpBody{Body: chatBody, EndOfStream: true}}})
		st.handle(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
			ResponseHeaders: &extprocv3.HttpHeaders{Headers: hmap(":status", "200", "content-type", "application/json")}}})
		if r := st.handle(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
			ResponseBody: &extprocv3.HttpBody{Body: doc, EndOfStream: true}}}); len(r) != 1 {
			b.Fatalf("%d replies", len(r))
		}
		st.release()
	}
}
