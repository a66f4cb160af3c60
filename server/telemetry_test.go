package server

import (
	"compress/gzip"
	"context"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	colmetricspb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/extproc/envoytest"
)

// otlpStore is what an OTLP receiver was sent: the export requests of both
// signals and the headers (gRPC metadata or HTTP headers) they came with.
type otlpStore struct {
	mu      sync.Mutex
	spans   []*tracepb.ResourceSpans
	metrics []*metricspb.ResourceMetrics
	headers []map[string]string
}

func (s *otlpStore) addHeaders(get func(string) string, keys ...string) {
	h := map[string]string{}
	for _, k := range keys {
		h[k] = get(k)
	}
	s.headers = append(s.headers, h)
}

// traceService and metricsService are the collector's OTLP/gRPC services
// (opentelemetry-proto collector/{trace,metrics}/v1), storing what they
// receive.
type traceService struct {
	coltracepb.UnimplementedTraceServiceServer
	s *otlpStore
}

func (t traceService) Export(ctx context.Context, r *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	t.s.spans = append(t.s.spans, r.GetResourceSpans()...)
	t.s.addHeaders(func(k string) string { return strings.Join(md.Get(k), ",") }, "x-otlp-token")
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

type metricsService struct {
	colmetricspb.UnimplementedMetricsServiceServer
	s *otlpStore
}

func (m metricsService) Export(ctx context.Context, r *colmetricspb.ExportMetricsServiceRequest) (*colmetricspb.ExportMetricsServiceResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	m.s.mu.Lock()
	defer m.s.mu.Unlock()
	m.s.metrics = append(m.s.metrics, r.GetResourceMetrics()...)
	m.s.addHeaders(func(k string) string { return strings.Join(md.Get(k), ",") }, "x-otlp-token")
	return &colmetricspb.ExportMetricsServiceResponse{}, nil
}

// grpcReceiver serves OTLP/gRPC on a loopback port and returns its
// endpoint URL (http: the exporters connect without TLS).
func grpcReceiver(t testing.TB, s *otlpStore) string {
	t.Helper()
	l := listenLoopback(t)
	gs := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(gs, traceService{s: s})
	colmetricspb.RegisterMetricsServiceServer(gs, metricsService{s: s})
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(l) }()
	t.Cleanup(func() { gs.Stop(); <-done })
	return "http://" + l.Addr().String()
}

// httpReceiver serves OTLP/HTTP with binary protobuf bodies
// (https://opentelemetry.io/docs/specs/otlp/#otlphttp) on /v1/traces and
// /v1/metrics.
func httpReceiver(t testing.TB, s *otlpStore) string {
	t.Helper()
	decode := func(w http.ResponseWriter, r *http.Request, into proto.Message) bool {
		if r.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "want application/x-protobuf", http.StatusUnsupportedMediaType)
			return false
		}
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return false
			}
			body = zr
		}
		b, err := io.ReadAll(body)
		if err == nil {
			err = proto.Unmarshal(b, into)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return false
		}
		return true
	}
	reply := func(w http.ResponseWriter, m proto.Message) {
		b, _ := proto.Marshal(m)
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(b)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", func(w http.ResponseWriter, r *http.Request) {
		var req coltracepb.ExportTraceServiceRequest
		if !decode(w, r, &req) {
			return
		}
		s.mu.Lock()
		s.spans = append(s.spans, req.GetResourceSpans()...)
		s.addHeaders(r.Header.Get, "x-otlp-token")
		s.mu.Unlock()
		reply(w, &coltracepb.ExportTraceServiceResponse{})
	})
	mux.HandleFunc("POST /v1/metrics", func(w http.ResponseWriter, r *http.Request) {
		var req colmetricspb.ExportMetricsServiceRequest
		if !decode(w, r, &req) {
			return
		}
		s.mu.Lock()
		s.metrics = append(s.metrics, req.GetResourceMetrics()...)
		s.addHeaders(r.Header.Get, "x-otlp-token")
		s.mu.Unlock()
		reply(w, &colmetricspb.ExportMetricsServiceResponse{})
	})
	hs := httptest.NewUnstartedServer(mux)
	hs.Listener.Close()
	hs.Listener = listenLoopback(t)
	hs.Start()
	t.Cleanup(hs.Close)
	return hs.URL
}

