package bench

import (
	"context"
	"fmt"
	"io"
	"net"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/server"
)

// ServeOptions configures a server process started by the suite.
type ServeOptions struct {
	GRPCAddr  string
	AdminAddr string
	// Pprof serves net/http/pprof on the admin address (loopback only).
	Pprof bool
	// Config is a distillguard config file, layered over the embedded
	// default; empty means the default. It sets the gRPC settings of both
	// servers and, for distillguard, everything else.
	Config string
	// Processor replaces distillguard's ext_proc server: the no-op
	// baseline. Nil serves distillguard.
	Processor extprocv3.ExternalProcessorServer
	// Log receives the server's log lines (and distillguard's audit
	// trail); nil discards them.
	Log io.Writer
}

// Serve serves until ctx ends, through server.New like cmd/distillguard:
// ext_proc and gRPC health on GRPCAddr, /healthz, /readyz, /metrics (with
// the Go runtime series the suite reads allocations from) and, when asked,
// /debug/pprof/ on AdminAddr. The no-op baseline goes through the same
// constructor with a processor override, so it pays exactly the gRPC
// settings distillguard pays (codec, message size limit, keepalive policy,
// stream limit). Both addresses must be on loopback.
func Serve(ctx context.Context, o ServeOptions) error {
	for _, a := range []string{o.GRPCAddr, o.AdminAddr} {
		if err := CheckLoopback(a); err != nil {
			return err
		}
	}
	cfg := config.Default()
	if o.Config != "" {
		var err error
		if cfg, err = config.Load(o.Config); err != nil {
			return err
		}
	}
	cfg.Server.GRPCAddr, cfg.Server.AdminAddr = o.GRPCAddr, o.AdminAddr
	opts := server.Options{Processor: o.Processor, Pprof: o.Pprof}
	if o.Log != nil {
		opts.Logger = server.NewLogger(cfg, o.Log)
	}
	srv, err := server.New(cfg, opts)
	if err != nil {
		return err
	}
	return srv.Serve(ctx)
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
