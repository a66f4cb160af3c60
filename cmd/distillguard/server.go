package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"syscall"
	"time"

	"go.opentelemetry.io/otel"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/server"
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
	logger := server.NewLogger(cfg, logOut)
	// The OpenTelemetry SDK reports what it cannot do (an OTLP export that
	// failed, a bad OTEL_* value it ignored) to its process-wide error
	// handler; the default prints with the log package, outside the
	// server's structured log.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		logger.Warn("OpenTelemetry error", "error", err.Error())
	}))
	srv, err := server.New(cfg, server.Options{Logger: logger, Pprof: o.pprof})
	if err != nil {
		return err
	}
	rl, err := newReloads(srv.MeterProvider(), time.Now())
	if err != nil {
		srv.Close()
		return fmt.Errorf("metrics: %w", err)
	}

	srv.Start()
	logger.Info("distillguard serving", "grpc", srv.GRPCAddr(), "admin", srv.AdminAddr(),
		"config", configName(o.configPath), "tls", cfg.Server.TLS.Enabled(), "scoring", cfg.Scoring.Enabled)
	if ready != nil {
		ready <- listening{GRPC: srv.GRPCAddr(), Admin: srv.AdminAddr()}
	}

	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-srv.Err():
			runErr = err
			break loop
		case s := <-sigs:
			if s == syscall.SIGHUP {
				reload(o, srv, logger, rl)
				continue
			}
			logger.Info("signal received, draining", "signal", s.String())
			break loop
		}
	}

	// Drain: health checks first, then refuse new streams and let in-flight
	// ones finish within the grace period in force.
	srv.Drain(srv.Config().Server.DrainGrace)
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
// the snapshot they started with. Settings read only at start (listeners,
// TLS, scoring, ...) keep their old values; a reload that changes them names
// them.
func reload(o *options, srv *server.Server, logger *slog.Logger, rl *reloads) {
	if o.configPath == "" {
		logger.Info("SIGHUP: no -config file, nothing to reload")
		return
	}
	next, err := loadConfig(o)
	if err != nil {
		logger.Error("config reload failed, keeping the running config", "error", err.Error())
		rl.record(false, time.Now())
		return
	}
	if keys := srv.Reload(next); len(keys) > 0 {
		logger.Warn("config reload: these settings take effect after a restart", "restart_required", keys)
	}
	rl.record(true, time.Now())
	logger.Info("config reloaded", "config", o.configPath)
}
