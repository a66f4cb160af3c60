package extproc

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/distillguard/distillguard/scoring"
)

// histogramCount is the number of measurements in a float64 histogram.
func (h *harness) histogramCount(t testing.TB, name string) uint64 {
	t.Helper()
	var n uint64
	for _, data := range h.metric(t, name) {
		hist, ok := data.(metricdata.Histogram[float64])
		if !ok {
			t.Fatalf("%s is %T, not a float64 histogram", name, data)
		}
		for _, p := range hist.DataPoints {
			n += p.Count
		}
	}
	return n
}

// sseStream opens a Process stream and brings it to a streamed SSE
// response, returning the stream and the body bytes the request side
// counted in and out.
func sseStream(t testing.TB, client extprocv3.ExternalProcessorClient, ctx context.Context) (ps extprocv3.ExternalProcessor_ProcessClient, in, out int) {
	t.Helper()
	ps, err := client.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	setup := []*extprocv3.ProcessingRequest{
		{ProtocolConfig: &extprocv3.ProtocolConfiguration{RequestBodyMode: mBuffered, ResponseBodyMode: mStreamed},
			Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
				Headers: hmap(":path", "/v1/chat/completions", ":method", "POST", "content-type", "application/json", "authorization", "Bearer t")}}},
		{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: chatBody, EndOfStream: true}}},
		{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
			Headers: hmap(":status", "200", "content-type", "text/event-stream")}}},
	}
	for i, m := range setup {
		if err := ps.Send(m); err != nil {
			t.Fatal(err)
		}
		r, err := ps.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			in = len(chatBody)
			out = len(chatBody)
			if bm := r.GetRequestBody().GetResponse().GetBodyMutation(); bm != nil {
				out = len(bm.GetBody())
			}
		}
	}
	return ps, in, out
}

// sendEvent sends one response body message and returns the body bytes its
// reply releases and whether they differ from what was sent.
func sendEvent(t testing.TB, ps extprocv3.ExternalProcessor_ProcessClient, ev []byte) (out int, changed bool) {
	t.Helper()
	if err := ps.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: ev}}}); err != nil {
		t.Fatal(err)
	}
	r, err := ps.Recv()
	if err != nil {
		t.Fatal(err)
	}
	bm := r.GetResponseBody().GetResponse().GetBodyMutation()
	switch {
	case bm == nil:
		return len(ev), false
	case bm.GetClearBody():
		return 0, true
	default:
		return len(bm.GetBody()), !bytes.Equal(bm.GetBody(), ev)
	}
}

func closeStream(t testing.TB, ps extprocv3.ExternalProcessor_ProcessClient) {
	t.Helper()
	if err := ps.CloseSend(); err != nil {
		t.Fatal(err)
	}
	// The server's handler has returned (and flushed its counts) once the
	// stream's status arrives.
	if _, err := ps.Recv(); err != io.EOF {
		t.Fatalf("stream ended with %v, want EOF", err)
	}
}

