package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	procmodev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/distillguard/distillguard/extproc/envoytest"
	"github.com/distillguard/distillguard/extproc/keys"
)

// Mode is how response body chunks are sent.
type Mode int

const (
	// Streamed sends a chunk and waits for its reply before the next, as
	// Envoy does in STREAMED body mode.
	Streamed Mode = iota
	// FullDuplex sends chunks without waiting and matches the
	// streamed_response replies to them, as in FULL_DUPLEX_STREAMED.
	FullDuplex
)

func (m Mode) String() string {
	if m == FullDuplex {
		return "FULL_DUPLEX_STREAMED"
	}
	return "STREAMED"
}

// ParseMode parses "streamed" or "duplex" (or the Envoy enum names).
func ParseMode(s string) (Mode, error) {
	switch s {
	case "streamed", "STREAMED":
		return Streamed, nil
	case "duplex", "full-duplex", "FULL_DUPLEX_STREAMED":
		return FullDuplex, nil
	}
	return Streamed, fmt.Errorf("mode %q: want streamed or duplex", s)
}

// Message kinds, for the per-kind latency histograms.
const (
	KindReqHeaders = iota
	KindReqBody
	KindRespHeaders
	KindRespBody
	numKinds
)

// KindName names message kind k in reports.
func KindName(k int) string {
	switch k {
	case KindReqHeaders:
		return "request_headers"
	case KindReqBody:
		return "request_body"
	case KindRespHeaders:
		return "response_headers"
	case KindRespBody:
		return "response_body"
	}
	return fmt.Sprintf("kind %d", k)
}

// LoadConfig configures one load run.
type LoadConfig struct {
	Addr string
	// Conns is the number of HTTP/2 connections streams are spread over
	// (Envoy keeps one per worker thread). Default 2.
	Conns int
	// Concurrency is the number of concurrent HTTP exchanges (ext_proc
	// streams), each run back to back by one worker.
	Concurrency int
	// Warmup runs before measuring; nothing in it is recorded.
	Warmup time.Duration
	// Duration is the measurement window. With Exchanges set it is the
	// upper bound of the window instead.
	Duration time.Duration
	// Exchanges, when positive, ends the window after this many exchanges
	// started in it have finished.
	Exchanges int64
	// Rate is the open-loop message rate over all streams (messages/s); 0
	// runs closed-loop. Open-loop latency counts from the intended send
	// time when a send is late because the previous reply was, so
	// coordinated omission is not hidden.
	Rate float64
	// ExchangeRate, when positive, paces exchanges instead (exchanges/s
	// over all streams; Rate is then ignored): each exchange's request
	// headers are sent on the open-loop schedule and every later message
	// right after the previous reply, as Envoy sends a buffered request
	// body the moment the headers reply comes. What a message waits for
	// that the previous one started (a read begun at the request
	// headers) is then in its latency.
	ExchangeRate float64
	Mode         Mode
	// Window bounds the unanswered chunks per stream in FullDuplex mode
	// (Envoy's flow control does the same). Default 8.
	Window   int
	Workload *Workload
	Seed     uint64
	// DistinctSessions gives every exchange a session (API key and source
	// address) never seen before: the scoring path's worst case.
	DistinctSessions bool
	// Sessions is the size of the session pool otherwise (default: one per
	// worker).
	Sessions int
	// Drain bounds how long in-flight exchanges may finish after the window
	// before they are cancelled. Default 2s.
	Drain time.Duration
	// OnWindow, when set, is called at the start (true) and end (false) of
	// the measurement window, for example to sample the server's CPU.
	OnWindow func(start bool)
	// TokenInterval paces a STREAMED response body as an upstream
	// generating tokens would: chunk i is sent no earlier than i intervals
	// after the response headers (and, as Envoy does, not before the
	// previous chunk's reply). 0 sends each chunk as soon as the previous
	// one is answered.
	TokenInterval time.Duration
	// Progress, when set, is called about every 200ms with the time spent
	// in the window so far and the messages recorded.
	Progress func(inWindow time.Duration, messages, errors uint64)
}

