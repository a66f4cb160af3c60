package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/distillguard/distillguard/config"
)

// syncBuffer collects log lines written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// leakCheck fails the test if, once everything else the test registered
// has been cleaned up, more goroutines run than before it started. Call it
// first, so its cleanup runs last.
func leakCheck(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Errorf("%d goroutines running, %d before the test:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func parse(t *testing.T, yaml string) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func loopback(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// start builds and starts a server for cfg on loopback ports; the test's
// cleanup closes it.
func start(t *testing.T, cfg *config.Config, o Options) *Server {
	t.Helper()
	if o.GRPCListener == nil {
		o.GRPCListener = loopback(t)
	}
	if o.AdminListener == nil {
		o.AdminListener = loopback(t)
	}
	s, err := New(cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func dial(t *testing.T, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// get fetches url on a connection of its own, closed afterwards, so no
// idle connection outlives the call.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func headersMsg() *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
		RequestHeaders: &extprocv3.HttpHeaders{
			Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
				{Key: ":method", RawValue: []byte("GET")},
				{Key: ":path", RawValue: []byte("/v1/models")},
			}},
			EndOfStream: true,
		}}}
}

func bodyMsg(n int) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
		RequestBody: &extprocv3.HttpBody{Body: bytes.Repeat([]byte("x"), n), EndOfStream: true}}}
}

// roundTrip sends m on st and returns the reply.
func roundTrip(t *testing.T, st extprocv3.ExternalProcessor_ProcessClient, m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
	t.Helper()
	if err := st.Send(m); err != nil {
		t.Fatal(err)
	}
	r, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func openStream(t *testing.T, ctx context.Context, cc *grpc.ClientConn) extprocv3.ExternalProcessor_ProcessClient {
	t.Helper()
	st, err := extprocv3.NewExternalProcessorClient(cc).Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// ackProcessor answers every message with an empty reply of its kind.
type ackProcessor struct {
	extprocv3.UnimplementedExternalProcessorServer
}

func (ackProcessor) Process(st extprocv3.ExternalProcessor_ProcessServer) error {
	for {
		req, err := st.Recv()
		if err != nil {
			return nil
		}
		r := &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{}}}
		if req.GetRequestHeaders() != nil {
			r.Response = &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{}}
		}
		if err := st.Send(r); err != nil {
			return err
		}
	}
}

// stuckProcessor receives one message, reports it and never answers: a
// stream that would hold a drain forever.
type stuckProcessor struct {
	extprocv3.UnimplementedExternalProcessorServer
	received chan struct{}
}

func (p *stuckProcessor) Process(st extprocv3.ExternalProcessor_ProcessServer) error {
	if _, err := st.Recv(); err != nil {
		return err
	}
	p.received <- struct{}{}
	<-st.Context().Done() // until the server closes the stream
	return st.Context().Err()
}

func TestServesExtProcHealthAndAdmin(t *testing.T) {
	leakCheck(t)
	s := start(t, config.Default(), Options{})
	cc := dial(t, s.GRPCAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, svc := range []string{"", "envoy.service.ext_proc.v3.ExternalProcessor"} {
		resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health(%q) = %v", svc, resp.Status)
		}
	}
	st := openStream(t, ctx, cc)
	if r := roundTrip(t, st, headersMsg()); r.GetRequestHeaders() == nil {
		t.Fatalf("reply to request headers is %T", r.GetResponse())
	}
	_ = st.CloseSend()

	base := "http://" + s.AdminAddr()
	if code, body := get(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, body := get(t, base+"/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("/readyz = %d %q", code, body)
	}
	code, body := get(t, base+"/metrics")
	if code != 200 || !strings.Contains(body, "distillguard_") || !strings.Contains(body, "go_goroutines") || !strings.Contains(body, "process_cpu_seconds_total") {
		t.Errorf("/metrics = %d, missing distillguard_, go_ or process_ series", code)
	}
	if code, body := get(t, base+"/v1/sessions?top=5"); code != 200 || !strings.Contains(body, "sessions") {
		t.Errorf("/v1/sessions = %d %q", code, body)
	}
	if code, _ := get(t, base+"/debug/pprof/"); code != 404 {
		t.Errorf("pprof served without Options.Pprof: %d", code)
	}
}

func TestAdminVariants(t *testing.T) {
	leakCheck(t)
	tests := []struct {
		name         string
		cfg          string
		o            Options
		pprof, v1API bool
	}{
		{name: "pprof", o: Options{Pprof: true}, pprof: true, v1API: true},
		{name: "scoring off: no session API", cfg: "scoring: {enabled: false}", v1API: false},
		{name: "processor override: no session API", o: Options{Processor: ackProcessor{}}, v1API: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := start(t, parse(t, tc.cfg), tc.o)
			base := "http://" + s.AdminAddr()
			if code, _ := get(t, base+"/debug/pprof/"); (code == 200) != tc.pprof {
				t.Errorf("/debug/pprof/ = %d", code)
			}
			if code, _ := get(t, base+"/v1/sessions"); (code == 200) != tc.v1API {
				t.Errorf("/v1/sessions = %d", code)
			}
			if code, _ := get(t, base+"/readyz"); code != 200 {
				t.Errorf("/readyz = %d", code)
			}
		})
	}
}

