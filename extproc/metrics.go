package extproc

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Message kinds, as counted in distillguard_messages{kind}.
type msgKind uint8

const (
	kindRequestHeaders msgKind = iota
	kindRequestBody
	kindRequestTrailers
	kindResponseHeaders
	kindResponseBody
	kindResponseTrailers
	kindUnknown
	numKinds
)

var kindNames = [numKinds]string{
	"request_headers", "request_body", "request_trailers",
	"response_headers", "response_body", "response_trailers", "unknown",
}

func (k msgKind) String() string { return kindNames[k] }

// Pass-through reasons, as counted in distillguard_passthroughs{reason}.
// Each one means a body (or a decision input) was left untouched or a
// fallback was taken; none is fatal.
const (
	reasonInvalidJSON        = "invalid_json"         // response JSON / SSE data that is not a JSON object
	reasonBodyTooLarge       = "body_too_large"       // body beyond max_body_bytes
	reasonGzipError          = "gzip_error"           // corrupt gzip or beyond max_decompressed_bytes
	reasonUnknownContentType = "unknown_content_type" // response neither SSE nor JSON
	reasonUnknownEncoding    = "unknown_content_encoding"
	reasonBadRequestJSON     = "bad_request_json" // request body not parseable
	reasonRequestEncoded     = "request_encoded"  // request body with a content-encoding
	reasonClockSkew          = "clock_skew"       // request.time too far in the future
	reasonBadRequestTime     = "bad_request_time" // request.time unparseable
	reasonScorerPanic        = "scorer_panic"
	reasonPartialBody        = "partial_body"     // BUFFERED_PARTIAL cut a JSON body
	reasonHeldAtTrailers     = "held_at_trailers" // bytes held when trailers ended a non-duplex body
	reasonHeldAtEnd          = "held_at_end"      // bytes still held when the stream ended
	reasonNon2xx             = "non_2xx"
	reasonNoDecision         = "no_decision"          // response seen before the request was decided
	reasonSSEEventOversize   = "sse_event_oversize"   // SSE event longer than max_held_bytes (dropped, or released raw with on_oversize: pass)
	reasonOverBudget         = "over_budget"          // max_held_total_bytes reached while a body was held
	reasonSSEEventUnreadable = "sse_event_unreadable" // SSE event with logprobs that does not parse: dropped
)

var allReasons = []string{
	reasonInvalidJSON, reasonBodyTooLarge, reasonGzipError,
	reasonUnknownContentType, reasonUnknownEncoding, reasonBadRequestJSON,
	reasonRequestEncoded, reasonClockSkew, reasonBadRequestTime, reasonScorerPanic,
	reasonPartialBody, reasonHeldAtTrailers, reasonHeldAtEnd, reasonNon2xx, reasonNoDecision,
	reasonSSEEventOversize, reasonOverBudget, reasonSSEEventUnreadable,
}

// Protocol violations (warned and counted in
// distillguard_protocol_errors{kind}).
const (
	protoEmptyRequest = "empty_request" // ProcessingRequest with no request oneof
	protoOutOfOrder   = "out_of_order"  // a second headers message, or headers after the end
	protoAfterEnd     = "after_end"     // body or trailers after end_of_stream or trailers
)

type metrics struct {
	streams     metric.Int64UpDownCounter
	messages    metric.Int64Counter
	duration    metric.Float64Histogram
	requests    metric.Int64Counter
	passthrough metric.Int64Counter
	events      metric.Int64Counter
	bytes       metric.Int64Counter
	immediate   metric.Int64Counter
	protocol    metric.Int64Counter
	refusals    metric.Int64Counter
	watermarked metric.Int64Counter // watermark.go
	served      metric.Int64Counter // watermark.go: served records logged

	// Precomputed attribute sets, read-only after newMetrics. They are held
	// as ready-made option slices: passing a slice on to a variadic
	// parameter does not allocate, while a single option converted into a
	// fresh ...Option slice per call does (it escapes through the interface
	// method).
	kindAdd   [numKinds][]metric.AddOption
	kindRec   [numKinds][]metric.RecordOption
	reasonOpt map[string]metric.MeasurementOption
	inAdd     []metric.AddOption
	outAdd    []metric.AddOption

	// reqOpts caches the attribute sets of distillguard_requests by
	// (verdict, policy, shadow): building and sorting a three-attribute set
	// per request cost more than the Add itself. Policy names come from the
	// configuration, which reloads can change, so the cache is bounded
	// (maxReqOpts); combinations beyond it are built per call.
	reqOpts sync.Map // requestKey -> []metric.AddOption
	reqN    atomic.Int32
}

