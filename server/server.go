// Package server assembles everything that serves distillguard: the scoring
// engine (when scoring is enabled), the ext_proc server, the gRPC server
// with its options, gRPC health, the admin HTTP API and the listeners, and
// drains them gracefully. cmd/distillguard, the latency suite (bench) and
// the attack lab (lab) all build their servers here, so what they measure
// is what runs in production.
//
// A Server's life is New, Start, then exactly one Drain (or Close):
//
//	srv, err := server.New(cfg, server.Options{Logger: logger})
//	srv.Start()
//	... // srv.Reload(next) on SIGHUP
//	srv.Drain(srv.Config().Server.DrainGrace)
//
// Serve(ctx) does the last three steps for callers without signals to
// handle.
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/extproc"
	"github.com/distillguard/distillguard/scoring"
)

// Options are what a Server takes besides its configuration. The zero value
// is the production server.
type Options struct {
	// Registry is the Prometheus registry the OpenTelemetry instruments are
	// exported to and /metrics serves. Nil means a fresh registry with the
	// Go runtime and process collectors (never the global default, so
	// several servers can run in one process).
	Registry *prometheus.Registry
	// Logger receives the server's log lines and the scoring audit trail;
	// nil discards them (NewLogger builds the configured one).
	Logger *slog.Logger
	// Clock is the server clock for extproc and scoring; nil means
	// time.Now. The attack lab replays traffic on a simulated clock.
	Clock func() time.Time
	// Seed makes the scoring engine deterministic (scoring.Options.Seed);
	// for replays and the attack lab only, never in production.
	Seed []byte
	// Processor, when set, is served instead of distillguard's ext_proc
	// server, and no scoring engine is built: the latency suite's no-op
	// baseline and the lab's substitute servers get exactly the gRPC
	// settings distillguard gets.
	Processor extprocv3.ExternalProcessorServer
	// Pprof serves net/http/pprof on the admin listener.
	Pprof bool
	// GRPCListener and AdminListener, when set, are served instead of
	// listening on server.grpc_addr and server.admin_addr (for example a
	// bufconn listener in tests). The Server owns them from New on, also
	// when New fails.
	GRPCListener, AdminListener net.Listener
}

// Server is an assembled distillguard server. Its methods are safe for
// concurrent use.
type Server struct {
	cfg    atomic.Pointer[config.Config]
	logger *slog.Logger

	mp     *sdkmetric.MeterProvider
	tel    *telemetry
	engine *scoring.Engine // nil when scoring is off or Options.Processor is set

	grpc   *grpc.Server
	health *health.Server
	admin  *http.Server
	gl, al net.Listener

	draining atomic.Bool
	// mu orders Start against Drain: state is 0 before Start, 1 serving,
	// 2 drained.
	mu    sync.Mutex
	state int
	drain sync.Once
	// wg owns the two serving goroutines; Drain waits for them.
	wg   sync.WaitGroup
	errc chan error
}

// New assembles the server for cfg and binds its listeners. Nothing is
// served until Start. On error everything New acquired is released.
func New(cfg *config.Config, o Options) (*Server, error) {
	if cfg == nil {
		cfg = config.Default()
	}
	s := &Server{logger: o.Logger, gl: o.GRPCListener, al: o.AdminListener, errc: make(chan error, 2)}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	s.cfg.Store(cfg)
	if tiers := cfg.UnkeyedWatermarkTiers(); len(tiers) > 0 {
		s.logger.Warn("tiers ask for the output watermark but no watermark.key_file is configured: they mark nothing", "tiers", tiers)
	}
	built := false
	defer func() {
		if !built {
			s.release()
		}
	}()

	reg := o.Registry
	if reg == nil {
		reg = NewRegistry()
	}
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	// OTLP export and tracing, as the OTEL_* environment configures them
	// (telemetry.go); one MeterProvider feeds /metrics and OTLP alike.
	if s.tel, err = newTelemetry(context.Background(), s.logger); err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	s.mp = sdkmetric.NewMeterProvider(s.tel.meterOptions(exp)...)
	if err := registerBuildInfo(s.mp); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}

	proc := o.Processor
	var adminAPI http.Handler
	if proc == nil {
		var scorer scoring.Scorer = scoring.AllowAll{}
		if cfg.Scoring.Enabled {
			eng, err := scoring.New(cfg.Scoring, scoring.Options{MeterProvider: s.mp, Logger: s.logger, Clock: o.Clock, Seed: o.Seed, EvidencePromptBytes: promptBytes(cfg)})
			if err != nil {
				return nil, fmt.Errorf("scoring: %w", err)
			}
			s.engine = eng
			scorer = eng
			adminAPI = withEvidence(eng.AdminHandler(cfg.Admin.Token), eng, s.Config, cfg.Admin.Token)
		}
		p, err := extproc.New(extproc.Options{
			Config:        s.Config,
			Scorer:        scorer,
			MeterProvider: s.mp,
			Logger:        s.logger,
			Now:           o.Clock,
		})
		if err != nil {
			return nil, fmt.Errorf("ext_proc: %w", err)
		}
		proc = p
		if s.engine != nil && cfg.Scoring.Redis.Enabled() {
			proc = prefetchProcessor{ExternalProcessorServer: p, eng: s.engine}
		}
	}

	gopts, err := grpcOptions(cfg)
	if err != nil {
		return nil, err
	}
	s.grpc = grpc.NewServer(append(gopts, s.tel.serverOptions()...)...)
	extprocv3.RegisterExternalProcessorServer(s.grpc, proc)
	// envoy/envoy.yaml health-checks the processor over gRPC
	// (grpc.health.v1.Health), per service name or the whole server.
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)

	s.admin = &http.Server{Handler: s.adminMux(reg, adminAPI, o.Pprof), ReadHeaderTimeout: 5 * time.Second}

	if s.gl == nil {
		if s.gl, err = Listen(cfg.Server.GRPCAddr); err != nil {
			return nil, fmt.Errorf("grpc listen: %w", err)
		}
	}
	if err := s.checkExposure(cfg); err != nil {
		return nil, err
	}
	if s.al == nil {
		if s.al, err = net.Listen("tcp", cfg.Server.AdminAddr); err != nil {
			return nil, fmt.Errorf("admin listen: %w", err)
		}
	}
	built = true
	return s, nil
}

