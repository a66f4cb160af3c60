package main

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// reloads is what the reload path exports: the count of SIGHUP reloads by
// result, and the outcome and time of the last one as gauges, so an alert
// can ask "is the running configuration the file on disk?"
// (distillguard_config_last_reload_success == 0) without a rate over a
// window that may not contain the failure. Before any SIGHUP they
// describe the load at start, which succeeded (the server would not run
// otherwise).
type reloads struct {
	count metric.Int64Counter
	ok    atomic.Bool
	at    atomic.Int64 // unix nanoseconds of the last load or reload attempt
	okOpt [2]metric.AddOption
}

func newReloads(mp metric.MeterProvider, now time.Time) (*reloads, error) {
	meter := mp.Meter("github.com/distillguard/distillguard/cmd/distillguard")
	r := &reloads{okOpt: [2]metric.AddOption{
		metric.WithAttributeSet(attribute.NewSet(resultAttr("error"))),
		metric.WithAttributeSet(attribute.NewSet(resultAttr("ok"))),
	}}
	r.ok.Store(true)
	r.at.Store(now.UnixNano())
	var errs [3]error
	r.count, errs[0] = meter.Int64Counter("distillguard_config_reloads",
		metric.WithDescription("Configuration reloads on SIGHUP, by result (ok, error)."))
	_, errs[1] = meter.Int64ObservableGauge("distillguard_config_last_reload_success",
		metric.WithDescription("1 when the last configuration load (at start or on SIGHUP) succeeded, 0 when it failed and the previous configuration is still running."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			v := int64(0)
			if r.ok.Load() {
				v = 1
			}
			o.Observe(v)
			return nil
		}))
	// Exported as distillguard_config_last_reload_timestamp_seconds (the
	// unit becomes the suffix).
	_, errs[2] = meter.Float64ObservableGauge("distillguard_config_last_reload_timestamp",
		metric.WithUnit("s"),
		metric.WithDescription("Unix time of the last configuration load attempt (at start or on SIGHUP), whatever its result."),
		metric.WithFloat64Callback(func(_ context.Context, o metric.Float64Observer) error {
			o.Observe(float64(r.at.Load()) / 1e9)
			return nil
		}))
	return r, errors.Join(errs[:]...)
}

// record counts a reload attempt at t and makes it the last one.
func (r *reloads) record(ok bool, t time.Time) {
	r.ok.Store(ok)
	r.at.Store(t.UnixNano())
	i := 0
	if ok {
		i = 1
	}
	r.count.Add(context.Background(), 1, r.okOpt[i])
}
