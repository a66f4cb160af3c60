package extproc

import (
	"sort"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/distillguard/distillguard/scoring"
)

// A stream's span is the one found in its context: the gRPC server span
// of the Process RPC (the server package installs otelgrpc's stats handler
// when tracing is configured; the span is a child of the context Envoy
// sent in the stream's metadata). extproc only annotates it, once when the
// request is decided and once when the stream ends; never per message, so
// a token stream costs the same whatever its length. Without tracing, or
// for a stream that is not sampled, the span does not record and both
// calls return after one context lookup.
//
// Attribute names: the semantic conventions' where one exists
// (gen_ai.request.model, https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/;
// the rpc.* ones are otelgrpc's), distillguard.* for the rest. The
// session is the keyed hash the metadata and the audit trail carry, never
// a credential.
const (
	attrVerdict         = attribute.Key("distillguard.verdict") // the scorer's verdict
	attrAction          = attribute.Key("distillguard.action")  // the verdict enforced (allow in shadow mode)
	attrPolicy          = attribute.Key("distillguard.policy")
	attrShadow          = attribute.Key("distillguard.shadow")
	attrSession         = attribute.Key("distillguard.session")
	attrScore           = attribute.Key("distillguard.score")
	attrSignals         = attribute.Key("distillguard.signals")              // top signals, by contribution
	attrContributions   = attribute.Key("distillguard.signal_contributions") // their contributions, same order
	attrRejectStatus    = attribute.Key("distillguard.reject.status")        // HTTP status of an immediate response
	attrModel           = attribute.Key("gen_ai.request.model")
	attrEndpoint        = attribute.Key("distillguard.endpoint")
	attrRequestMode     = attribute.Key("distillguard.request_body_mode")
	attrResponseMode    = attribute.Key("distillguard.response_body_mode")
	attrMessages        = attribute.Key("distillguard.messages")
	attrEventsRewritten = attribute.Key("distillguard.events_rewritten")
	attrRejected        = attribute.Key("distillguard.rejected")
	attrObserve         = attribute.Key("distillguard.observability_mode")
	attrEnd             = attribute.Key("distillguard.end_reason") // eof, recv_error, send_error
)

// maxModelBytes bounds the client-chosen model name on a span.
const maxModelBytes = 128

// traceDecision records the decision on the stream's span, with an event
// marking when in the stream it was taken.
func (st *stream) traceDecision(d scoring.Decision, model string) {
	span := trace.SpanFromContext(st.ctx)
	if !span.IsRecording() {
		return
	}
	names, contribs := topSignals(d.Signals)
	attrs := []attribute.KeyValue{
		attrVerdict.String(d.Verdict.String()),
		attrAction.String(st.action.Verdict.String()),
		attrPolicy.String(st.action.Policy),
		attrShadow.Bool(st.shadow),
		attrSession.String(d.Session),
		attrScore.Float64(finite(d.Score)),
		attrSignals.StringSlice(names),
		attrContributions.Float64Slice(contribs),
	}
	if model != "" {
		attrs = append(attrs, attrModel.String(truncateUTF8(model, maxModelBytes)))
	}
	if rj := st.action.Reject; rj != nil {
		attrs = append(attrs, attrRejectStatus.Int(rj.Status))
	}
	span.SetAttributes(attrs...)
	span.AddEvent("distillguard.decision", trace.WithAttributes(attrs[0], attrs[1]))
}

// traceEnd records how the stream went; release calls it before dropping
// the state.
func (st *stream) traceEnd() {
	span := trace.SpanFromContext(st.ctx)
	if !span.IsRecording() {
		return
	}
	attrs := []attribute.KeyValue{
		attrEndpoint.String(endpointOf(st.rq.path)),
		attrRequestMode.String(st.reqMode.String()),
		attrResponseMode.String(st.respMode.String()),
		attrMessages.Int(st.msgs),
		attrEventsRewritten.Int64(st.tally.eventsTotal + st.tally.events),
		attrRejected.Bool(st.rejected),
		attrEnd.String(st.end),
	}
	if st.observe {
		attrs = append(attrs, attrObserve.Bool(true))
	}
	span.SetAttributes(attrs...)
}

// topSignals returns the names and contributions of the maxSignals
// signals contributing most, largest first (as in the metadata).
func topSignals(sigs []scoring.Signal) ([]string, []float64) {
	s := make([]scoring.Signal, len(sigs))
	copy(s, sigs)
	sort.SliceStable(s, func(i, j int) bool { return s[i].Contribution > s[j].Contribution })
	if len(s) > maxSignals {
		s = s[:maxSignals]
	}
	names := make([]string, len(s))
	contribs := make([]float64, len(s))
	for i, g := range s {
		names[i], contribs[i] = g.Name, finite(g.Contribution)
	}
	return names, contribs
}

// truncateUTF8 cuts s to at most n bytes without splitting a UTF-8
// sequence.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 { // s[n] continues a sequence
		n--
	}
	return s[:n]
}