// Listen binds the ext_proc listener for addr: host:port (TCP), or
// unix:PATH / unix:///PATH (a unix socket; Envoy reaches it with a pipe
// address, envoy/envoy-unix.yaml). A stale socket file left by an earlier
// run is removed first; anything else at PATH is an error.
func Listen(addr string) (net.Listener, error) {
	path, ok := strings.CutPrefix(addr, "unix:")
	if !ok {
		return net.Listen("tcp", addr)
	}
	path = strings.TrimPrefix(path, "//")
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s: another server is listening", path)
		}
		_ = os.Remove(path)
	}
	return net.Listen("unix", path)
}

// exposed reports whether a listener accepts connections from other hosts
// (a TCP address that is not loopback: an unspecified address, 0.0.0.0 or
// ::, is every interface).
func exposed(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && !ta.IP.IsLoopback()
}

// checkExposure warns once, loudly, when the ext_proc port listens beyond
// loopback without TLS: whatever reaches it can play Envoy, forging
// source.address and request.time (IP clusters, session clocks) and every
// request's headers. The state is also a gauge
// (distillguard_grpc_plaintext_exposed), for alerting.
func (s *Server) checkExposure(cfg *config.Config) error {
	bad := exposed(s.gl.Addr()) && !cfg.Server.TLS.Enabled()
	if bad {
		s.logger.Warn("ext_proc gRPC port listens beyond loopback without TLS: anything that reaches it can play Envoy; "+
			"bind it to 127.0.0.1 or a unix socket, or set server.tls (with client_ca_file) and an UpstreamTlsContext on Envoy's cluster (envoy/envoy-mtls.yaml)",
			"grpc", s.gl.Addr().String())
	}
	v := int64(0)
	if bad {
		v = 1
	}
	_, err := s.mp.Meter("github.com/distillguard/distillguard/server").Int64ObservableGauge("distillguard_grpc_plaintext_exposed",
		metric.WithDescription("1 when the ext_proc gRPC port listens beyond loopback without TLS."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(v)
			return nil
		}))
	return err
}

// grpcOptions are the settings every distillguard gRPC server runs with.
func grpcOptions(cfg *config.Config) ([]grpc.ServerOption, error) {
	gopts := []grpc.ServerOption{
		// Envoy keeps one long-lived HTTP/2 connection per worker; keepalive
		// pings from it must not be treated as abuse.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		// A BUFFERED body arrives as one message. The bound is
		// processing.max_message_bytes, above max_body_bytes: a body too
		// large to rewrite still arrives and is answered by extproc (413 on
		// a guarded route) instead of the stream being reset with
		// ResourceExhausted. Reloads cannot change it (restart; see
		// config.Config.RestartRequired).
		grpc.MaxRecvMsgSize(cfg.Processing.MaxMessageBytes),
		// Replies are marshalled into pooled buffers: grpc-go's codec
		// allocates a fresh one for every message under 1 KiB, which is
		// what a rewritten SSE event is (see extproc.Codec). Same bytes
		// on the wire.
		grpc.ForceServerCodecV2(extproc.Codec()),
	}
	if cfg.Server.MaxConcurrentStreams > 0 {
		gopts = append(gopts, grpc.MaxConcurrentStreams(cfg.Server.MaxConcurrentStreams))
	}
	if cfg.Server.TLS.Enabled() {
		tc, err := serverTLS(cfg.Server.TLS)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(tc)))
	}
	return gopts, nil
}

func (s *Server) adminMux(reg *prometheus.Registry, adminAPI http.Handler, withPprof bool) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if s.draining.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	if adminAPI != nil {
		mux.Handle("/v1/", adminAPI)
	}
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// NewRegistry returns a Prometheus registry with the Go runtime and process
// collectors: the go_* and process_* series next to distillguard_*.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// NewLogger returns the logger log.level and log.format ask for, writing
// to w.
func NewLogger(c *config.Config, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.Log.Level)) // validated by config
	ho := &slog.HandlerOptions{Level: lvl}
	if c.Log.Format == "text" {
		return slog.New(slog.NewTextHandler(w, ho))
	}
	return slog.New(slog.NewJSONHandler(w, ho))
}

