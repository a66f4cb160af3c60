package server

import (
	"context"
	"errors"
	"io"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	procv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/extproc/envoytest"
)

// BenchmarkTracing measures what tracing costs an ext_proc stream, over
// loopback gRPC against the assembled server: "off" is the default (no
// OTEL_* set: no tracer provider, no stats handler); "on" exports every
// span and metric over OTLP/gRPC to an in-process receiver, with Envoy's
// traceparent sampled; "unsampled" has tracing on and Envoy's traceparent
// not sampled (the span does not record).
//
//   - stream: one whole exchange per op (request headers and BUFFERED
//     body, SSE response headers, 8 token events, close): the span, its
//     attributes and its export are per stream.
//   - message: one SSE token event per op on a long-lived stream: what a
//     token costs with the stream's span open.
//
// go test -run '^$' -bench BenchmarkTracing -benchmem ./server/
func BenchmarkTracing(b *testing.B) {
	events := benchTokenEvents()
	for _, mode := range []string{"off", "on", "unsampled"} {
		b.Run("stream/"+mode, func(b *testing.B) {
			client, md := benchServer(b, mode)
			b.ReportAllocs()
			cpu := cpuClock(b)
			for b.Loop() {
				ctx := metadata.NewOutgoingContext(context.Background(), md)
				ps := openSSEStream(b, client, ctx)
				for _, ev := range events[:8] {
					sendToken(b, ps, ev)
				}
				closeStream(b, ps)
			}
			cpu.report()
		})
		b.Run("message/"+mode, func(b *testing.B) {
			client, md := benchServer(b, mode)
			ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(context.Background(), md))
			defer cancel()
			ps := openSSEStream(b, client, ctx)
			b.ReportAllocs()
			cpu := cpuClock(b)
			i := 0
			for b.Loop() {
				sendToken(b, ps, events[i%len(events)])
				i++
			}
			b.StopTimer()
			cpu.report()
			closeStream(b, ps)
		})
	}
}

// cpuTimer reports the process CPU time (user and system, client and
// server together, both in this process) per op as cpu-ns/op: on a shared
// machine wall time per op mostly measures the neighbours, CPU time much
// less so.
type cpuTimer struct {
	b     *testing.B
	start time.Duration
}

func cpuClock(b *testing.B) cpuTimer { return cpuTimer{b, cpuTime(b)} }

func (c cpuTimer) report() {
	c.b.ReportMetric(float64(cpuTime(c.b)-c.start)/float64(c.b.N), "cpu-ns/op")
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchServer starts a server with tracing as mode says and returns a
// client for it and the metadata Envoy would send.
func benchServer(b *testing.B, mode string) (extprocv3.ExternalProcessorClient, metadata.MD) {
	b.Helper()
	clearOTelEnv(b)
	flags := "01"
	if mode != "off" {
		store := &otlpStore{}
		setEnv(b, map[string]string{
			"OTEL_EXPORTER_OTLP_ENDPOINT": grpcReceiver(b, store),
			"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
		})
		if mode == "unsampled" {
			flags = "00"
		}
	}
	s, err := New(config.Default(), Options{GRPCListener: listenLoopback(b), AdminListener: listenLoopback(b)})
	if err != nil {
		b.Fatal(err)
	}
	s.Start()
	b.Cleanup(s.Close)
	if (s.tel.tp != nil) != (mode != "off") {
		b.Fatalf("mode %s: tracing on = %v", mode, s.tel.tp != nil)
	}
	cc, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cc.Close() })
	return extprocv3.NewExternalProcessorClient(cc), metadata.Pairs("traceparent", "00-"+parentTraceID+"-"+parentSpanID+"-"+flags)
}

// benchTokenEvents are the token events of a streamed chat completion with
// top-5 logprobs, one SSE event each.
func benchTokenEvents() [][]byte {
	ev := envoytest.NewGen(77).ChatStream(envoytest.Options{Tokens: 64, Logprobs: true, TopLogprobs: 5})
	return ev[1 : len(ev)-2]
}

func hdrs(kv ...string) *corev3.HeaderMap {
	m := &corev3.HeaderMap{}
	for i := 0; i < len(kv); i += 2 {
		m.Headers = append(m.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	return m
}

var benchChat = []byte(`{"model":"m","messages":[{"role":"user","content":"What is 2+2?"}],"stream":true,"logprobs":true,"top_logprobs":5}`)

// openSSEStream brings a stream to its response body: request headers and
// BUFFERED body decided, SSE response headers answered.
func openSSEStream(b *testing.B, client extprocv3.ExternalProcessorClient, ctx context.Context) extprocv3.ExternalProcessor_ProcessClient {
	b.Helper()
	ps, err := client.Process(ctx)
	if err != nil {
		b.Fatal(err)
	}
	for _, m := range []*extprocv3.ProcessingRequest{
		{ProtocolConfig: &extprocv3.ProtocolConfiguration{RequestBodyMode: procv3.ProcessingMode_BUFFERED, ResponseBodyMode: procv3.ProcessingMode_STREAMED},
			Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
				Headers: hdrs(":path", "/v1/chat/completions", ":method", "POST", "content-type", "application/json", "authorization", "Bearer bench")}}},
		{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: benchChat, EndOfStream: true}}},
		{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
			Headers: hdrs(":status", "200", "content-type", "text/event-stream")}}},
	} {
		if err := ps.Send(m); err != nil {
			b.Fatal(err)
		}
		if _, err := ps.Recv(); err != nil {
			b.Fatal(err)
		}
	}
	return ps
}

func sendToken(b *testing.B, ps extprocv3.ExternalProcessor_ProcessClient, ev []byte) {
	if err := ps.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: ev}}}); err != nil {
		b.Fatal(err)
	}
	if _, err := ps.Recv(); err != nil {
		b.Fatal(err)
	}
}

// closeStream half-closes as Envoy does and waits for the server to end
// the stream.
func closeStream(b *testing.B, ps extprocv3.ExternalProcessor_ProcessClient) {
	if err := ps.CloseSend(); err != nil {
		b.Fatal(err)
	}
	if _, err := ps.Recv(); !errors.Is(err, io.EOF) {
		b.Fatalf("stream ended with %v, want EOF", err)
	}
}
