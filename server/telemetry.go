package server

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"go.opentelemetry.io/contrib/propagators/autoprop"
	"go.opentelemetry.io/contrib/propagators/b3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"google.golang.org/grpc"
)

// OpenTelemetry, configured the standard way: by the OTEL_* environment
// variables of the SDK specification
// (https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/),
// read by the SDK and its exporters themselves wherever they do so:
//
//   - exporters: go.opentelemetry.io/contrib/exporters/autoexport builds
//     the span exporter and the metric reader OTEL_TRACES_EXPORTER and
//     OTEL_METRICS_EXPORTER name (otlp, console, none), with the protocol
//     of OTEL_EXPORTER_OTLP_PROTOCOL or its per-signal variant (grpc,
//     http/protobuf); the OTLP exporters read their endpoints, headers,
//     timeout, compression, TLS files and temporality preference from
//     OTEL_EXPORTER_OTLP_* themselves;
//   - sampling: sdktrace.NewTracerProvider reads OTEL_TRACES_SAMPLER and
//     OTEL_TRACES_SAMPLER_ARG (default parentbased_always_on: Envoy's
//     sampling decision, carried in the trace context, is followed); the
//     batch span processor reads OTEL_BSP_*;
//   - metric export: sdkmetric.NewPeriodicReader reads
//     OTEL_METRIC_EXPORT_INTERVAL and OTEL_METRIC_EXPORT_TIMEOUT;
//   - resource: resource.WithFromEnv reads OTEL_SERVICE_NAME and
//     OTEL_RESOURCE_ATTRIBUTES, over distillguard's defaults;
//   - propagation: autoprop reads OTEL_PROPAGATORS.
//
// What distillguard decides itself is when a signal is exported at all.
// autoexport falls back to OTLP to localhost when nothing is set; a
// gateway component must not start exporting (and logging failures) to a
// collector nobody configured, so a signal is exported only when its
// exporter is named (OTEL_TRACES_EXPORTER, OTEL_METRICS_EXPORTER) or an
// OTLP endpoint for it is set (OTEL_EXPORTER_OTLP_ENDPOINT or the signal's
// own). With neither, there is no tracer provider and no gRPC stats
// handler (a stream costs nothing for tracing), and metrics are
// Prometheus only. OTEL_SDK_DISABLED=true turns both exports off. The
// Prometheus /metrics endpoint is the admin API's, not an OTEL_* exporter,
// and is always served; both it and an OTLP reader read the one
// MeterProvider.

// Environment variables (spec names).
const (
	envSDKDisabled      = "OTEL_SDK_DISABLED"
	envTracesExporter   = "OTEL_TRACES_EXPORTER"
	envMetricsExporter  = "OTEL_METRICS_EXPORTER"
	envOTLPEndpoint     = "OTEL_EXPORTER_OTLP_ENDPOINT"
	envTracesEndpoint   = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	envMetricsEndpoint  = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
	defaultServiceName  = "distillguard"
	telemetryShutdown   = 5 * time.Second // bound on the final flush at Drain
	instrumentationName = "github.com/distillguard/distillguard/server"
)

// telemetry is a server's OpenTelemetry wiring besides the Prometheus
// exporter: the resource every signal carries, the tracer provider and the
// OTLP metric reader when they are configured, and the propagators the
// ext_proc stream's trace context is read with.
type telemetry struct {
	res    *resource.Resource
	tp     *sdktrace.TracerProvider // nil: traces off
	reader sdkmetric.Reader         // nil: no OTLP (or console) metric export
	prop   propagation.TextMapPropagator
}

// newTelemetry reads the environment and builds what it configures. Bad
// values of the exporter variables are errors (autoexport refuses names
// and protocols it does not know); a malformed OTEL_RESOURCE_ATTRIBUTES is
// logged and the rest of the resource kept, as the SDK does.
func newTelemetry(ctx context.Context, logger *slog.Logger) (*telemetry, error) {
	t := &telemetry{}
	res, err := newResource(ctx)
	if err != nil {
		if res == nil {
			return nil, fmt.Errorf("resource: %w", err)
		}
		logger.Warn("OpenTelemetry resource partly detected", "error", err.Error())
	}
	t.res = res
	// Envoy's ext_proc filter (since Envoy 1.31, envoyproxy/envoy#33665)
	// starts the side stream as a child span of the HTTP request's span
	// and injects that span's context into the stream's gRPC initial
	// metadata in its tracer's format: traceparent/tracestate for the
	// OpenTelemetry tracer, x-b3-traceid/x-b3-spanid/x-b3-sampled for
	// Zipkin. Extraction runs in order and the last valid context wins, so
	// W3C trace context, the OpenTelemetry default, takes precedence over
	// B3 when a carrier has both. OTEL_PROPAGATORS replaces the list.
	t.prop = autoprop.NewTextMapPropagator(b3.New(), propagation.TraceContext{}, propagation.Baggage{})
	if disabled() {
		return t, nil
	}
	if on, err := wanted(envTracesExporter, envTracesEndpoint, ""); err != nil {
		return nil, err
	} else if on {
		exp, err := autoexport.NewSpanExporter(ctx)
		if err != nil {
			return nil, fmt.Errorf("traces exporter: %w", err)
		}
		t.tp = sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	}
	// OTEL_METRICS_EXPORTER=prometheus would make autoexport start a second
	// HTTP listener; /metrics on the admin port already is that exporter.
	on, err := wanted(envMetricsExporter, envMetricsEndpoint, "prometheus")
	if err == nil && on {
		if t.reader, err = autoexport.NewMetricReader(ctx); err != nil {
			err = fmt.Errorf("metrics exporter: %w", err)
		}
	}
	if err != nil {
		t.shutdown()
		return nil, err
	}
	// The reader is the last thing built: from here on the MeterProvider
	// owns it (and stops it on Shutdown).
	return t, nil
}