// LoadResult is what one load run measured.
type LoadResult struct {
	Messages  uint64 `json:"messages"`
	Exchanges uint64 `json:"exchanges"`
	// Errors counts failed messages and exchanges (transport errors, a reply
	// of the wrong kind, missing duplex replies).
	Errors uint64 `json:"errors"`
	// Rejected counts exchanges the server ended with an immediate_response
	// (a throttle or block verdict).
	Rejected      uint64        `json:"rejected"`
	ModeOverrides uint64        `json:"mode_overrides"`
	Elapsed       time.Duration `json:"elapsed_ns"`
	// ClientCPU is the load generator's own CPU time in the window.
	ClientCPU time.Duration `json:"client_cpu_ns"`
	// BodiesSkipped counts exchanges whose response body was not sent at
	// all: the server answered the response headers with a mode_override
	// to NONE, which Envoy honours under allow_mode_override (as
	// envoy/envoy.yaml sets it).
	BodiesSkipped uint64   `json:"bodies_skipped"`
	ErrorSamples  []string `json:"error_samples,omitempty"`
	// Streams is the time from sending the response headers to the reply
	// to the last body chunk (or to the headers reply, when the body was
	// skipped): the time to last token the processor leaves, per exchange.
	Streams *Hist           `json:"-"`
	Latency *Hist           `json:"-"`
	ByKind  [numKinds]*Hist `json:"-"`
	SendLag *Hist           `json:"-"`
}

// MessagesPerSec is the reply rate in the window.
func (r *LoadResult) MessagesPerSec() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Messages) / r.Elapsed.Seconds()
}

// run is the shared state of one load run.
type run struct {
	cfg       *LoadConfig
	base      time.Time
	measuring atomic.Bool
	stopping  atomic.Bool
	all       *Recorder
	byKind    [numKinds]*Recorder
	lag       *Recorder
	messages  atomic.Uint64
	exchanges atomic.Uint64
	errs      atomic.Uint64
	rejected  atomic.Uint64
	overrides atomic.Uint64
	skipped   atomic.Uint64
	streams   *Recorder
	// count mode
	tickets  atomic.Int64
	finished atomic.Int64
	allDone  chan struct{}
	doneOnce sync.Once

	mu      sync.Mutex
	samples []string
}

func (r *run) fail(err error) {
	if r.stopping.Load() {
		return // cancelled on purpose at the end of the run
	}
	r.errs.Add(1)
	r.mu.Lock()
	if len(r.samples) < 10 {
		r.samples = append(r.samples, err.Error())
	}
	r.mu.Unlock()
}