func listenLoopback(t testing.TB) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// clearOTelEnv empties every OTEL_* variable of the test's environment
// (restored afterwards), so each test sets exactly what it means.
func clearOTelEnv(t testing.TB) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "OTEL_") {
			t.Setenv(k, "")
		}
	}
}

func setEnv(t testing.TB, env map[string]string) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
}

// A parent span as Envoy's tracer would send it.
const (
	parentTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	parentSpanID  = "00f067aa0ba902b7"
	processSpan   = "envoy.service.ext_proc.v3.ExternalProcessor/Process"
)

// exchange sends one streamed chat completion with logprobs through the
// emulated Envoy (the filter settings of envoy/envoy.yaml) with md as the
// side stream's metadata, and returns the distillguard metadata Envoy got.
func exchange(t *testing.T, s *Server, md metadata.MD) map[string]string {
	t.Helper()
	cc := dial(t, s.GRPCAddr())
	ec := envoytest.ShippedConfig("192.0.2.7")
	ec.BufferLimit = 0
	ec.InitialMetadata = md
	e := envoytest.New(extprocv3.NewExternalProcessorClient(cc), ec)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := e.Do(ctx, &envoytest.Exchange{
		Header: http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer otel-test-key"}},
		Body:   []byte(`{"model":"m","stream":true,"logprobs":true,"top_logprobs":3,"messages":[{"role":"user","content":"Name three rivers."}]}`),
		// Several token events per chunk, every one rewritten (logprobs
		// rounded by the default policy).
		Upstream:        &envoytest.Upstream{Seed: 3},
		ResponseChunker: envoytest.Random(5, 60, false),
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 200 || len(res.Violations) > 0 {
		t.Fatalf("status %d, violations %v", res.Status, res.Violations)
	}
	out := map[string]string{}
	for k, v := range res.Metadata["distillguard"].GetFields() {
		out[k] = v.GetStringValue()
	}
	if out["session"] == "" || out["verdict"] == "" {
		t.Fatalf("no decision metadata: %v", res.Metadata)
	}
	return out
}

// waitFor polls cond (under the store's lock) until it holds.
func waitFor(t *testing.T, s *otlpStore, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s.mu.Lock()
		ok := cond()
		s.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s arrived at the OTLP receiver", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func attrMap(kvs []*commonpb.KeyValue) map[string]*commonpb.AnyValue {
	m := make(map[string]*commonpb.AnyValue, len(kvs))
	for _, kv := range kvs {
		m[kv.GetKey()] = kv.GetValue()
	}
	return m
}

func resourceAttr(r *resourcepb.Resource, k string) string {
	return attrMap(r.GetAttributes())[k].GetStringValue()
}

// findSpans returns the spans named name, with their resources.
func findSpans(rss []*tracepb.ResourceSpans, name string) (spans []*tracepb.Span, res []*resourcepb.Resource) {
	for _, rs := range rss {
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				if sp.GetName() == name {
					spans = append(spans, sp)
					res = append(res, rs.GetResource())
				}
			}
		}
	}
	return spans, res
}

// sumPoints returns the data points of the Sum metric named name, in the
// last export that has it, with its resource.
func sumPoints(rms []*metricspb.ResourceMetrics, name string) ([]*metricspb.NumberDataPoint, *resourcepb.Resource) {
	for i := len(rms) - 1; i >= 0; i-- {
		for _, sm := range rms[i].GetScopeMetrics() {
			for _, m := range sm.GetMetrics() {
				if m.GetName() == name && m.GetSum() != nil {
					return m.GetSum().GetDataPoints(), rms[i].GetResource()
				}
			}
		}
	}
	return nil, nil
}