// disabled is OTEL_SDK_DISABLED: only "true", in any case, is true
// ("Any value not explicitly defined here as a true value, including unset
// and empty values, MUST be interpreted as false").
func disabled() bool { return strings.EqualFold(strings.TrimSpace(os.Getenv(envSDKDisabled)), "true") }

// wanted reports whether a signal is exported: its exporter variable names
// one (anything but none and served, which is already served otherwise),
// or an OTLP endpoint for it is set. One exporter per signal: autoexport
// takes a single name.
func wanted(exporterVar, endpointVar, served string) (bool, error) {
	if v := strings.TrimSpace(os.Getenv(exporterVar)); v != "" {
		if strings.Contains(v, ",") {
			return false, fmt.Errorf("%s=%q: name one exporter (otlp, console or none)", exporterVar, v)
		}
		return v != "none" && v != served, nil
	}
	return os.Getenv(envOTLPEndpoint) != "" || os.Getenv(endpointVar) != "", nil
}

// newResource is service.name distillguard, service.version and the VCS
// revision of the build, the Go runtime and the SDK, overridden by
// OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME (detectors merge in
// order, a later one winning). It also gives the Prometheus exporter's
// target_info its labels.
func newResource(ctx context.Context) (*resource.Resource, error) {
	b := readBuild()
	return resource.New(ctx,
		resource.WithSchemaURL(semconv.SchemaURL),
		resource.WithTelemetrySDK(),
		resource.WithProcessRuntimeName(),
		resource.WithProcessRuntimeVersion(),
		resource.WithAttributes(
			semconv.ServiceName(defaultServiceName),
			semconv.ServiceVersion(b.version),
			attribute.String("distillguard.revision", b.revision),
		),
		resource.WithFromEnv(),
	)
}

// build is what debug.ReadBuildInfo says about the binary.
type build struct {
	version, revision, goVersion string
}

// readBuild returns the module version ("(devel)" for a build from a
// work tree), the VCS revision ("unknown" when the build did not stamp one,
// as with -buildvcs=false; "-dirty" appended for a modified tree) and the
// Go version.
func readBuild() build {
	b := build{version: "(devel)", revision: "unknown", goVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	if v := bi.Main.Version; v != "" {
		b.version = v
	}
	if bi.GoVersion != "" {
		b.goVersion = bi.GoVersion
	}
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			if s.Value != "" {
				b.revision = s.Value
			}
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty && b.revision != "unknown" {
		b.revision += "-dirty"
	}
	return b
}

// meterOptions are the MeterProvider's options: the resource and every
// reader (the Prometheus exporter, and the OTLP reader when configured).
func (t *telemetry) meterOptions(prom sdkmetric.Reader) []sdkmetric.Option {
	o := []sdkmetric.Option{sdkmetric.WithResource(t.res), sdkmetric.WithReader(prom)}
	if t.reader != nil {
		o = append(o, sdkmetric.WithReader(t.reader))
	}
	return o
}

// serverOptions are the gRPC server options tracing needs: none when
// traces are off. When on, otelgrpc's stats handler gives each ext_proc
// stream (one Process RPC, one HTTP exchange) a server span, child of the
// context Envoy sent, with the rpc.* attributes of the semantic
// conventions; extproc adds distillguard's to it. Its per-message stats
// callbacks do no work (the handler records message events only when
// asked to, and is not asked), and its rpc.server.call.duration metric
// goes to a no-op provider so that /metrics does not depend on whether
// tracing is on. Health checks are not traced.
func (t *telemetry) serverOptions() []grpc.ServerOption {
	if t.tp == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(
		otelgrpc.WithTracerProvider(t.tp),
		otelgrpc.WithPropagators(t.prop),
		otelgrpc.WithMeterProvider(metricnoop.NewMeterProvider()),
		otelgrpc.WithFilter(filters.ServiceName(extprocv3.ExternalProcessor_ServiceDesc.ServiceName)),
	))}
}

// shutdown flushes and stops the tracer provider within telemetryShutdown.
// The OTLP metric reader belongs to the MeterProvider and stops with it.
func (t *telemetry) shutdown() {
	if t == nil || t.tp == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), telemetryShutdown)
	defer cancel()
	_ = t.tp.Shutdown(ctx)
}

// registerBuildInfo exports distillguard_build_info{version,revision,
// goversion} 1, the usual Prometheus idiom for joining a build onto other
// series.
func registerBuildInfo(mp metric.MeterProvider) error {
	b := readBuild()
	attrs := metric.WithAttributeSet(attribute.NewSet(
		attribute.String("version", b.version),
		attribute.String("revision", b.revision),
		attribute.String("goversion", b.goVersion),
	))
	_, err := mp.Meter(instrumentationName).Int64ObservableGauge("distillguard_build_info",
		metric.WithDescription("Build of the running server: 1, labelled with its version, VCS revision and Go version."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(1, attrs)
			return nil
		}))
	return err
}
