package envoytest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	procv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// expected reply kinds (Envoy's callback states).
type expect int

const (
	expReqHeaders expect = iota
	expReqBody
	expReqTrailers
	expRespHeaders
	expRespBody
	expRespTrailers
)

var expNames = [...]string{"request_headers", "request_body", "request_trailers", "response_headers", "response_body", "response_trailers"}

type outcome int

const (
	replied  outcome = iota // a matching reply arrived and may be applied
	bypassed                // processing is complete: continue unprocessed
	ended                   // a local reply ends the exchange
)

type run struct {
	cfg    *Config
	client extprocv3.ExternalProcessorClient
	ctx    context.Context    // the exchange (upstream calls)
	sctx   context.Context    // the side stream
	cancel context.CancelFunc // cancels sctx
	st     extprocv3.ExternalProcessor_ProcessClient
	res    *Result
	mode   *procv3.ProcessingMode

	mu        sync.Mutex // guards res.Sent and st.Send (duplex sender)
	timedOut  atomic.Bool
	pcSent    bool
	attrsSent bool
	complete  bool // Envoy's processing_complete_: the processor is ignored
	local     bool // a local reply was sent
	// respStarted: the response headers went downstream (a headers reply
	// in a mode that does not hold them, or the first body reply in one
	// that does); a local reply after that is a stream reset.
	respStarted bool
}

func (r *run) violate(format string, args ...any) {
	r.res.Violations = append(r.res.Violations, fmt.Sprintf(format, args...))
}

// close ends the side stream the way Envoy does (half-close) and checks the
// processor sends nothing more.
func (r *run) close() {
	defer r.cancel()
	if r.st == nil {
		return
	}
	r.mu.Lock()
	_ = r.st.CloseSend()
	r.mu.Unlock()
	for {
		m, err := r.st.Recv()
		if err != nil {
			return
		}
		r.res.Received = append(r.res.Received, m)
		if !r.complete || r.cfg.ObservabilityMode {
			r.violate("unexpected %s reply after the exchange", ReplyKind(m))
		}
	}
}

func (r *run) open() error {
	if r.st != nil {
		return nil
	}
	ctx := r.sctx
	if len(r.cfg.InitialMetadata) > 0 {
		md, _ := metadata.FromOutgoingContext(ctx) // the caller's, kept
		ctx = metadata.NewOutgoingContext(ctx, metadata.Join(md, r.cfg.InitialMetadata))
	}
	st, err := r.client.Process(ctx)
	if err != nil {
		return err
	}
	r.st = st
	return nil
}

// send adds what Envoy puts on a message (protocol_config on the first one,
// request attributes on the first request-path one, the observability flag)
// and sends it.
func (r *run) send(m *extprocv3.ProcessingRequest, request bool) error {
	if err := r.open(); err != nil {
		return err
	}
	if r.cfg.ObservabilityMode {
		m.ObservabilityMode = true
	} else if r.cfg.SendProtocolConfig && !r.pcSent {
		r.pcSent = true
		m.ProtocolConfig = ProtocolConfig(r.mode.GetRequestBodyMode(), r.mode.GetResponseBodyMode())
	}
	if request && r.cfg.RequestAttributes && !r.attrsSent {
		r.attrsSent = true
		t := r.cfg.RequestTime
		if t.IsZero() {
			t = time.Now()
		}
		m.Attributes = Attributes(t, r.cfg.SourceAddress)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.res.Sent = append(r.res.Sent, m)
	return r.st.Send(m)
}

// recv waits for one reply, bounded by message_timeout when it applies.
func (r *run) recv(timed bool) (*extprocv3.ProcessingResponse, error) {
	if timed && r.cfg.MessageTimeout > 0 {
		t := time.AfterFunc(r.cfg.MessageTimeout, func() {
			r.timedOut.Store(true)
			r.cancel()
		})
		defer t.Stop()
	}
	m, err := r.st.Recv()
	if err == nil {
		r.res.Received = append(r.res.Received, m)
	}
	return m, err
}

// await waits for the reply to the message just sent (callback state exp)
// and classifies it as Envoy's onReceiveMessage does.
func (r *run) await(exp expect, timed bool) (*extprocv3.ProcessingResponse, outcome) {
	if r.complete {
		return nil, bypassed
	}
	for {
		m, err := r.recv(timed)
		if err != nil {
			return nil, r.streamFailed(err)
		}
		if m.GetOverrideMessageTimeout() != nil {
			continue // "ignores other fields in the response"
		}
		header := exp == expReqHeaders || exp == expRespHeaders
		if m.GetModeOverride() != nil {
			r.modeOverride(m.GetModeOverride(), header)
		}
		kind := ReplyKind(m)
		r.acceptMetadata(m, kind)
		if ir := m.GetImmediateResponse(); ir != nil {
			r.immediate(ir)
			return nil, ended
		}
		if kind != expNames[exp] {
			return nil, r.spurious("%s reply while waiting for %s", kind, expNames[exp])
		}
		return m, replied
	}
}

func (r *run) streamFailed(err error) outcome {
	if errors.Is(err, io.EOF) {
		// onGrpcClose: "Successful close. We can ignore the stream for the
		// rest of our request and response processing."
		r.complete = true
		return bypassed
	}
	if r.timedOut.Load() {
		// message_timeout fired.
		if r.cfg.FailureModeAllow {
			r.complete = true
			return bypassed
		}
		r.localReply(http.StatusGatewayTimeout, nil, nil, "ext_proc_error_per-message_timeout_exceeded")
		return ended
	}
	if r.cfg.FailureModeAllow {
		r.complete = true
		return bypassed
	}
	r.localReply(r.cfg.StatusOnError, nil, nil, fmt.Sprintf("ext_proc_error_gRPC_error_%d", status.Code(err)))
	return ended
}

// spurious handles a reply that does not match the callback state: Envoy
// fails open with failure_mode_allow, else answers with status_on_error.
func (r *run) spurious(format string, args ...any) outcome {
	msg := fmt.Sprintf(format, args...)
	r.violate("spurious message: %s", msg)
	if r.cfg.FailureModeAllow {
		r.complete = true
		return bypassed
	}
	r.localReply(r.cfg.StatusOnError, nil, nil, "spurious_message")
	return ended
}

// mutationFailed is handleErrorResponse: a rejected mutation always ends
// the exchange with status_on_error.
func (r *run) mutationFailed(err error) {
	r.violate("rejected mutation: %v", err)
	r.localReply(r.cfg.StatusOnError, nil, nil, strings.ReplaceAll(err.Error(), " ", "_"))
}
