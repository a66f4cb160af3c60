package scoring

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// replicaMetrics are replicated mode's instruments: every call and its
// outcome, every degradation (a request scored on local state, a change
// that could not be queued), the breaker and the write queue. Exported to
// Prometheus as distillguard_redis_*.
type replicaMetrics struct {
	calls     metric.Int64Counter
	dur       metric.Float64Histogram
	fallbacks metric.Int64Counter
	batches   metric.Int64Counter
	items     metric.Int64Counter
	drops     metric.Int64Counter
	reg       metric.Registration

	batchErrors atomic.Int64
	attrs       map[[2]string][]metric.AddOption
	opAttrs     map[string][]metric.RecordOption
	// one-attribute option lists by "key=value", built once so that
	// recording does not allocate
	one map[string][]metric.AddOption
}

// Attribute values of the counters other than calls.
var (
	redisFallbackReasons = [...]string{"timeout", "error", "breaker_open", "disconnected", "decode_error", "remote_lost"}
	redisBatchResults    = [...]string{"ok", "error"}
	redisItemKinds       = [...]string{"session", "conflict", "remote_batch"}
	redisDropKinds       = [...]string{"session", "aggregate", "malformed", "incompatible"}
)

var (
	redisOps     = [...]string{"connect", "get", "flush", "load", "snapshot", "reset"}
	redisResults = [...]string{"ok", "miss", "timeout", "error", "breaker_open", "disconnected"}
)

func newReplicaMetrics(mp metric.MeterProvider, r *replica) (*replicaMetrics, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	m := mp.Meter("github.com/distillguard/distillguard/scoring")
	rm := &replicaMetrics{attrs: map[[2]string][]metric.AddOption{}, opAttrs: map[string][]metric.RecordOption{}, one: map[string][]metric.AddOption{}}
	for key, vals := range map[string][]string{
		"reason": redisFallbackReasons[:], "result": redisBatchResults[:], "kind": append(redisItemKinds[:], redisDropKinds[:]...),
	} {
		for _, v := range vals {
			rm.one[key+"="+v] = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attribute.String(key, v)))}
		}
	}
	var err error
	if rm.calls, err = m.Int64Counter("distillguard.redis.calls",
		metric.WithDescription("Calls to Redis by operation (get: the request-path session read; flush: a pipelined write batch) and result."),
		metric.WithUnit("{call}")); err != nil {
		return nil, err
	}
	if rm.dur, err = m.Float64Histogram("distillguard.redis.call.duration",
		metric.WithDescription("Duration of Redis calls by operation, deadline included."), metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)); err != nil {
		return nil, err
	}
	if rm.fallbacks, err = m.Int64Counter("distillguard.redis.fallbacks",
		metric.WithDescription("Requests scored on local state only, and blobs rewritten, by reason (timeout, error, breaker_open, disconnected, decode_error, remote_lost)."),
		metric.WithUnit("{event}")); err != nil {
		return nil, err
	}
	if rm.batches, err = m.Int64Counter("distillguard.redis.flush.batches",
		metric.WithDescription("Flush round trips by result (error: everything stays queued for the next one)."),
		metric.WithUnit("{batch}")); err != nil {
		return nil, err
	}
	if rm.items, err = m.Int64Counter("distillguard.redis.flush.items",
		metric.WithDescription("What flushes wrote and read, by kind (session, conflict: another replica wrote first and the write was merged and repeated, remote_batch: another replica's aggregate batch applied)."),
		metric.WithUnit("{item}")); err != nil {
		return nil, err
	}
	if rm.drops, err = m.Int64Counter("distillguard.redis.flush.dropped",
		metric.WithDescription("Changes not queued or batches not applied, by kind (session: queue full, written with the session's next request; aggregate: unsent batches past the bound; malformed; incompatible)."),
		metric.WithUnit("{item}")); err != nil {
		return nil, err
	}
	breaker, err := m.Int64ObservableGauge("distillguard.redis.breaker.state",
		metric.WithDescription("Redis circuit breaker: 0 closed, 1 half-open, 2 open (scoring on local state)."))
	if err != nil {
		return nil, err
	}
	pending, err := m.Int64ObservableGauge("distillguard.redis.flush.pending",
		metric.WithDescription("Sessions whose changes wait to be written to Redis."), metric.WithUnit("{session}"))
	if err != nil {
		return nil, err
	}
	for _, op := range redisOps {
		rm.opAttrs[op] = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("op", op)))}
		for _, res := range redisResults {
			rm.attrs[[2]string{op, res}] = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(
				attribute.String("op", op), attribute.String("result", res)))}
		}
	}
	rm.reg, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(breaker, r.brSt.Load())
		o.ObserveInt64(pending, int64(r.pendingLen()))
		return nil
	}, breaker, pending)
	return rm, err
}

func (m *replicaMetrics) result(op, res string) {
	m.calls.Add(context.Background(), 1, m.attrs[[2]string{op, res}]...)
}

// call records one call's duration and outcome.
func (m *replicaMetrics) call(op string, start time.Time, err error) {
	m.dur.Record(context.Background(), time.Since(start).Seconds(), m.opAttrs[op]...)
	switch {
	case err == nil:
		m.result(op, "ok")
	case rueidis.IsRedisNil(err):
		m.result(op, "miss")
	case errors.Is(err, context.DeadlineExceeded):
		m.result(op, "timeout")
	default:
		m.result(op, "error")
	}
}

func (m *replicaMetrics) fallback(why string) {
	m.fallbacks.Add(context.Background(), 1, m.one["reason="+why]...)
}

func (m *replicaMetrics) batch(res string) {
	if res != "ok" {
		m.batchErrors.Add(1)
	}
	m.batches.Add(context.Background(), 1, m.one["result="+res]...)
}

func (m *replicaMetrics) item(kind string) {
	m.items.Add(context.Background(), 1, m.one["kind="+kind]...)
}

func (m *replicaMetrics) dropped(kind string) {
	m.drops.Add(context.Background(), 1, m.one["kind="+kind]...)
}

func (m *replicaMetrics) unregister() {
	if m.reg != nil {
		_ = m.reg.Unregister()
	}
}
