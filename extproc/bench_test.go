package extproc

import (
	"context"
	"runtime"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/extproc/envoytest"
	"github.com/distillguard/distillguard/scoring"
)

func hmap(kv ...string) *corev3.HeaderMap {
	m := &corev3.HeaderMap{}
	for i := 0; i < len(kv); i += 2 {
		m.Headers = append(m.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	return m
}

// benchEvents returns token events of a streamed chat completion (no role,
// finish, usage or [DONE] events), each one SSE event.
func benchEvents(top int, logprobs bool) [][]byte {
	ev := envoytest.NewGen(77).ChatStream(envoytest.Options{Tokens: 64, Logprobs: logprobs, TopLogprobs: top})
	return ev[1 : len(ev)-2]
}

// openResponse brings a stream to the response body of a streamed chat
// completion in mode (STREAMED or FULL_DUPLEX_STREAMED).
func openResponse(b *testing.B, srv *Server, mode *extprocv3.ProtocolConfiguration) *stream {
	st := srv.newStream(context.Background())
	st.handle(&extprocv3.ProcessingRequest{ProtocolConfig: mode, Request: &extprocv3.ProcessingRequest_RequestHeaders{
		RequestHeaders: &extprocv3.HttpHeaders{Headers: hmap(":path", "/v1/chat/completions", ":method", "POST", "content-type", "application/json", "authorization", "Bearer bench")}}})
	st.handle(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
		RequestBody: &extprocv3.HttpBody{Body: chatBody, EndOfStream: true}}})
	r := st.handle(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
		ResponseHeaders: &extprocv3.HttpHeaders{Headers: hmap(":status", "200", "content-type", "text/event-stream")}}})
	if len(r) != 1 || st.rs.phase != respRewriting || st.rs.body.kind != bodySSE {
		b.Fatalf("stream not set up for SSE rewriting: %v", r)
	}
	return st
}

// BenchmarkProcessChunk: one SSE token event per STREAMED (or duplex)
// response message through the state machine, no gRPC.
func BenchmarkProcessChunk(b *testing.B) {
	cases := []struct {
		name     string
		top      int
		logprobs bool
		mode     *extprocv3.ProtocolConfiguration
		observe  bool // the scorer observes usage (as scoring.Engine does)
	}{
		{"streamed/top5", 5, true, &extprocv3.ProtocolConfiguration{RequestBodyMode: mBuffered, ResponseBodyMode: mStreamed}, false},
		{"streamed/top5-observed", 5, true, &extprocv3.ProtocolConfiguration{RequestBodyMode: mBuffered, ResponseBodyMode: mStreamed}, true},
		{"streamed/top20", 20, true, &extprocv3.ProtocolConfiguration{RequestBodyMode: mBuffered, ResponseBodyMode: mStreamed}, false},
		{"streamed/nologprobs", 0, false, &extprocv3.ProtocolConfiguration{RequestBodyMode: mBuffered, ResponseBodyMode: mStreamed}, false},
		{"duplex/top5", 5, true, &extprocv3.ProtocolConfiguration{RequestBodyMode: mDuplex, ResponseBodyMode: mDuplex}, false},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			cfg := testConfig(nil)
			var sc scoring.Scorer = verdictScorer(scoring.Allow)
			if tc.observe {
				sc = &observingScorer{fakeScorer: verdictScorer(scoring.Allow)}
			}
			srv, err := New(Options{Config: func() *config.Config { return cfg }, Scorer: sc})
			if err != nil {
				b.Fatal(err)
			}
			st := openResponse(b, srv, tc.mode)
			defer st.release()
			events := benchEvents(tc.top, tc.logprobs)
			msgs := make([]*extprocv3.ProcessingRequest, len(events))
			var n int
			for i, e := range events {
				n += len(e)
				msgs[i] = &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: e}}}
			}
			b.SetBytes(int64(n / len(events)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if r := st.handle(msgs[i%len(msgs)]); len(r) != 1 {
					b.Fatalf("%d replies", len(r))
				}
			}
		})
	}
}

// BenchmarkStreamHeap reports the live heap a stream in the middle of a
// token stream keeps (heap-B/stream): what RSS per concurrent stream is
// made of, beyond gRPC's own per-stream state. The streams have seen their
// request and a few events, and wait for the next chunk.
func BenchmarkStreamHeap(b *testing.B) {
	cfg := testConfig(nil)
	srv, err := New(Options{Config: func() *config.Config { return cfg }, Scorer: verdictScorer(scoring.Allow)})
	if err != nil {
		b.Fatal(err)
	}
	events := benchEvents(5, true)
	const n = 500
	mode := &extprocv3.ProtocolConfiguration{RequestBodyMode: mBuffered, ResponseBodyMode: mStreamed}
	var perStream float64
	for b.Loop() {
		sts := make([]*stream, n)
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		for i := range sts {
			st := openResponse(b, srv, mode)
			for _, e := range events[:5] {
				st.handle(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: e}}})
				st.sent() // as Process does once the replies are sent
			}
			sts[i] = st
		}
		runtime.GC()
		runtime.ReadMemStats(&m1)
		perStream = float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc)) / n
		for _, st := range sts {
			st.release()
		}
	}
	b.ReportMetric(perStream, "heap-B/stream")
}

// BenchmarkGRPCRoundTrip: one SSE token event per message over an
// in-memory gRPC connection (send, server processing, receive).
func BenchmarkGRPCRoundTrip(b *testing.B) {
	h := newHarness(b, testConfig(nil), verdictScorer(scoring.Allow))
	benchRoundTrip(b, h.client)
}

// BenchmarkGRPCRoundTripNoop is BenchmarkGRPCRoundTrip against a processor
// that answers every message with an empty reply: the gRPC floor the
// distillguard figure is to be compared with.
func BenchmarkGRPCRoundTripNoop(b *testing.B) {
	benchRoundTrip(b, serveBufconn(b, noopProcessor{}))
}

func benchRoundTrip(b *testing.B, client extprocv3.ExternalProcessorClient) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ps, _, _ := sseStream(b, client, ctx)
	events := benchEvents(5, true)
	msgs := make([]*extprocv3.ProcessingRequest, len(events))
	for i, e := range events {
		msgs[i] = &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: e}}}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := ps.Send(msgs[i%len(msgs)]); err != nil {
			b.Fatal(err)
		}
		if _, err := ps.Recv(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	ps.CloseSend()
	ps.Recv()
}

// noopProcessor answers every message with an empty reply of its kind
// (STREAMED and BUFFERED modes only), like bench.Noop.
type noopProcessor struct {
	extprocv3.UnimplementedExternalProcessorServer
}

func (noopProcessor) Process(ps extprocv3.ExternalProcessor_ProcessServer) error {
	req := new(extprocv3.ProcessingRequest)
	for {
		if err := ps.RecvMsg(req); err != nil {
			return nil
		}
		r := &extprocv3.ProcessingResponse{}
		switch req.GetRequest().(type) {
		case *extprocv3.ProcessingRequest_RequestHeaders:
			r.Response = &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{}}
		case *extprocv3.ProcessingRequest_RequestBody:
			r.Response = &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{}}
		case *extprocv3.ProcessingRequest_ResponseHeaders:
			r.Response = &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}}
		case *extprocv3.ProcessingRequest_ResponseBody:
			r.Response = &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{}}
		default:
			r.Response = &extprocv3.ProcessingResponse_ResponseTrailers{ResponseTrailers: &extprocv3.TrailersResponse{}}
		}
		if err := ps.Send(r); err != nil {
			return err
		}
	}
}