func gaugePoints(rms []*metricspb.ResourceMetrics, name string) []*metricspb.NumberDataPoint {
	for i := len(rms) - 1; i >= 0; i-- {
		for _, sm := range rms[i].GetScopeMetrics() {
			for _, m := range sm.GetMetrics() {
				if m.GetName() == name && m.GetGauge() != nil {
					return m.GetGauge().GetDataPoints()
				}
			}
		}
	}
	return nil
}

// requestsAllowed is the value of distillguard_requests{verdict=allow}.
func requestsAllowed(rms []*metricspb.ResourceMetrics) (int64, *metricspb.NumberDataPoint) {
	pts, _ := sumPoints(rms, "distillguard_requests")
	for _, p := range pts {
		if a := attrMap(p.GetAttributes()); a["verdict"].GetStringValue() == "allow" && a["policy"].GetStringValue() == "default" && !a["shadow"].GetBoolValue() {
			return p.GetAsInt(), p
		}
	}
	return 0, nil
}

func counterValue(rms []*metricspb.ResourceMetrics, name string) int64 {
	pts, _ := sumPoints(rms, name)
	var n int64
	for _, p := range pts {
		n += p.GetAsInt()
	}
	return n
}

// TestOTLPExport: with OTEL_* pointing at a real OTLP receiver (gRPC, and
// HTTP with binary protobuf), the ext_proc stream's span arrives as a
// child of the span context Envoy sent (W3C traceparent, B3 headers), with
// the decision and the stream's course as attributes, and the metrics
// arrive through the periodic reader with their values, from the same
// MeterProvider as /metrics.
func TestOTLPExport(t *testing.T) {
	for _, tc := range []struct {
		name     string
		protocol string
		md       metadata.MD
		env      map[string]string
		service  string
	}{
		{
			name: "grpc/traceparent", protocol: "grpc",
			md:      metadata.Pairs("traceparent", "00-"+parentTraceID+"-"+parentSpanID+"-01", "tracestate", "vendor=1"),
			service: "distillguard",
		},
		{
			name: "http/b3", protocol: "http/protobuf",
			md:      metadata.Pairs("x-b3-traceid", parentTraceID, "x-b3-spanid", parentSpanID, "x-b3-sampled", "1"),
			env:     map[string]string{"OTEL_SERVICE_NAME": "guard-eu", "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"},
			service: "guard-eu",
		},
		{
			name: "grpc/b3-single", protocol: "grpc",
			md:      metadata.Pairs("b3", parentTraceID+"-"+parentSpanID+"-1"),
			service: "distillguard",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leakCheck(t)
			clearOTelEnv(t)
			store := &otlpStore{}
			var endpoint string
			if tc.protocol == "grpc" {
				endpoint = grpcReceiver(t, store)
			} else {
				endpoint = httpReceiver(t, store)
			}
			setEnv(t, map[string]string{
				"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
				"OTEL_EXPORTER_OTLP_PROTOCOL": tc.protocol,
				"OTEL_EXPORTER_OTLP_HEADERS":  "x-otlp-token=s3cret",
				"OTEL_RESOURCE_ATTRIBUTES":    "deployment.environment.name=ci",
				"OTEL_METRIC_EXPORT_INTERVAL": "100",
				"OTEL_BSP_SCHEDULE_DELAY":     "50",
			})
			setEnv(t, tc.env)
			// The exchange's fresh identity would be in probation, which
			// strips the logprobs whose rewrite the counters check.
			cfg := config.Default()
			cfg.Scoring.Standing.Enabled = false
			s := start(t, cfg, Options{})
			if s.tel.tp == nil || s.tel.reader == nil {
				t.Fatalf("traces %v, OTLP metrics %v: both should be on", s.tel.tp != nil, s.tel.reader != nil)
			}
			// Health checks are not traced.
			hctx, hcancel := context.WithTimeout(context.Background(), 10*time.Second)
			if _, err := healthpb.NewHealthClient(dial(t, s.GRPCAddr())).Check(hctx, &healthpb.HealthCheckRequest{}); err != nil {
				t.Fatal(err)
			}
			hcancel()
			meta := exchange(t, s, tc.md)

			// The periodic reader exports on its interval, not only at
			// shutdown.
			waitFor(t, store, "distillguard_requests{verdict=allow} = 1", func() bool {
				n, _ := requestsAllowed(store.metrics)
				return n == 1
			})
			waitFor(t, store, "ext_proc span", func() bool {
				sp, _ := findSpans(store.spans, processSpan)
				return len(sp) > 0
			})
			s.Drain(time.Second) // flushes what is left

			store.mu.Lock()
			defer store.mu.Unlock()
			spans, res := findSpans(store.spans, processSpan)
			if len(spans) != 1 {
				t.Fatalf("%d %s spans, want 1", len(spans), processSpan)
			}
			sp := spans[0]
			if got := hex.EncodeToString(sp.GetTraceId()); got != parentTraceID {
				t.Errorf("trace id %s, want Envoy's %s", got, parentTraceID)
			}
			if got := hex.EncodeToString(sp.GetParentSpanId()); got != parentSpanID {
				t.Errorf("parent span id %s, want Envoy's %s", got, parentSpanID)
			}
			if sp.GetKind() != tracepb.Span_SPAN_KIND_SERVER {
				t.Errorf("span kind %v", sp.GetKind())
			}
			a := attrMap(sp.GetAttributes())
			for k, want := range map[string]string{
				"distillguard.verdict":            meta["verdict"],
				"distillguard.action":             meta["action"],
				"distillguard.policy":             meta["policy"],
				"distillguard.session":            meta["session"],
				"distillguard.endpoint":           "chat",
				"distillguard.request_body_mode":  "BUFFERED",
				"distillguard.response_body_mode": "STREAMED",
				"distillguard.end_reason":         "eof",
				"gen_ai.request.model":            "m",
				"rpc.system.name":                 "grpc",
				"rpc.response.status_code":        "OK",
			} {
				if got := a[k].GetStringValue(); got != want {
					t.Errorf("span attribute %s = %q, want %q", k, got, want)
				}
			}
			if meta["verdict"] != "allow" {
				t.Errorf("verdict %q for a first benign request", meta["verdict"])
			}
			if v, ok := a["distillguard.shadow"]; !ok || v.GetBoolValue() {
				t.Errorf("distillguard.shadow = %v", v)
			}
			if _, ok := a["distillguard.score"].GetValue().(*commonpb.AnyValue_DoubleValue); !ok {
				t.Errorf("distillguard.score = %v, want a double", a["distillguard.score"])
			}
			if _, ok := a["distillguard.signals"].GetValue().(*commonpb.AnyValue_ArrayValue); !ok {
				t.Errorf("distillguard.signals = %v, want an array", a["distillguard.signals"])
			}
			if n := len(a["distillguard.signals"].GetArrayValue().GetValues()); n != len(a["distillguard.signal_contributions"].GetArrayValue().GetValues()) || n > 5 {
				t.Errorf("%d signals, %d contributions", n, len(a["distillguard.signal_contributions"].GetArrayValue().GetValues()))
			}
			// The span's count of rewritten events is the stream's share of
			// the counter: the only stream of this server.
			rewritten := a["distillguard.events_rewritten"].GetIntValue()
			if want := counterValue(store.metrics, "distillguard_events_rewritten"); rewritten == 0 || rewritten != want {
				t.Errorf("distillguard.events_rewritten = %d, counter says %d", rewritten, want)
			}
			if msgs := a["distillguard.messages"].GetIntValue(); msgs < 4 {
				t.Errorf("distillguard.messages = %d", msgs)
			}
			var decided bool
			for _, ev := range sp.GetEvents() {
				if ev.GetName() == "distillguard.decision" && attrMap(ev.GetAttributes())["distillguard.verdict"].GetStringValue() == meta["verdict"] {
					decided = true
				}
			}
			if !decided || len(sp.GetEvents()) != 1 {
				t.Errorf("span events %v, want exactly the decision", sp.GetEvents())
			}
			if got := resourceAttr(res[0], "service.name"); got != tc.service {
				t.Errorf("span resource service.name %q, want %q", got, tc.service)
			}
			if got := resourceAttr(res[0], "deployment.environment.name"); got != "ci" {
				t.Errorf("OTEL_RESOURCE_ATTRIBUTES not applied: deployment.environment.name %q", got)
			}
			if resourceAttr(res[0], "service.version") == "" || resourceAttr(res[0], "distillguard.revision") == "" {
				t.Errorf("resource lacks the build: %v", res[0].GetAttributes())
			}
			if h, _ := findSpans(store.spans, "grpc.health.v1.Health/Check"); len(h) > 0 {
				t.Errorf("health check traced")
			}

			n, pt := requestsAllowed(store.metrics)
			if n != 1 {
				t.Errorf("distillguard_requests{verdict=allow} = %d after shutdown, want 1", n)
			}
			// The request was counted inside the sampled span: its
			// exemplar links the counter to the trace.
			var linked bool
			for _, ex := range pt.GetExemplars() {
				linked = linked || hex.EncodeToString(ex.GetTraceId()) == parentTraceID
			}
			if !linked {
				t.Errorf("no exemplar of trace %s on distillguard_requests: %v", parentTraceID, pt.GetExemplars())
			}
			if g := gaugePoints(store.metrics, "distillguard_build_info"); len(g) != 1 || g[0].GetAsInt() != 1 {
				t.Errorf("distillguard_build_info = %v", g)
			}
			_, mres := sumPoints(store.metrics, "distillguard_requests")
			if got := resourceAttr(mres, "service.name"); got != tc.service {
				t.Errorf("metrics resource service.name %q, want %q", got, tc.service)
			}
			for _, h := range store.headers {
				if h["x-otlp-token"] != "s3cret" {
					t.Errorf("export without OTEL_EXPORTER_OTLP_HEADERS: %v", h)
				}
			}
		})
	}
}

