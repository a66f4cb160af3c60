// Package extproc is distillguard's Envoy external-processing server: it
// implements envoy.service.ext_proc.v3.ExternalProcessor, scores each request
// once its body is known, answers rejected requests with an OpenAI-style
// error, and rewrites request and response bodies (streamed or buffered) with
// the policy the verdict resolves to.
//
// The protocol contract is the one documented in go-control-plane
// envoy@v1.40.0, service/ext_proc/v3/external_processor.pb.go and
// extensions/filters/http/ext_proc/v3/{ext_proc,processing_mode}.pb.go
// (https://www.envoyproxy.io/docs/envoy/latest/api-v3/service/ext_proc/v3/external_processor.proto).
// Every design choice that depends on what Envoy does with a reply cites the
// field it relies on.
//
// Request bodies, by body mode (protocol_config when Envoy sends it, else
// processing.request_body_mode):
//
//   - BUFFERED: the one body message is parsed, scored and answered with the
//     rewritten body, a matching content-length and the decision metadata.
//   - STREAMED: chunks are held (answered with clear_body) up to
//     max_body_bytes; the reply to the last one carries the whole rewritten
//     body. Content-length goes on the headers reply.
//   - FULL_DUPLEX_STREAMED: the headers reply is held until the body ends,
//     then headers, then the body as streamed_response chunks (<= 64 KiB).
//   - BUFFERED_PARTIAL: as BUFFERED when end_of_stream is set; a cut body is
//     scored from the headers and passed through.
//   - NONE, or no body: decided at the request headers.
//
// On a guarded route (config.Action.Guarded: its tiers act on requests) a
// body is read strictly (mutate.ReadRequest) and refused with an
// OpenAI-style error when it is not understood (refuse.go): malformed or
// ambiguous JSON, a guarded field of another type, a body beyond
// max_body_bytes (413), an unsupported content-type, charset or
// content-encoding (415; gzip is decoded and forwarded as identity),
// duplicate credential headers, no credential and no address (401), the
// server-wide held-bytes bound (503). Elsewhere, and on routes that say
// on_oversize: pass for oversized bodies, bodies are decided from what can
// be read and passed, counted.
//
// Response bodies are rewritten when the resolved output policy changes
// something, the status is 2xx and the content type is SSE or JSON. SSE is
// framed incrementally (complete events released per chunk, the unfinished
// tail held up to max_held_bytes; a longer event is dropped and skipped in
// bounded memory, and the events after it are rewritten); JSON is
// rewritten whole (mode_override to BUFFERED when allowed, otherwise held
// like a STREAMED request body). Gzip is decoded (bounded per body and per
// chunk) and sent on as identity. A body that cannot be rewritten (too
// large, not decodable, an unknown encoding) fails closed: a 502 while
// Envoy holds the headers, a reset after them, a cut once bytes were
// released; on_oversize: pass routes pass it instead, counted.
//
// Known limit: in STREAMED, a body that ends with trailers instead of
// end_of_stream while bytes are held cannot release them: a trailers reply
// carries no body, and with the trailer mode SKIP Envoy sends nothing at
// all. This is counted (held_at_trailers, held_at_end) and warned about.
// OpenAI-compatible servers and clients do not send trailers;
// FULL_DUPLEX_STREAMED has no such limit.
package extproc

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/mutate"
	"github.com/distillguard/distillguard/scoring"
)

// Options configures a Server.
type Options struct {
	// Config returns the configuration in force. It is called once per gRPC
	// stream (one HTTP request/response exchange), so a configuration swapped
	// on SIGHUP never changes a stream mid-flight. Nil means the embedded
	// default.
	Config func() *config.Config
	// Scorer scores each request; nil allows everything.
	Scorer scoring.Scorer
	// MeterProvider receives the distillguard_* instruments; nil disables
	// metrics.
	MeterProvider metric.MeterProvider
	// Logger gets a debug line per stream and warnings on protocol
	// violations; nil discards.
	Logger *slog.Logger
	// Now is the server clock (default time.Now). Envoy's request.time
	// attribute overrides it per request when it is plausible.
	Now func() time.Time
}

