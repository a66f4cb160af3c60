package extproc

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/distillguard/distillguard/extproc/keys"
	"github.com/distillguard/distillguard/mutate"
)

// The output watermark (package watermark, config.Marks): a tier with
// output.watermark marks the response's generated text (lexical mark) and,
// when it returns alternatives, its top_logprobs (logprob mark), with the
// active key of watermark.key_file as the stream's configuration has it.

// watermarkDecision runs once the request is decided: the decision's
// metadata names the key that will mark the response, and the logprob
// mark's context signal is computed from the prompt (the text a probe of
// the verifier holds) while the request body is at hand.
func (st *stream) watermarkDecision(b *mutate.Body) {
	st.lpMark = nil
	o := st.action.Output
	m := st.cfg.Marks()
	if !o.Watermark || m == nil || st.action.Reject != nil {
		return
	}
	if inner := st.meta.GetFields()[keys.MetadataNamespace].GetStructValue(); inner != nil {
		inner.Fields[keys.Watermark] = structpb.NewStringValue(m.KeyID())
	}
	if b != nil && !o.StripLogprobs && o.MaxAlternatives != 0 {
		st.lpMark = mutate.NewLogprobMark(m.Logprob, []byte(b.Request.Prompt))
	}
}

// watermark gives the response's rewriter the marks its tier asks for.
// The text mark needs a format whose walk reports where text blocks end
// (mutate.Format.TextEnds): it holds the unfinished word between events.
func (st *stream) watermark(rw *mutate.Rewriter) {
	m := st.cfg.Marks()
	if !st.action.Output.Watermark || m == nil {
		return
	}
	if rw.Format().TextEnds() {
		tx := m.Text.NewText()
		if m.LogServed {
			st.served = m.Text.Marker().Key().NewServed()
			tx.RecordServed(st.served)
		}
		rw.With(mutate.WithTextRewriter(tx))
		st.srv.m.watermark(st.mctx, m.KeyID(), "text")
	}
	if st.lpMark != nil {
		rw.With(mutate.WithLogprobShift(st.lpMark))
		st.srv.m.watermark(st.mctx, m.KeyID(), "logprobs")
	}
}

// watermark counts a response marked with key id by mark.
func (m *metrics) watermark(ctx context.Context, id, mark string) {
	m.watermarked.Add(ctx, 1, metric.WithAttributes(attribute.String("key_id", id), attribute.String("mark", mark)))
}

// logServed writes the response's served record (watermark.log_served):
// the keyed digests of the synonym-set groups its text held, which
// `distillguard watermark verify -served` reads back to weigh a suspect
// model's text by what this session was served. One line per marked
// response, at the end of the exchange (whatever ended it: what went out
// was served), never rate-limited: it is evidence.
func (st *stream) logServed() {
	sv := st.served
	st.served = nil
	if sv == nil || sv.Len() == 0 {
		return
	}
	// Counted before it is written: a reader of the log finds the count.
	st.srv.m.served.Add(st.mctx, 1, metric.WithAttributes(attribute.String("key_id", sv.KeyID()), attribute.Bool("truncated", sv.Truncated())))
	st.srv.log.LogAttrs(st.ctx, slog.LevelInfo, "watermark served",
		slog.String("session", st.session), slog.String("key_id", sv.KeyID()),
		slog.Int("groups", sv.Len()), slog.Bool("truncated", sv.Truncated()),
		slog.String("served_groups", sv.String()))
}