// TestProcessorOverrideGetsTheGRPCSettings checks that a substitute
// processor (the latency suite's baseline) is served with distillguard's
// message size limit, processing.max_message_bytes: above grpc-go's 4 MiB
// default with the default 64 MiB, refused above it when lowered.
func TestProcessorOverrideGetsTheGRPCSettings(t *testing.T) {
	leakCheck(t)
	tests := []struct {
		cfg    string
		body   int
		refuse bool
	}{
		{cfg: "", body: 20 << 20},
		{cfg: "processing: {max_body_bytes: 1048576, max_message_bytes: 2097152}", body: 3 << 19},
		{cfg: "processing: {max_body_bytes: 1048576, max_message_bytes: 2097152}", body: 3 << 20, refuse: true},
	}
	for _, tc := range tests {
		s := start(t, parse(t, tc.cfg), Options{Processor: ackProcessor{}})
		cc := dial(t, s.GRPCAddr())
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st := openStream(t, ctx, cc)
		if err := st.Send(bodyMsg(tc.body)); err != nil {
			t.Fatal(err)
		}
		r, err := st.Recv()
		switch {
		case tc.refuse && status.Code(err) != codes.ResourceExhausted:
			t.Errorf("%q, %d-byte body: %v, want ResourceExhausted", tc.cfg, tc.body, err)
		case !tc.refuse && (err != nil || r.GetRequestBody() == nil):
			t.Errorf("%q, %d-byte body: reply %v, %v", tc.cfg, tc.body, r, err)
		}
		cancel()
	}
}

func TestMaxConcurrentStreams(t *testing.T) {
	leakCheck(t)
	s := start(t, parse(t, "server: {max_concurrent_streams: 1}"), Options{Processor: ackProcessor{}})
	cc := dial(t, s.GRPCAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a := openStream(t, ctx, cc)
	roundTrip(t, a, headersMsg())
	// The connection's one stream is taken: a second waits for it.
	bctx, bcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer bcancel()
	if b, err := extprocv3.NewExternalProcessorClient(cc).Process(bctx); err == nil {
		if err = b.Send(headersMsg()); err == nil {
			_, err = b.Recv()
		}
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("second stream: %v, want DeadlineExceeded while the first is open", err)
		}
	} else if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("second stream: %v", err)
	}
	if err := a.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("first stream end: %v", err)
	}
	c := openStream(t, ctx, cc)
	if r := roundTrip(t, c, headersMsg()); r.GetRequestHeaders() == nil {
		t.Fatalf("third stream reply %v", r)
	}
}