type requestKey struct {
	verdict, policy string
	shadow          bool
}

const maxReqOpts = 256

func newMetrics(mp metric.MeterProvider) (*metrics, error) {
	mt := mp.Meter("github.com/distillguard/distillguard/extproc")
	m := &metrics{}
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	var err error
	m.streams, err = mt.Int64UpDownCounter("distillguard_streams_active",
		metric.WithDescription("ext_proc streams (HTTP exchanges) in flight."))
	add(err)
	m.messages, err = mt.Int64Counter("distillguard_messages",
		metric.WithDescription("ext_proc messages received from Envoy, by kind."))
	add(err)
	m.duration, err = mt.Float64Histogram("distillguard_message_duration",
		metric.WithUnit("s"),
		metric.WithDescription("Time to process one ext_proc message (excluding gRPC send), by kind. Headers and trailers messages are all recorded; body messages are sampled, one in 8 per stream."),
		metric.WithExplicitBucketBoundaries(5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25))
	add(err)
	m.requests, err = mt.Int64Counter("distillguard_requests",
		metric.WithDescription("Requests decided, by scored verdict, policy set and shadow flag."))
	add(err)
	m.passthrough, err = mt.Int64Counter("distillguard_passthroughs",
		metric.WithDescription("Bodies or inputs left untouched (or fallbacks taken), by reason."))
	add(err)
	m.events, err = mt.Int64Counter("distillguard_events_rewritten",
		metric.WithDescription("SSE events and JSON documents whose bytes were changed."))
	add(err)
	m.bytes, err = mt.Int64Counter("distillguard_body_bytes",
		metric.WithUnit("By"),
		metric.WithDescription("Body bytes received from Envoy (direction=in) and sent back in replies (direction=out)."))
	add(err)
	m.immediate, err = mt.Int64Counter("distillguard_immediate_responses",
		metric.WithDescription("Requests answered locally (rejected), by HTTP status."))
	add(err)
	m.protocol, err = mt.Int64Counter("distillguard_protocol_errors",
		metric.WithDescription("ext_proc messages that violate the protocol contract, by kind."))
	add(err)
	m.refusals, err = mt.Int64Counter("distillguard_refusals",
		metric.WithDescription("Exchanges refused with an error status (a request body not understood, too large, of an unsupported encoding or media type; duplicate or missing credentials; the memory bound; a response that cannot be rewritten), by reason."))
	add(err)
	m.watermarked, err = mt.Int64Counter("distillguard_watermarked_responses",
		metric.WithDescription("Responses rewritten with the output watermark, by key id and mark (text, logprobs)."))
	add(err)
	m.served, err = mt.Int64Counter("distillguard_watermark_served_records",
		metric.WithDescription("Served records logged (watermark.log_served), by key id and whether the record was truncated."))
	add(err)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for k := range numKinds {
		o := metric.WithAttributeSet(attribute.NewSet(attribute.String("kind", k.String())))
		m.kindAdd[k] = []metric.AddOption{o}
		m.kindRec[k] = []metric.RecordOption{o}
	}
	m.reasonOpt = make(map[string]metric.MeasurementOption, len(allReasons))
	for _, r := range allReasons {
		m.reasonOpt[r] = metric.WithAttributeSet(attribute.NewSet(attribute.String("reason", r)))
	}
	m.inAdd = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("direction", "in")))}
	m.outAdd = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("direction", "out")))}
	return m, nil
}