// TestOTLPSampling: the span follows Envoy's sampling decision
// (parentbased_always_on by default) and OTEL_TRACES_SAMPLER; metrics are
// exported whatever traces do.
func TestOTLPSampling(t *testing.T) {
	for _, tc := range []struct {
		name    string
		flags   string
		sampler string
		spans   int
	}{
		{"parent-sampled", "01", "", 1},
		{"parent-not-sampled", "00", "", 0},
		{"always-off", "01", "always_off", 0},
		{"always-on-overrides-parent", "00", "always_on", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leakCheck(t)
			clearOTelEnv(t)
			store := &otlpStore{}
			setEnv(t, map[string]string{
				"OTEL_EXPORTER_OTLP_ENDPOINT": grpcReceiver(t, store),
				"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
				"OTEL_TRACES_SAMPLER":         tc.sampler,
			})
			s := start(t, config.Default(), Options{})
			exchange(t, s, metadata.Pairs("traceparent", "00-"+parentTraceID+"-"+parentSpanID+"-"+tc.flags))
			s.Drain(time.Second)
			store.mu.Lock()
			defer store.mu.Unlock()
			if sp, _ := findSpans(store.spans, processSpan); len(sp) != tc.spans {
				t.Errorf("%d spans exported, want %d", len(sp), tc.spans)
			}
			if n, _ := requestsAllowed(store.metrics); n != 1 {
				t.Errorf("distillguard_requests{verdict=allow} = %d, want 1", n)
			}
		})
	}
}