// Server implements extprocv3.ExternalProcessorServer. It is safe for
// concurrent use: all per-request state lives in the Process call that owns
// it.
type Server struct {
	extprocv3.UnimplementedExternalProcessorServer

	config   func() *config.Config
	fallback *config.Config // used if config returns nil mid-run
	scorer   scoring.Scorer
	log      *slog.Logger
	now      func() time.Time
	m        *metrics

	active atomic.Int64
	ids    atomic.Uint64
	// mem is the bound on body bytes held across streams
	// (processing.max_held_total_bytes).
	mem budget
	// logs rate-limits the warnings anything reaching the port can cause.
	logs *logLimiter
	// outBufs pools the output scratch of rewritten bodies (*[]byte) across
	// streams: a reply points into it only until it is sent (see outBuf).
	outBufs sync.Pool
	// rwScratch lends large patch lists across the streams' rewriters.
	rwScratch mutate.ScratchPool
}

var _ extprocv3.ExternalProcessorServer = (*Server)(nil)

// New returns a Server.
func New(opts Options) (*Server, error) {
	s := &Server{config: opts.Config, scorer: opts.Scorer, log: opts.Logger, now: opts.Now, fallback: config.Default(), logs: newLogLimiter(time.Second)}
	if s.config == nil {
		s.config = func() *config.Config { return s.fallback }
	}
	if s.scorer == nil {
		s.scorer = scoring.AllowAll{}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	mp := opts.MeterProvider
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	m, err := newMetrics(mp)
	if err != nil {
		return nil, err
	}
	s.m = m
	if _, err := mp.Meter("github.com/distillguard/distillguard/extproc").Int64ObservableGauge("distillguard_held_bytes",
		metric.WithUnit("By"),
		metric.WithDescription("Body bytes reserved by streams against processing.max_held_total_bytes."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(s.mem.used.Load())
			return nil
		})); err != nil {
		return nil, err
	}
	if s.config() == nil {
		return nil, errors.New("extproc: Options.Config returned nil")
	}
	return s, nil
}

// Active is the number of ext_proc streams in flight.
func (s *Server) Active() int { return int(s.active.Load()) }

// Drain waits until no stream is in flight or ctx ends. It does not refuse
// new streams: grpc.Server.GracefulStop does that.
func (s *Server) Drain(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for s.active.Load() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// Process serves one ext_proc stream, which Envoy opens per HTTP request.
// The loop is deliberately small: receive, hand the message to the stream's
// state machine (owned by this goroutine only), send its replies in order.
// Every exit path (half-close, Envoy reset, client cancel, send error)
// releases the state.
func (s *Server) Process(ps extprocv3.ExternalProcessor_ProcessServer) error {
	ctx := ps.Context()
	st := s.newStream(ctx)
	s.active.Add(1)
	s.m.streams.Add(st.mctx, 1)
	defer func() {
		st.release()
		s.active.Add(-1)
		s.m.streams.Add(st.mctx, -1)
	}()
	// One request message per stream, unmarshalled into again for every
	// message (proto.Unmarshal resets it first, and sub-messages the state
	// keeps, such as the request header map, are fresh each time).
	req := new(extprocv3.ProcessingRequest)
	epoch := time.Now()
	for {
		if err := ps.RecvMsg(req); err != nil {
			if errors.Is(err, io.EOF) {
				st.end = "eof"
				return nil
			}
			// Envoy reset the stream or the client went away: the context
			// is done and there is nobody left to answer.
			st.end = "recv_error"
			return err
		}
		// Durations come from the monotonic clock alone (time.Since on a
		// fixed time.Time reads it once, where time.Now also reads the
		// wall clock), and only for the messages whose duration is
		// recorded (see timed).
		var start time.Duration
		timed := st.timed(req)
		if timed {
			start = time.Since(epoch)
		}
		replies := st.handle(req)
		if timed {
			st.srv.m.observeMessage(st.mctx, st.lastKind, time.Since(epoch)-start)
		}
		st.account()
		for _, r := range replies {
			if err := ps.Send(r); err != nil {
				st.end = "send_error"
				return err
			}
		}
		// Send has marshalled the replies: the bytes they pointed at are
		// free again. The message is emptied too: reused for the next
		// RecvMsg, it would otherwise keep the last body (up to
		// max_message_bytes) referenced while the stream waits.
		st.sent()
		req.Reset()
	}
}