// Run drives load as configured until the window ends, then returns what it
// measured. It returns an error only for a configuration that cannot run;
// message failures are counted in the result.
func Run(ctx context.Context, cfg LoadConfig) (*LoadResult, error) {
	if cfg.Workload == nil {
		return nil, errors.New("load: no workload")
	}
	if cfg.Concurrency < 1 || cfg.Concurrency > 100000 {
		return nil, fmt.Errorf("load: concurrency %d out of [1,100000]", cfg.Concurrency)
	}
	if cfg.Duration <= 0 {
		return nil, errors.New("load: duration must be positive")
	}
	if cfg.Rate < 0 || cfg.ExchangeRate < 0 {
		return nil, errors.New("load: rate must not be negative")
	}
	if err := CheckLoopback(cfg.Addr); err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	if cfg.Conns <= 0 {
		cfg.Conns = 2
	}
	if cfg.Window <= 0 {
		cfg.Window = 8
	}
	if cfg.Drain <= 0 {
		cfg.Drain = 2 * time.Second
	}
	if cfg.Sessions <= 0 {
		cfg.Sessions = cfg.Concurrency
	}
	conns := make([]*grpc.ClientConn, cfg.Conns)
	for i := range conns {
		cc, err := grpc.NewClient(cfg.Addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)),
		)
		if err != nil {
			for _, c := range conns[:i] {
				c.Close()
			}
			return nil, fmt.Errorf("load: dial %s: %w", cfg.Addr, err)
		}
		conns[i] = cc
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()

	shards := 16
	r := &run{cfg: &cfg, base: time.Now(), all: NewRecorder(shards), lag: NewRecorder(shards), streams: NewRecorder(shards), allDone: make(chan struct{})}
	for k := range r.byKind {
		r.byKind[k] = NewRecorder(shards)
	}
	r.tickets.Store(-1) // unlimited until a counted window starts
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()

	maxChunks := 0
	for _, xs := range cfg.Workload.exchanges {
		for _, x := range xs {
			maxChunks = max(maxChunks, len(x.chunks))
		}
	}
	var wg sync.WaitGroup
	for i := 0; i < cfg.Concurrency; i++ {
		w := newWorker(r, i, extprocv3.NewExternalProcessorClient(conns[i%len(conns)]), maxChunks)
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.loop(wctx)
		}()
	}

	// The progress ticker is owned here and stopped before Run returns.
	var windowStart atomic.Int64
	tickDone := make(chan struct{})
	tickStop := make(chan struct{})
	go func() {
		defer close(tickDone)
		if cfg.Progress == nil {
			return
		}
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-tickStop:
				return
			case <-t.C:
				var in time.Duration
				if s := windowStart.Load(); s != 0 {
					in = time.Duration(time.Now().UnixNano() - s)
				}
				cfg.Progress(in, r.messages.Load(), r.errs.Load())
			}
		}
	}()

	sleepCtx(ctx, cfg.Warmup)
	if cfg.OnWindow != nil {
		cfg.OnWindow(true)
	}
	cpu0 := selfCPU()
	if cfg.Exchanges > 0 {
		r.tickets.Store(cfg.Exchanges)
	}
	start := time.Now()
	windowStart.Store(start.UnixNano())
	r.measuring.Store(true)
	if cfg.Exchanges > 0 {
		t := time.NewTimer(cfg.Duration)
		select {
		case <-r.allDone:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	} else {
		sleepCtx(ctx, cfg.Duration)
	}
	r.measuring.Store(false)
	elapsed := time.Since(start)
	cpu1 := selfCPU()
	if cfg.OnWindow != nil {
		cfg.OnWindow(false)
	}
	close(tickStop)
	<-tickDone

	// Let exchanges in flight finish (they are no longer recorded), then
	// cancel whatever is left.
	r.tickets.Store(0)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(cfg.Drain)
	select {
	case <-done:
	case <-t.C:
		r.stopping.Store(true)
		cancel()
		<-done
	}
	t.Stop()
	r.stopping.Store(true)

	res := &LoadResult{
		Messages:      r.messages.Load(),
		Exchanges:     r.exchanges.Load(),
		Errors:        r.errs.Load(),
		Rejected:      r.rejected.Load(),
		ModeOverrides: r.overrides.Load(),
		BodiesSkipped: r.skipped.Load(),
		Streams:       r.streams.Snapshot(),
		Elapsed:       elapsed,
		ClientCPU:     cpu1 - cpu0,
		Latency:       r.all.Snapshot(),
		SendLag:       r.lag.Snapshot(),
	}
	for k := range res.ByKind {
		res.ByKind[k] = r.byKind[k].Snapshot()
	}
	r.mu.Lock()
	res.ErrorSamples = append([]string(nil), r.samples...)
	r.mu.Unlock()
	return res, nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// selfCPU is this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// worker runs exchanges back to back on its own streams. Everything it
// sends except its request headers is shared read-only.
type worker struct {
	r      *run
	id     int
	client extprocv3.ExternalProcessorClient
	rng    *rand.Rand
	seq    uint64

	// open loop
	interval    time.Duration
	next        time.Duration // since r.base
	perExchange bool          // interval paces exchanges (ExchangeRate)

	hdr     *extprocv3.ProcessingRequest
	pc      *extprocv3.ProtocolConfiguration
	path    *corev3.HeaderValue
	auth    *corev3.HeaderValue
	reqID   *corev3.HeaderValue
	length  *corev3.HeaderValue
	reqTime *structpb.Value_StringValue
	srcAddr *structpb.Value_StringValue
	resp    *extprocv3.ProcessingResponse
	starts  []atomic.Int64 // FullDuplex: send time of each chunk, since r.base
	sem     chan struct{}
	// skipBody: the response headers reply switched the body mode to
	// NONE (mode_override), so no body message is sent.
	skipBody bool
	ttlt     time.Duration // the last exchange's time to last token
	timeBuf  []byte
	valueBuf []byte
}

func newWorker(r *run, id int, client extprocv3.ExternalProcessorClient, maxChunks int) *worker {
	w := &worker{
		r:      r,
		id:     id,
		client: client,
		rng:    rand.New(rand.NewPCG(r.cfg.Seed, uint64(id)+1)),
		resp:   &extprocv3.ProcessingResponse{},
		starts: make([]atomic.Int64, maxChunks),
		sem:    make(chan struct{}, r.cfg.Window),
	}
	if r.cfg.ExchangeRate > 0 {
		w.interval = time.Duration(float64(r.cfg.Concurrency) / r.cfg.ExchangeRate * float64(time.Second))
		w.perExchange = true
	} else if r.cfg.Rate > 0 {
		w.interval = time.Duration(float64(r.cfg.Concurrency) / r.cfg.Rate * float64(time.Second))
		// A random phase keeps workers from sending in lockstep.
		w.next = time.Duration(w.rng.Int64N(int64(w.interval) + 1))
	}
	// One request headers message per worker, built once; prepare sets
	// the per-exchange values in place, so sending it allocates nothing.
	w.path = envoytest.Header(":path", "/v1/chat/completions")
	w.auth = envoytest.Header("authorization", "")
	w.reqID = envoytest.Header("x-request-id", "")
	w.length = envoytest.Header("content-length", "0")
	w.hdr = envoytest.RequestHeaders(&corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		envoytest.Header(":authority", "api.bench.internal"),
		envoytest.Header(":method", "POST"),
		w.path,
		envoytest.Header(":scheme", "https"),
		envoytest.Header("content-type", "application/json"),
		envoytest.Header("accept", "application/json"),
		envoytest.Header("user-agent", "OpenAI/Python 1.54.0"),
		w.auth,
		w.reqID,
		w.length,
		envoytest.Header("x-forwarded-proto", "https"),
	}}, false)
	// Envoy's request_attributes, as configured in envoy/envoy.yaml.
	w.hdr.Attributes = envoytest.Attributes(time.Time{}, "")
	attrs := w.hdr.Attributes[keys.AttributeNamespace].GetFields()
	w.reqTime = attrs[keys.RequestTime].GetKind().(*structpb.Value_StringValue)
	w.srcAddr = attrs[keys.SourceAddress].GetKind().(*structpb.Value_StringValue)
	w.pc = envoytest.ProtocolConfig(procmodev3.ProcessingMode_BUFFERED, procmodev3.ProcessingMode_NONE)
	w.hdr.ProtocolConfig = w.pc
	return w
}