func TestDrainFlipsHealthAndWaitsForInFlightStreams(t *testing.T) {
	leakCheck(t)
	logs := &syncBuffer{}
	s := start(t, config.Default(), Options{Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	cc := dial(t, s.GRPCAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	watch, err := healthpb.NewHealthClient(cc).Watch(wctx, &healthpb.HealthCheckRequest{Service: "envoy.service.ext_proc.v3.ExternalProcessor"})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := watch.Recv(); err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health before drain: %v %v", r, err)
	}
	st := openStream(t, ctx, cc)
	roundTrip(t, st, headersMsg())

	drained := make(chan struct{})
	go func() { s.Drain(time.Minute); close(drained) }()

	if r, err := watch.Recv(); err != nil || r.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health after drain began: %v %v", r, err)
	}
	wcancel()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := get(t, "http://"+s.AdminAddr()+"/readyz")
		if code == http.StatusServiceUnavailable && strings.Contains(body, "draining") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz = %d %q while draining", code, body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The stream opened before the drain still works.
	if r := roundTrip(t, st, headersMsg()); r.GetRequestHeaders() == nil {
		t.Fatalf("in-flight stream reply %v", r)
	}
	select {
	case <-drained:
		t.Fatal("Drain returned with a stream in flight")
	default:
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("in-flight stream end: %v", err)
	}
	select {
	case <-drained:
	case <-time.After(20 * time.Second):
		t.Fatal("Drain did not return after the last stream ended (grace is a minute)")
	}
	if strings.Contains(logs.String(), "drain grace elapsed") {
		t.Errorf("grace reported elapsed on a clean drain:\n%s", logs)
	}
	// Nothing listens any more.
	if _, err := net.DialTimeout("tcp", s.GRPCAddr(), time.Second); err == nil {
		t.Error("gRPC port still accepts connections after Drain")
	}
	if _, err := net.DialTimeout("tcp", s.AdminAddr(), time.Second); err == nil {
		t.Error("admin port still accepts connections after Drain")
	}
	s.Drain(time.Minute) // a second call does nothing
}

func TestDrainGraceClosesStuckStream(t *testing.T) {
	leakCheck(t)
	logs := &syncBuffer{}
	p := &stuckProcessor{received: make(chan struct{}, 1)}
	s := start(t, config.Default(), Options{Processor: p, Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	cc := dial(t, s.GRPCAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st := openStream(t, ctx, cc)
	if err := st.Send(headersMsg()); err != nil {
		t.Fatal(err)
	}
	<-p.received
	s.Drain(100 * time.Millisecond)
	if !strings.Contains(logs.String(), `"msg":"drain grace elapsed, closing remaining streams","grace":"100ms"`) {
		t.Errorf("grace expiry not logged:\n%s", logs)
	}
	if r, err := st.Recv(); err == nil || status.Code(err) == codes.OK {
		t.Fatalf("stuck stream still open after the grace: %v %v", r, err)
	}
}

func TestReloadSwapsTheConfigForNewStreams(t *testing.T) {
	leakCheck(t)
	s := start(t, parse(t, "scoring: {enabled: false}"), Options{})
	cc := dial(t, s.GRPCAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	before := openStream(t, ctx, cc)
	if r := roundTrip(t, before, headersMsg()); r.GetRequestHeaders() == nil {
		t.Fatalf("reply before reload %v", r)
	}

	next := parse(t, "scoring: {enabled: false}\nserver: {max_concurrent_streams: 7}\npolicies: {default: {allow: {reject: {status: 451}}}}")
	if got := s.Reload(next); len(got) != 1 || got[0] != "server.max_concurrent_streams" {
		t.Errorf("Reload = %q, want [server.max_concurrent_streams]", got)
	}
	if s.Config() != next {
		t.Fatal("Config() is not the reloaded config")
	}
	after := openStream(t, ctx, cc)
	if r := roundTrip(t, after, headersMsg()); r.GetImmediateResponse().GetStatus().GetCode() != 451 {
		t.Errorf("stream after reload: %v, want an immediate 451", r)
	}
	_ = before.CloseSend()
	_ = after.CloseSend()
}

func TestNewReleasesOnError(t *testing.T) {
	leakCheck(t)
	t.Run("tls", func(t *testing.T) {
		gl, al := loopback(t), loopback(t)
		_, err := New(parse(t, "server: {tls: {cert_file: /nonexistent/c.pem, key_file: /nonexistent/c.key}}"),
			Options{GRPCListener: gl, AdminListener: al})
		if err == nil || !strings.HasPrefix(err.Error(), "tls: ") {
			t.Fatalf("New = %v, want a tls: error", err)
		}
		for _, l := range []net.Listener{gl, al} {
			if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
				t.Errorf("listener %s not closed: %v", l.Addr(), err)
			}
		}
	})
	t.Run("admin listen", func(t *testing.T) {
		busy := loopback(t)
		defer busy.Close()
		cfg := parse(t, "server: {grpc_addr: \"127.0.0.1:0\", admin_addr: \""+busy.Addr().String()+"\"}")
		if _, err := New(cfg, Options{}); err == nil || !strings.HasPrefix(err.Error(), "admin listen: ") {
			t.Fatalf("New = %v, want an admin listen: error", err)
		}
	})
	t.Run("never started", func(t *testing.T) {
		gl := loopback(t)
		s, err := New(config.Default(), Options{GRPCListener: gl, AdminListener: loopback(t)})
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		if _, err := gl.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("listener not closed: %v", err)
		}
		s.Start() // after Drain: does nothing
		if _, err := net.DialTimeout("tcp", s.GRPCAddr(), time.Second); err == nil {
			t.Error("Start after Drain served")
		}
	})
}
