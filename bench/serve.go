package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
)

// ServeOptions configures a server process started by the suite.
type ServeOptions struct {
	GRPCAddr  string
	AdminAddr string
	// Pprof serves net/http/pprof on the admin address (loopback only).
	Pprof bool
	// Registry, when set, is the Prometheus registry served on /metrics;
	// otherwise a fresh one with the Go and process collectors.
	Registry *prometheus.Registry
}

// newRegistry returns a registry with the Go runtime and process collectors:
// go_memstats_mallocs_total is what the suite reads allocations from, the
// same series the distillguard binary exposes.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Serve serves p until ctx ends: ext_proc on GRPCAddr and /readyz, /metrics
// (and /debug/pprof/ when asked) on AdminAddr. Both addresses must be on
// loopback.
func Serve(ctx context.Context, p extprocv3.ExternalProcessorServer, o ServeOptions) error {
	for _, a := range []string{o.GRPCAddr, o.AdminAddr} {
		if err := CheckLoopback(a); err != nil {
			return err
		}
	}
	reg := o.Registry
	if reg == nil {
		reg = newRegistry()
	}
	// The same server options as cmd/distillguard, so the baseline pays
	// the same gRPC settings.
	gs := grpc.NewServer(grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}))
	extprocv3.RegisterExternalProcessorServer(gs, p)
	// envoy/envoy.yaml health-checks the processor over gRPC; the e2e mode
	// needs every server to answer it.
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	gl, err := net.Listen("tcp", o.GRPCAddr)
	if err != nil {
		return err
	}
	al, err := net.Listen("tcp", o.AdminAddr)
	if err != nil {
		gl.Close()
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ready\n") })
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if o.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	}
	hsrv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := gs.Serve(gl); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			errc <- err
		}
	}()
	go func() {
		defer wg.Done()
		if err := hsrv.Serve(al); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	gs.Stop()
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = hsrv.Shutdown(sctx)
	wg.Wait()
	return runErr
}

// CheckLoopback refuses any listen address that is not on 127.0.0.0/8 or
// ::1: the suite only ever serves and sends on this machine's loopback.
func CheckLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("address %q is not a loopback address", addr)
	}
	return nil
}