// prepare fills the per-exchange fields of the request headers message.
func (w *worker) prepare(x *exchange) {
	w.seq++
	var session uint64
	if w.r.cfg.DistinctSessions {
		session = uint64(w.id)<<32 | w.seq
	} else {
		session = uint64(w.id % w.r.cfg.Sessions)
	}
	w.path.RawValue = append(w.path.RawValue[:0], x.path...)
	w.auth.RawValue = strconv.AppendUint(append(w.auth.RawValue[:0], "Bearer sk-bench-"...), session, 16)
	w.reqID.RawValue = strconv.AppendUint(strconv.AppendUint(append(w.reqID.RawValue[:0], "bench-"...), uint64(w.id), 10), w.seq, 36)
	w.length.RawValue = strconv.AppendInt(w.length.RawValue[:0], int64(len(x.reqRaw)), 10)
	// request.time as Envoy renders a timestamp attribute: RFC 3339.
	w.timeBuf = time.Now().UTC().AppendFormat(w.timeBuf[:0], time.RFC3339Nano)
	w.reqTime.StringValue = string(w.timeBuf)
	// source.address: an address in 198.18.0.0/15, the range RFC 2544
	// reserves for benchmarks. It is only a string in the message.
	b := append(w.valueBuf[:0], "198."...)
	b = strconv.AppendUint(b, 18+(session>>16)&1, 10)
	b = append(b, '.')
	b = strconv.AppendUint(b, (session>>8)&0xff, 10)
	b = append(b, '.')
	b = strconv.AppendUint(b, session&0xff, 10)
	b = append(b, ':')
	b = strconv.AppendUint(b, 1024+(session>>17)%60000, 10)
	w.valueBuf = b
	w.srcAddr.StringValue = string(b)
	w.pc.ResponseBodyMode = x.respMode
	if w.r.cfg.Mode == FullDuplex && x.respMode == procmodev3.ProcessingMode_STREAMED {
		w.pc.ResponseBodyMode = procmodev3.ProcessingMode_FULL_DUPLEX_STREAMED
	}
}