// tallyFlushEvery bounds how many messages a stream's counts may lag behind
// in the exported counters: a token stream lives for seconds to minutes, so
// its counts show up while it runs, not only when it ends.
const tallyFlushEvery = 64

// tally accumulates one stream's per-message counts (messages by kind, body
// bytes, events rewritten) in plain integers owned by the stream's
// goroutine. They reach the shared counters every tallyFlushEvery messages
// and when the stream ends: each counter Add in the SDK costs an option
// resolution, an attribute-set dedup and an atomic update on a shared cache
// line, which per message was a visible part of the per-message cost.
type tally struct {
	messages [numKinds]int64
	bytesIn  int64
	bytesOut int64
	events   int64
	pending  int // messages since the last flush
	// eventsTotal is the stream's events flushed so far (the stream's
	// span reports the total; see traceEnd).
	eventsTotal int64
}

// recorder is where one stream's measurements go: per-message counts into
// its tally, the rest straight to the shared instruments. It is owned by
// the stream's goroutine, like the stream.
type recorder struct {
	m *metrics
	// mctx is the context measurements are recorded with: the stream's
	// context when it carries a span (exemplars), else
	// context.Background(), so the SDK's per-measurement span lookup does
	// not walk gRPC's context chain (see metricsContext).
	mctx  context.Context
	tally tally
}

func (r *recorder) pass(reason string) { r.m.pass(r.mctx, reason) }

// passN counts n pass-throughs for reason at once.
func (r *recorder) passN(reason string, n int64) {
	r.m.passthrough.Add(r.mctx, n, r.m.reasonOpt[reason])
}

func (r *recorder) countIn(n int) { r.tally.bytesIn += int64(n) }

func (r *recorder) countOut(n int) { r.tally.bytesOut += int64(n) }

// flush adds the accumulated counts to the counters and clears them.
func (m *metrics) flush(ctx context.Context, t *tally) {
	for k, n := range t.messages {
		if n > 0 {
			m.messages.Add(ctx, n, m.kindAdd[k]...)
		}
	}
	if t.bytesIn > 0 {
		m.bytes.Add(ctx, t.bytesIn, m.inAdd...)
	}
	if t.bytesOut > 0 {
		m.bytes.Add(ctx, t.bytesOut, m.outAdd...)
	}
	if t.events > 0 {
		m.events.Add(ctx, t.events)
	}
	*t = tally{eventsTotal: t.eventsTotal + t.events}
}

// observeMessage records one message's processing time (for the messages
// stream.timed selects: the histogram's count is not the number of messages,
// distillguard_messages is).
func (m *metrics) observeMessage(ctx context.Context, k msgKind, d time.Duration) {
	m.duration.Record(ctx, d.Seconds(), m.kindRec[k]...)
}

func (m *metrics) pass(ctx context.Context, reason string) {
	opt, ok := m.reasonOpt[reason]
	if !ok {
		opt = metric.WithAttributes(attribute.String("reason", reason))
	}
	m.passthrough.Add(ctx, 1, opt)
}

func (m *metrics) request(ctx context.Context, verdict, policy string, shadow bool) {
	k := requestKey{verdict, policy, shadow}
	if o, ok := m.reqOpts.Load(k); ok {
		m.requests.Add(ctx, 1, o.([]metric.AddOption)...)
		return
	}
	o := []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(
		attribute.String("verdict", verdict),
		attribute.String("policy", policy),
		attribute.Bool("shadow", shadow)))}
	if m.reqN.Load() < maxReqOpts {
		if _, loaded := m.reqOpts.LoadOrStore(k, o); !loaded {
			m.reqN.Add(1)
		}
	}
	m.requests.Add(ctx, 1, o...)
}

func (m *metrics) immediateResponse(ctx context.Context, status int) {
	m.immediate.Add(ctx, 1, metric.WithAttributes(attribute.String("status", strconv.Itoa(status))))
}

func (m *metrics) protocolError(ctx context.Context, kind string) {
	m.protocol.Add(ctx, 1, metric.WithAttributes(attribute.String("kind", kind)))
}

func (m *metrics) refusal(ctx context.Context, reason string) {
	m.refusals.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", reason)))
}
