package extproc

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	procv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/extproc/envoytest"
	"github.com/distillguard/distillguard/mutate"
	"github.com/distillguard/distillguard/scoring"
)

// realMutate reports whether the mutate package rewrites bodies (the
// placeholder passes them through). Tests that assert rewriting skip
// without it, except under CI=true where it must be present.
func realMutate() bool {
	_, changed, err := mutate.RewriteRequest(nil, []byte(`{"logprobs":true,"logit_bias":{"1":5}}`),
		mutate.RequestPolicy{MaxTopLogprobs: -1, DropLogitBias: true})
	return err == nil && changed
}

func requireRealMutate(t testing.TB) {
	t.Helper()
	if realMutate() {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("mutate is the pass-through placeholder; this test needs the real rewriters")
	}
	t.Skip("mutate is the pass-through placeholder (no rewriting yet); skipping a test that asserts rewritten bodies")
}

// fakeScorer returns a fixed decision and records what it was given.
type fakeScorer struct {
	mu       sync.Mutex
	decision scoring.Decision
	panics   bool
	calls    []scoring.Request
	headers  []string // authorization header seen per call
}

func (f *fakeScorer) Score(r *scoring.Request) scoring.Decision {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := *r
	c.Header = nil
	f.calls = append(f.calls, c)
	f.headers = append(f.headers, r.Header("authorization"))
	if f.panics {
		panic("scorer exploded")
	}
	return f.decision
}

func (f *fakeScorer) Calls() []scoring.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]scoring.Request(nil), f.calls...)
}

func verdictScorer(v scoring.Verdict) *fakeScorer {
	return &fakeScorer{decision: scoring.Decision{
		Verdict: v, Score: 0.75, Session: "sess-1234",
		Signals: []scoring.Signal{{Name: "volume", Value: 3, Contribution: 0.5}, {Name: "template", Value: 1, Contribution: 0.25}},
	}}
}

// testConfig is the embedded default with processing settings changed.
func testConfig(mod func(p *config.Processing)) *config.Config {
	c := *config.Default()
	if mod != nil {
		mod(&c.Processing)
	}
	return &c
}

type harness struct {
	srv    *Server
	client extprocv3.ExternalProcessorClient
	reader *sdkmetric.ManualReader
}

// newHarness serves a Server on an in-memory gRPC connection.
func newHarness(t testing.TB, cfg *config.Config, sc scoring.Scorer) *harness {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	srv, err := New(Options{Config: func() *config.Config { return cfg }, Scorer: sc, MeterProvider: mp, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	return &harness{srv: srv, client: serveBufconn(t, srv), reader: reader}
}

// serveBufconn serves p on an in-memory gRPC connection, with the server
// options cmd/distillguard uses for the codec, and returns a client.
func serveBufconn(t testing.TB, p extprocv3.ExternalProcessorServer) extprocv3.ExternalProcessorClient {
	t.Helper()
	lis := bufconn.Listen(4 << 20)
	gs := grpc.NewServer(grpc.MaxRecvMsgSize(256<<20), grpc.ForceServerCodecV2(Codec()))
	extprocv3.RegisterExternalProcessorServer(gs, p)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = gs.Serve(lis)
	}()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20), grpc.MaxCallSendMsgSize(256<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		gs.Stop()
		<-served
	})
	return extprocv3.NewExternalProcessorClient(conn)
}

// metric collects once and returns the data of every instrument named
// name (one per meter scope).
func (h *harness) metric(t testing.TB, name string) []metricdata.Aggregation {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := h.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var out []metricdata.Aggregation
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				out = append(out, m.Data)
			}
		}
	}
	return out
}

// counter sums an int64 counter's data points whose attributes include
// every attrs pair.
func (h *harness) counter(t testing.TB, name string, attrs ...attribute.KeyValue) int64 {
	t.Helper()
	var total int64
	for _, data := range h.metric(t, name) {
		sum, ok := data.(metricdata.Sum[int64])
		if !ok {
			t.Fatalf("%s is %T, not an int64 sum", name, data)
		}
	dp:
		for _, p := range sum.DataPoints {
			for _, a := range attrs {
				v, ok := p.Attributes.Value(a.Key)
				if !ok || v != a.Value {
					continue dp
				}
			}
			total += p.Value
		}
	}
	return total
}

func (h *harness) passthroughs(t testing.TB, reason string) int64 {
	return h.counter(t, "distillguard_passthroughs", attribute.String("reason", reason))
}

// envoyConfig is the filter configuration the project ships (envoy.yaml),
// with the given body modes.
func envoyConfig(req, resp procv3.ProcessingMode_BodySendMode) envoytest.Config {
	pm := &procv3.ProcessingMode{
		RequestHeaderMode: procv3.ProcessingMode_SEND, ResponseHeaderMode: procv3.ProcessingMode_SEND,
		RequestBodyMode: req, ResponseBodyMode: resp,
		RequestTrailerMode: procv3.ProcessingMode_SKIP, ResponseTrailerMode: procv3.ProcessingMode_SKIP,
	}
	if req == procv3.ProcessingMode_FULL_DUPLEX_STREAMED {
		pm.RequestTrailerMode = procv3.ProcessingMode_SEND
	}
	if resp == procv3.ProcessingMode_FULL_DUPLEX_STREAMED {
		pm.ResponseTrailerMode = procv3.ProcessingMode_SEND
	}
	return envoytest.Config{
		ProcessingMode:      pm,
		AllowModeOverride:   true,
		SendProtocolConfig:  true,
		RequestAttributes:   true,
		SourceAddress:       "203.0.113.7:41234",
		ReceivingNamespaces: []string{"distillguard"},
	}
}

const (
	mNone     = procv3.ProcessingMode_NONE
	mStreamed = procv3.ProcessingMode_STREAMED
	mBuffered = procv3.ProcessingMode_BUFFERED
	mPartial  = procv3.ProcessingMode_BUFFERED_PARTIAL
	mDuplex   = procv3.ProcessingMode_FULL_DUPLEX_STREAMED
)

func noViolations(t testing.TB, res *envoytest.Result) {
	t.Helper()
	for _, v := range res.Violations {
		t.Errorf("protocol violation: %s", v)
	}
}

type atomicConfig struct{ p atomic.Pointer[config.Config] }

func (a *atomicConfig) store(c *config.Config) { a.p.Store(c) }
func (a *atomicConfig) load() *config.Config   { return a.p.Load() }
