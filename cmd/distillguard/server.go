package main

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
	"reflect"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/extproc"
	"github.com/distillguard/distillguard/scoring"
)

// loadConfig reads the file named by -config (or the embedded default) and
// applies the flags that override it.
func loadConfig(o *options) (*config.Config, error) {
	var c *config.Config
	var err error
	if o.configPath == "" {
		c = config.Default()
	} else if c, err = config.Load(o.configPath); err != nil {
		return nil, err
	}
	if o.set["grpc-addr"] || c.Server.GRPCAddr == "" {
		c.Server.GRPCAddr = o.grpcAddr
	}
	if o.set["admin-addr"] || c.Server.AdminAddr == "" {
		c.Server.AdminAddr = o.adminAddr
	}
	if o.set["tls-cert"] {
		c.Server.TLS.CertFile = o.tlsCert
	}
	if o.set["tls-key"] {
		c.Server.TLS.KeyFile = o.tlsKey
	}
	if o.set["tls-client-ca"] {
		c.Server.TLS.ClientCAFile = o.tlsClientCA
	}
	t := c.Server.TLS
	if (t.CertFile == "") != (t.KeyFile == "") || (t.ClientCAFile != "" && t.CertFile == "") {
		return nil, errors.New("TLS needs both a certificate and a key (and mTLS needs both too)")
	}
	return c, nil
}

func newLogger(c *config.Config, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.Log.Level)) // validated by config
	ho := &slog.HandlerOptions{Level: lvl}
	if c.Log.Format == "text" {
		return slog.New(slog.NewTextHandler(w, ho))
	}
	return slog.New(slog.NewJSONHandler(w, ho))
}

// listening reports the bound addresses once the server accepts traffic
// (tests listen on port 0).
type listening struct {
	GRPC, Admin string
}

// run serves until ctx ends or a terminating signal arrives on sigs, then
// drains. ready, when non-nil, receives the bound addresses once.
func run(ctx context.Context, o *options, sigs <-chan os.Signal, logOut io.Writer, ready chan<- listening) error {
	cfg, err := loadConfig(o)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	logger := newLogger(cfg, logOut)

	mp, metricsHandler, err := newMetrics()
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	defer func() { _ = mp.Shutdown(context.Background()) }()
	meter := mp.Meter("github.com/distillguard/distillguard/cmd/distillguard")
	reloads, _ := meter.Int64Counter("distillguard_config_reloads",
		metric.WithDescription("Configuration reloads on SIGHUP, by result (ok, error)."))

	var current atomic.Pointer[config.Config]
	current.Store(cfg)

	var scorer scoring.Scorer = scoring.AllowAll{}
	var admin http.Handler
	if cfg.Scoring.Enabled {
		eng, err := scoring.New(cfg.Scoring, scoring.Options{MeterProvider: mp, Logger: logger})
		if err != nil {
			return fmt.Errorf("scoring: %w", err)
		}
		defer eng.Close()
		scorer = eng
		admin = eng.AdminHandler(cfg.Admin.Token)
	}

	proc, err := extproc.New(extproc.Options{
		Config:        current.Load,
		Scorer:        scorer,
		MeterProvider: mp,
		Logger:        logger,
	})
	if err != nil {
		return fmt.Errorf("ext_proc: %w", err)
	}

	gopts := []grpc.ServerOption{
		// Envoy keeps one long-lived HTTP/2 connection per worker; keepalive
		// pings from it must not be treated as abuse.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		// A BUFFERED body arrives as one message; grpc-go's 4 MiB default
		// would refuse bodies the config allows. The slack covers headers
		// and framing. Reloads cannot raise it (restart).
		grpc.MaxRecvMsgSize(cfg.Processing.MaxBodyBytes + 1<<20),
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
			return fmt.Errorf("tls: %w", err)
		}
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(tc)))
	}
	gs := grpc.NewServer(gopts...)
	extprocv3.RegisterExternalProcessorServer(gs, proc)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)

	gl, err := net.Listen("tcp", cfg.Server.GRPCAddr)
	if err != nil {
		return fmt.Errorf("grpc listen: %w", err)
	}
	al, err := net.Listen("tcp", cfg.Server.AdminAddr)
	if err != nil {
		gl.Close()
		return fmt.Errorf("admin listen: %w", err)
	}

	var draining atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if draining.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	mux.Handle("GET /metrics", metricsHandler)
	if admin != nil {
		mux.Handle("/v1/", admin)
	}
	if o.pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	hsrv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	// Both serving goroutines are owned here: run waits for them before it
	// returns.
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := gs.Serve(gl); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			errc <- fmt.Errorf("grpc: %w", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := hsrv.Serve(al); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("admin: %w", err)
		}
	}()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(extprocv3.ExternalProcessor_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	logger.Info("distillguard serving", "grpc", gl.Addr().String(), "admin", al.Addr().String(),
		"config", configName(o.configPath), "tls", cfg.Server.TLS.Enabled(), "scoring", cfg.Scoring.Enabled)
	if ready != nil {
		ready <- listening{GRPC: gl.Addr().String(), Admin: al.Addr().String()}
	}

	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-errc:
			runErr = err
			break loop
		case s := <-sigs:
			if s == syscall.SIGHUP {
				reload(o, &current, logger, reloads)
				continue
			}
			logger.Info("signal received, draining", "signal", s.String())
			break loop
		}
	}

	// Drain: tell Envoy's health checks first, then refuse new streams and let
	// in-flight ones finish within the grace period.
	draining.Store(true)
	hs.Shutdown() // every service NOT_SERVING
	grace := current.Load().Server.DrainGrace
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(grace):
		logger.Warn("drain grace elapsed, closing remaining streams", "grace", grace.String())
		gs.Stop()
		<-stopped
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hsrv.Shutdown(sctx)
	wg.Wait()
	logger.Info("distillguard stopped")
	return runErr
}

func configName(p string) string {
	if p == "" {
		return "embedded default"
	}
	return p
}

// reload swaps the configuration atomically. Streams already running keep
// the snapshot they started with. Listener, TLS and scoring settings need a
// restart; a reload that changes them says so.
func reload(o *options, current *atomic.Pointer[config.Config], logger *slog.Logger, reloads metric.Int64Counter) {
	if o.configPath == "" {
		logger.Info("SIGHUP: no -config file, nothing to reload")
		return
	}
	next, err := loadConfig(o)
	if err != nil {
		logger.Error("config reload failed, keeping the running config", "error", err.Error())
		reloads.Add(context.Background(), 1, metric.WithAttributes(resultAttr("error")))
		return
	}
	old := current.Load()
	if !reflect.DeepEqual(old.Server, next.Server) || !reflect.DeepEqual(old.Scoring, next.Scoring) {
		logger.Warn("config reload: server and scoring settings take effect after a restart")
	}
	current.Store(next)
	reloads.Add(context.Background(), 1, metric.WithAttributes(resultAttr("ok")))
	logger.Info("config reloaded", "config", o.configPath)
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