func (w *worker) loop(ctx context.Context) {
	for ctx.Err() == nil {
		// Tickets bound the exchanges of a counted window: -1 is
		// unlimited, 0 means stop.
		t := w.r.tickets.Load()
		counted := false
		if t == 0 {
			return
		}
		if t > 0 && w.r.measuring.Load() {
			if w.r.tickets.Add(-1) < 0 {
				return
			}
			counted = true
		}
		x := w.r.cfg.Workload.pick(w.rng)
		w.prepare(x)
		if err := w.exchange(ctx, x); err != nil {
			w.r.fail(err)
			// Back off a little so a dead server does not turn the
			// worker into a busy loop.
			sleepCtx(ctx, 10*time.Millisecond)
		} else if w.r.measuring.Load() {
			// Counted together, so the three agree at the window's edges.
			w.r.exchanges.Add(1)
			if w.ttlt >= 0 { // not for a rejected exchange
				w.r.streams.Record(w.id, w.ttlt)
			}
			if w.skipBody {
				w.r.skipped.Add(1)
			}
		}
		if counted && w.r.finished.Add(1) == w.r.cfg.Exchanges {
			w.r.doneOnce.Do(func() { close(w.r.allDone) })
		}
	}
}

// pace returns the time a message counts from: in closed loop, now; in open
// loop, the intended send time when the worker is late, or the moment it
// woke up when it had to wait (timer overshoot is the generator's, not the
// server's).
func (w *worker) pace() time.Duration {
	now := time.Since(w.r.base)
	if w.interval == 0 {
		return now
	}
	intended := w.next
	w.next += w.interval
	if now < intended {
		time.Sleep(intended - now)
		return time.Since(w.r.base)
	}
	if w.r.measuring.Load() {
		w.r.lag.Record(w.id, now-intended)
	}
	return intended
}

// msgStart is the time a message of kind counts from: paced, unless
// exchanges are paced and this is not an exchange's first message.
func (w *worker) msgStart(kind int) time.Duration {
	if w.perExchange && kind != KindReqHeaders {
		return time.Since(w.r.base)
	}
	return w.pace()
}

func (w *worker) record(kind int, start time.Duration) {
	lat := time.Since(w.r.base) - start
	if !w.r.measuring.Load() {
		return
	}
	w.r.all.Record(w.id, lat)
	w.r.byKind[kind].Record(w.id, lat)
	w.r.messages.Add(1)
}

var errRejected = errors.New("rejected")

// roundTrip sends m and waits for its reply, skipping standalone
// mode_override messages (ProcessingResponse.mode_override, "Standalone
// mode_override response").
func (w *worker) roundTrip(st extprocv3.ExternalProcessor_ProcessClient, m *extprocv3.ProcessingRequest, kind int) error {
	start := w.msgStart(kind)
	if err := st.Send(m); err != nil {
		return fmt.Errorf("send %s: %w", KindName(kind), err)
	}
	for {
		if err := st.RecvMsg(w.resp); err != nil {
			return fmt.Errorf("recv %s: %w", KindName(kind), err)
		}
		if mo := w.resp.ModeOverride; mo != nil {
			w.r.overrides.Add(1)
			if kind == KindRespHeaders && mo.GetResponseBodyMode() == procmodev3.ProcessingMode_NONE {
				w.skipBody = true
			}
		}
		if w.resp.Response != nil {
			break
		}
	}
	w.record(kind, start)
	if w.resp.GetImmediateResponse() != nil {
		w.r.rejected.Add(1)
		return errRejected
	}
	if got := envoytest.ReplyKind(w.resp); got != KindName(kind) {
		return fmt.Errorf("reply %s to %s", got, KindName(kind))
	}
	return nil
}