// TestTelemetryFromEnv: which exports the environment turns on. Nothing
// set means traces off and Prometheus only; a per-signal endpoint turns on
// that signal alone; OTEL_SDK_DISABLED wins; bad values are errors.
func TestTelemetryFromEnv(t *testing.T) {
	store := &otlpStore{}
	ep := grpcReceiver(t, store)
	for _, tc := range []struct {
		name            string
		env             map[string]string
		traces, metrics bool
		err             string
	}{
		{name: "nothing"},
		{name: "protocol-alone", env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_SERVICE_NAME": "x"}},
		{name: "endpoint", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": ep, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, traces: true, metrics: true},
		{name: "traces-endpoint", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ep, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, traces: true},
		{name: "metrics-endpoint", env: map[string]string{"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": ep, "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc"}, metrics: true},
		{name: "exporter-none", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": ep, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_TRACES_EXPORTER": "none"}, metrics: true},
		{name: "metrics-prometheus", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": ep, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_METRICS_EXPORTER": "prometheus"}, traces: true},
		{name: "exporter-named", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ep}, traces: true},
		{name: "sdk-disabled", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": ep, "OTEL_SDK_DISABLED": "TRUE"}},
		{name: "sdk-disabled-false", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": ep, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_SDK_DISABLED": "1"}, traces: true, metrics: true},
		{name: "bad-protocol", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": ep, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, err: "traces exporter"},
		{name: "bad-metrics-exporter", env: map[string]string{"OTEL_METRICS_EXPORTER": "statsd"}, err: "metrics exporter"},
		{name: "exporter-list", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp,console"}, err: "name one exporter"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leakCheck(t)
			clearOTelEnv(t)
			setEnv(t, tc.env)
			s, err := New(config.Default(), Options{GRPCListener: loopback(t), AdminListener: loopback(t)})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					s.Close()
					t.Fatalf("New = %v, want an error with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if got := s.tel.tp != nil; got != tc.traces {
				t.Errorf("traces on = %v, want %v", got, tc.traces)
			}
			if got := s.tel.reader != nil; got != tc.metrics {
				t.Errorf("OTLP metrics on = %v, want %v", got, tc.metrics)
			}
			if got := len(s.tel.serverOptions()) > 0; got != tc.traces {
				t.Errorf("stats handler installed = %v, want %v", got, tc.traces)
			}
		})
	}
}

