package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/extproc"
	"github.com/distillguard/distillguard/scoring"
)

// NewDistillguard builds the real ext_proc server for cfg the way
// cmd/distillguard does (scoring engine when enabled, OpenTelemetry metrics
// exported to reg), for in-process use. close releases the scoring engine
// and the meter provider.
func NewDistillguard(cfg *config.Config, reg prometheus.Registerer, logOut io.Writer) (srv extprocv3.ExternalProcessorServer, close func(), err error) {
	var opts []otelprom.Option
	if reg != nil {
		opts = append(opts, otelprom.WithRegisterer(reg))
	}
	exp, err := otelprom.New(append(opts, otelprom.WithoutScopeInfo())...)
	if err != nil {
		return nil, nil, err
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	logger := slog.New(slog.NewJSONHandler(logOut, &slog.HandlerOptions{Level: logLevel(cfg.Log.Level)}))
	closers := []func(){func() { _ = mp.Shutdown(context.Background()) }}
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	var scorer scoring.Scorer = scoring.AllowAll{}
	if cfg.Scoring.Enabled {
		eng, err := scoring.New(cfg.Scoring, scoring.Options{MeterProvider: mp, Logger: logger})
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("scoring: %w", err)
		}
		closers = append(closers, func() { _ = eng.Close() })
		scorer = eng
	}
	proc, err := extproc.New(extproc.Options{
		Config:        func() *config.Config { return cfg },
		Scorer:        scorer,
		MeterProvider: mp,
		Logger:        logger,
	})
	if err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("ext_proc: %w", err)
	}
	return proc, closeAll, nil
}

func logLevel(s string) slog.Level {
	var l slog.Level
	_ = l.UnmarshalText([]byte(s)) // validated by config
	return l
}

// ServeDistillguard serves the real server for the config file at path (the
// embedded default when empty) until ctx ends: the suite's
// serve-distillguard child mode, for machines without a built distillguard
// binary.
func ServeDistillguard(ctx context.Context, path string, o ServeOptions, logOut io.Writer) error {
	cfg := config.Default()
	if path != "" {
		var err error
		if cfg, err = config.Load(path); err != nil {
			return err
		}
	}
	reg := newRegistry()
	srv, closeSrv, err := NewDistillguard(cfg, reg, logOut)
	if err != nil {
		return err
	}
	defer closeSrv()
	o.Registry = reg
	return Serve(ctx, srv, o)
}