func (w *worker) exchange(ctx context.Context, x *exchange) (err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := w.client.Process(sctx)
	if err != nil {
		return fmt.Errorf("open stream: %w", err)
	}
	defer func() {
		if errors.Is(err, errRejected) {
			// Envoy sends the immediate response and closes the stream.
			err = nil
		}
	}()
	if err := w.roundTrip(st, w.hdr, KindReqHeaders); err != nil {
		return err
	}
	if err := w.roundTrip(st, x.reqBody, KindReqBody); err != nil {
		return err
	}
	w.skipBody, w.ttlt = false, -1
	respStart := time.Since(w.r.base)
	if err := w.roundTrip(st, x.respHeaders, KindRespHeaders); err != nil {
		return err
	}
	switch {
	case w.skipBody:
	case w.pc.ResponseBodyMode == procmodev3.ProcessingMode_FULL_DUPLEX_STREAMED:
		if err := w.duplexBody(sctx, cancel, st, x); err != nil {
			return err
		}
	default:
		for i, c := range x.chunks {
			if iv := w.r.cfg.TokenInterval; iv > 0 {
				// The upstream's token i is not there before its time.
				if d := respStart + time.Duration(i)*iv - time.Since(w.r.base); d > 0 {
					time.Sleep(d)
				}
			}
			if err := w.roundTrip(st, c, KindRespBody); err != nil {
				return err
			}
		}
	}
	w.ttlt = time.Since(w.r.base) - respStart
	if w.skipBody && w.r.cfg.TokenInterval > 0 && len(x.chunks) > 0 {
		// The body goes on without the processor: its last token
		// arrives on the upstream's schedule.
		w.ttlt = max(w.ttlt, time.Duration(len(x.chunks)-1)*w.r.cfg.TokenInterval)
	}
	// Half-close and wait for the server to end the stream cleanly.
	if err := st.CloseSend(); err != nil {
		return fmt.Errorf("close send: %w", err)
	}
	if err := st.RecvMsg(w.resp); !errors.Is(err, io.EOF) {
		if err == nil {
			return fmt.Errorf("unexpected reply %T after the exchange", w.resp.Response)
		}
		if status.Code(err) == codes.Canceled && ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("stream end: %w", err)
	}
	return nil
}

// duplexBody sends the body chunks from a sender goroutine, at most Window
// unanswered, while this goroutine matches replies to chunks by counting
// the SSE events they complete: a FULL_DUPLEX_STREAMED server may split or
// merge chunks, but it passes every event on.
func (w *worker) duplexBody(ctx context.Context, cancel context.CancelFunc, st extprocv3.ExternalProcessor_ProcessClient, x *exchange) error {
	n := len(x.chunks)
	// The semaphore is per worker and every exchange leaves it empty.
	for len(w.sem) > 0 {
		<-w.sem
	}
	sent := make(chan error, 1)
	go func() {
		for i, c := range x.chunks {
			select {
			case w.sem <- struct{}{}:
			case <-ctx.Done():
				sent <- ctx.Err()
				return
			}
			w.starts[i].Store(int64(w.msgStart(KindRespBody)))
			if err := st.Send(c); err != nil {
				sent <- fmt.Errorf("send response_body %d: %w", i, err)
				return
			}
		}
		sent <- nil
	}()
	var ec eventCounter
	matched := 0
	var rerr error
	for matched < n {
		if err := st.RecvMsg(w.resp); err != nil {
			rerr = fmt.Errorf("recv response_body: %w", err)
			break
		}
		if w.resp.Response == nil {
			continue
		}
		sr := w.resp.GetResponseBody().GetResponse().GetBodyMutation().GetStreamedResponse()
		if sr == nil {
			if _, ok := w.resp.Response.(*extprocv3.ProcessingResponse_ImmediateResponse); ok {
				w.r.rejected.Add(1)
				rerr = errRejected
			} else {
				rerr = fmt.Errorf("full-duplex reply %T without streamed_response", w.resp.Response)
			}
			break
		}
		now := time.Since(w.r.base)
		for k := ec.feed(sr.Body); k > 0 && matched < n; k-- {
			lat := now - time.Duration(w.starts[matched].Load())
			if w.r.measuring.Load() {
				w.r.all.Record(w.id, lat)
				w.r.byKind[KindRespBody].Record(w.id, lat)
				w.r.messages.Add(1)
			}
			matched++
			<-w.sem
		}
		if sr.EndOfStream {
			break
		}
	}
	if rerr == nil && matched < n {
		rerr = fmt.Errorf("full duplex: %d of %d events came back before end_of_stream", matched, n)
	}
	if rerr != nil {
		cancel() // unblocks the sender
	}
	if serr := <-sent; rerr == nil && serr != nil {
		rerr = serr
	}
	return rerr
}

// eventCounter counts SSE event terminators (a blank line: "\n\n", with
// optional '\r' before each '\n') across chunk boundaries
// (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation).
type eventCounter struct {
	afterNL bool // the last byte (ignoring '\r') was a '\n' ending a non-empty line
}

func (e *eventCounter) feed(b []byte) int {
	n := 0
	for _, c := range b {
		switch c {
		case '\n':
			if e.afterNL {
				n++
				e.afterNL = false
			} else {
				e.afterNL = true
			}
		case '\r':
		default:
			e.afterNL = false
		}
	}
	return n
}