// TestNoOTelEnvNoExport: with no OTEL_* variable no exporter, tracer
// provider or stats handler exists, a stream carrying Envoy's trace context
// is served all the same, /metrics carries the resource and the build, and
// every goroutine is gone after Drain.
func TestNoOTelEnvNoExport(t *testing.T) {
	leakCheck(t)
	clearOTelEnv(t)
	s := start(t, config.Default(), Options{})
	if s.tel.tp != nil || s.tel.reader != nil || len(s.tel.serverOptions()) != 0 {
		t.Fatalf("telemetry on without OTEL_*: traces %v, OTLP metrics %v", s.tel.tp != nil, s.tel.reader != nil)
	}
	meta := exchange(t, s, metadata.Pairs("traceparent", "00-"+parentTraceID+"-"+parentSpanID+"-01"))
	if meta["verdict"] != "allow" {
		t.Errorf("verdict %q", meta["verdict"])
	}
	code, body := get(t, "http://"+s.AdminAddr()+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics = %d", code)
	}
	b := readBuild()
	for _, want := range []string{
		`target_info{`,
		`service_name="distillguard"`,
		`distillguard_build_info{goversion="` + b.goVersion + `",revision="` + b.revision + `",version="` + b.version + `"} 1`,
		`distillguard_requests_total{policy="default",shadow="false",verdict="allow"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(body, "unknown_service") {
		t.Error("/metrics still names unknown_service")
	}
	s.Drain(time.Second)
}