// Engine is the scoring engine (nil when scoring is off or
// Options.Processor is set): replays drive its Flush in replicated mode.
func (s *Server) Engine() *scoring.Engine { return s.engine }

// Config returns the configuration in force. extproc reads it once per
// stream, so a stream keeps the snapshot it started with.
func (s *Server) Config() *config.Config { return s.cfg.Load() }

// Reload swaps in next atomically and returns the settings that changed but
// keep their old values until a restart (config.Config.RestartRequired).
// next must be a loaded configuration, not nil.
func (s *Server) Reload(next *config.Config) (restartRequired []string) {
	if next == nil {
		panic("server: Reload(nil)")
	}
	prev := s.cfg.Swap(next)
	return next.RestartRequired(prev)
}

// MeterProvider is the provider the server's instruments are registered
// with; instruments a caller adds to it are exported on /metrics too.
func (s *Server) MeterProvider() metric.MeterProvider { return s.mp }

// GRPCAddr is the bound ext_proc gRPC address.
func (s *Server) GRPCAddr() string { return s.gl.Addr().String() }

// AdminAddr is the bound admin HTTP address.
func (s *Server) AdminAddr() string { return s.al.Addr().String() }

// Err receives the first failure of a serving goroutine (a listener that
// stopped accepting); the server should then be drained.
func (s *Server) Err() <-chan error { return s.errc }

// Start serves gRPC and the admin API in goroutines Drain waits for, and
// reports SERVING on gRPC health. Later calls do nothing.
func (s *Server) Start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != 0 {
		return
	}
	s.state = 1
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		if err := s.grpc.Serve(s.gl); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.errc <- fmt.Errorf("grpc: %w", err)
		}
	}()
	go func() {
		defer s.wg.Done()
		if err := s.admin.Serve(s.al); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.errc <- fmt.Errorf("admin: %w", err)
		}
	}()
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(extprocv3.ExternalProcessor_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
}

// Serve starts the server, serves until ctx ends or a serving goroutine
// fails, then drains with the server.drain_grace in force and returns that
// failure, if any.
func (s *Server) Serve(ctx context.Context) error {
	s.Start()
	var err error
	select {
	case <-ctx.Done():
	case err = <-s.errc:
	}
	s.Drain(s.Config().Server.DrainGrace)
	return err
}

// Drain stops the server gracefully: health checks (gRPC health and
// /readyz) turn NOT_SERVING first, so Envoy stops sending; new streams are
// refused while those in flight get grace to finish; then the remaining
// ones are closed, the admin listener shuts down, and Drain returns once
// every goroutine the server started has ended and the scoring engine and
// the tracer and meter providers are released (their last spans and
// metrics exported, when OTLP is on). Only the first call does anything.
func (s *Server) Drain(grace time.Duration) {
	s.drain.Do(func() {
		s.mu.Lock()
		started := s.state == 1
		s.state = 2
		s.mu.Unlock()
		s.draining.Store(true)
		s.health.Shutdown() // every service NOT_SERVING
		if started {
			stopped := make(chan struct{})
			go func() { s.grpc.GracefulStop(); close(stopped) }()
			timer := time.NewTimer(grace)
			select {
			case <-stopped:
			case <-timer.C:
				s.logger.Warn("drain grace elapsed, closing remaining streams", "grace", grace.String())
				s.grpc.Stop()
				<-stopped
			}
			timer.Stop()
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = s.admin.Shutdown(sctx)
			cancel()
			s.wg.Wait()
		}
		s.release()
	})
}

// Close releases a server without a grace period: Drain(0).
func (s *Server) Close() { s.Drain(0) }

// release frees what New acquired. Safe on a partly built server.
func (s *Server) release() {
	if s.grpc != nil {
		s.grpc.Stop() // also closes a listener it was serving
	}
	for _, l := range []net.Listener{s.gl, s.al} {
		if l != nil {
			_ = l.Close() // never served, or already closed by Stop/Shutdown
		}
	}
	if s.engine != nil {
		_ = s.engine.Close()
	}
	// Spans first: the streams that made them are gone. Then the meter
	// provider, whose OTLP reader exports once more on Shutdown; both
	// flushes are bounded so an unreachable collector cannot hold Drain.
	s.tel.shutdown()
	if s.mp != nil {
		ctx, cancel := context.WithTimeout(context.Background(), telemetryShutdown)
		_ = s.mp.Shutdown(ctx)
		cancel()
	}
}

// serverTLS builds the gRPC TLS config; with a client CA it requires and
// verifies client certificates (mTLS from Envoy's cluster transport_socket).
func serverTLS(t config.TLS) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, err
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"}}
	if t.ClientCAFile != "" {
		pem, err := os.ReadFile(t.ClientCAFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificates", t.ClientCAFile)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}