// TestMessageMetrics: the per-stream counts, accumulated in the stream and
// flushed in batches, add up exactly once the stream ends: messages by
// kind, body bytes in and out, events rewritten, a duration for every
// headers message and for the sampled body messages, the request's verdict
// and policy, no stream left active.
func TestMessageMetrics(t *testing.T) {
	requireRealMutate(t)
	cfg := testConfig(nil)
	h := newHarness(t, cfg, verdictScorer(scoring.Allow))
	events := benchEvents(5, true)
	for _, n := range []int{1, tallyFlushEvery - 3, tallyFlushEvery, 3*tallyFlushEvery + 7} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			snap := func() map[string]int64 {
				return map[string]int64{
					"request_headers":  h.counter(t, "distillguard_messages", attribute.String("kind", "request_headers")),
					"request_body":     h.counter(t, "distillguard_messages", attribute.String("kind", "request_body")),
					"response_headers": h.counter(t, "distillguard_messages", attribute.String("kind", "response_headers")),
					"response_body":    h.counter(t, "distillguard_messages", attribute.String("kind", "response_body")),
					"in":               h.counter(t, "distillguard_body_bytes", attribute.String("direction", "in")),
					"out":              h.counter(t, "distillguard_body_bytes", attribute.String("direction", "out")),
					"events":           h.counter(t, "distillguard_events_rewritten"),
					"requests": h.counter(t, "distillguard_requests", attribute.String("verdict", "allow"),
						attribute.String("policy", cfg.Resolve("/v1/chat/completions", "m", scoring.Allow).Policy), attribute.Bool("shadow", false)),
					"durations": int64(h.histogramCount(t, "distillguard_message_duration")),
				}
			}
			before := snap()
			ps, in, out := sseStream(t, h.client, context.Background())
			rewritten := 0
			// Durations: both headers messages, and body messages 1, 9,
			// 17, ... of the stream (the request body is body message 1).
			durations := 2
			for k := 1; k <= n+1; k++ {
				if k%durationSampleEvery == 1 {
					durations++
				}
			}
			for i := range n {
				ev := events[i%len(events)]
				in += len(ev)
				o, changed := sendEvent(t, ps, ev)
				out += o
				if changed {
					rewritten++
				}
			}
			closeStream(t, ps)
			after := snap()
			want := map[string]int64{
				"request_headers": 1, "request_body": 1, "response_headers": 1, "response_body": int64(n),
				"in": int64(in), "out": int64(out), "events": int64(rewritten), "requests": 1, "durations": int64(durations),
			}
			for k, w := range want {
				if got := after[k] - before[k]; got != w {
					t.Errorf("%s: counted %d, want %d", k, got, w)
				}
			}
			if rewritten == 0 {
				t.Error("no event was rewritten: the events counter was not exercised")
			}
			if a := h.counter(t, "distillguard_streams_active"); a != 0 {
				t.Errorf("streams_active = %d after the stream ended", a)
			}
		})
	}
}

// TestMessageMetricsWhileStreaming: a long stream's messages reach the
// counters while it runs, at most tallyFlushEvery messages behind.
func TestMessageMetricsWhileStreaming(t *testing.T) {
	h := newHarness(t, testConfig(nil), verdictScorer(scoring.Allow))
	events := benchEvents(5, true)
	ps, _, _ := sseStream(t, h.client, context.Background())
	const setup = 3
	for i := range 2*tallyFlushEvery + 5 {
		sendEvent(t, ps, events[i%len(events)])
		sent := int64(setup + i + 1)
		// Each reply is sent after its message was accounted for.
		got := h.counter(t, "distillguard_messages")
		if got > sent || got < sent-tallyFlushEvery+1 {
			t.Fatalf("after %d messages the counter shows %d (lag allowed: %d)", sent, got, tallyFlushEvery-1)
		}
	}
	closeStream(t, ps)
	if got, want := h.counter(t, "distillguard_messages"), int64(setup+2*tallyFlushEvery+5); got != want {
		t.Fatalf("after the stream: %d messages counted, want %d", got, want)
	}
}

// TestRequestMetricAttributes: distillguard_requests gets the right
// attribute set per (verdict, policy, shadow), from the cache and beyond
// its bound.
func TestRequestMetricAttributes(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	m, err := newMetrics(mp)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{reader: reader}
	ctx := context.Background()
	type key struct {
		verdict, policy string
		shadow          bool
	}
	want := map[key]int64{}
	// More distinct combinations than the cache keeps, each counted a
	// different number of times, interleaved.
	for round := range 3 {
		for i := range maxReqOpts + 40 {
			k := key{[]string{"allow", "degrade", "throttle", "block"}[i%4], fmt.Sprintf("p%d", i/4), i%3 == 0}
			if round > 0 && i%5 != 0 {
				continue
			}
			m.request(ctx, k.verdict, k.policy, k.shadow)
			want[k]++
		}
	}
	for k, w := range want {
		got := h.counter(t, "distillguard_requests", attribute.String("verdict", k.verdict),
			attribute.String("policy", k.policy), attribute.Bool("shadow", k.shadow))
		if got != w {
			t.Fatalf("%+v: %d, want %d", k, got, w)
		}
	}
	if n := m.reqN.Load(); n > maxReqOpts {
		t.Fatalf("cache holds %d attribute sets, bound %d", n, maxReqOpts)
	}
}
