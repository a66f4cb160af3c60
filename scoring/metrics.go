package scoring

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// Bad-input reasons counted by distillguard.scoring.bad_input.
const (
	badInvalidUTF8   = "invalid_utf8"
	badBinary        = "binary"
	badTruncated     = "truncated"
	badClockBackward = "clock_backwards"
	badNoIdentity    = "no_identity"
	badPanic         = "panic"
	badStateDropped  = "state_dropped"
)

var badReasons = [...]string{badInvalidUTF8, badBinary, badTruncated, badClockBackward, badNoIdentity, badPanic, badStateDropped}

// instruments are the engine's OpenTelemetry instruments. Attribute sets are
// built once so recording does not allocate.
type instruments struct {
	verdicts metric.Int64Counter
	score    metric.Float64Histogram
	firings  metric.Int64Counter
	changes  metric.Int64Counter
	bad      metric.Int64Counter
	// standing counts scored requests by standing, resets counts earned
	// standings lost to new evidence (standing.go).
	stand, resets metric.Int64Counter
	standAt       [2][]metric.AddOption // [probation]
	reg           metric.Registration
	// Options are kept as one-element slices: passing a slice with ...
	// does not allocate, building the variadic list on each call does.
	verdictAt [4][2][]metric.AddOption // [verdict][shadow]
	signalAt  [numSignals][]metric.AddOption
	badAt     map[string][]metric.AddOption
}

func newInstruments(mp metric.MeterProvider, e *Engine) (*instruments, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	m := mp.Meter("github.com/distillguard/distillguard/scoring")
	in := &instruments{badAt: map[string][]metric.AddOption{}}
	var err error
	if in.verdicts, err = m.Int64Counter("distillguard.scoring.verdicts",
		metric.WithDescription("Scored requests by verdict tier (shadow: computed but not enforced)."),
		metric.WithUnit("{request}")); err != nil {
		return nil, err
	}
	if in.score, err = m.Float64Histogram("distillguard.scoring.score",
		metric.WithDescription("Session risk score of each scored request."),
		metric.WithExplicitBucketBoundaries(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1)); err != nil {
		return nil, err
	}
	if in.firings, err = m.Int64Counter("distillguard.scoring.signal.firings",
		metric.WithDescription("Requests on which a signal's strength reached 0.5, by signal."),
		metric.WithUnit("{request}")); err != nil {
		return nil, err
	}
	if in.changes, err = m.Int64Counter("distillguard.scoring.verdict.changes",
		metric.WithDescription("Session verdict tier changes (each also logged to the audit trail)."),
		metric.WithUnit("{change}")); err != nil {
		return nil, err
	}
	if in.bad, err = m.Int64Counter("distillguard.scoring.bad_input",
		metric.WithDescription("Requests with input the scorer had to repair or could not attribute, by reason."),
		metric.WithUnit("{request}")); err != nil {
		return nil, err
	}
	if in.stand, err = m.Int64Counter("distillguard.scoring.standing",
		metric.WithDescription("Scored requests by the identity's standing: probation (not earned yet, or lost) or earned; trusted identities and requests with standing off are not counted."),
		metric.WithUnit("{request}")); err != nil {
		return nil, err
	}
	if in.resets, err = m.Int64Counter("distillguard.scoring.standing.resets",
		metric.WithDescription("Identities sent back to probation after earning standing, by a flag or campaign evidence."),
		metric.WithUnit("{identity}")); err != nil {
		return nil, err
	}
	for i, n := range [2]string{"earned", "probation"} {
		in.standAt[i] = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("standing", n)))}
	}
	for v := Allow; v <= Block; v++ {
		for sh := 0; sh < 2; sh++ {
			in.verdictAt[v][sh] = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(
				attribute.String("verdict", v.String()), attribute.Bool("shadow", sh == 1)))}
		}
	}
	for i, n := range signalNames {
		in.signalAt[i] = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("signal", n)))}
	}
	for _, r := range badReasons {
		in.badAt[r] = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("reason", r)))}
	}

	sessions, err := m.Int64ObservableGauge("distillguard.scoring.sessions",
		metric.WithDescription("Sessions currently tracked, by tier of the state cache (probation, main)."),
		metric.WithUnit("{session}"))
	if err != nil {
		return nil, err
	}
	stateBytes, err := m.Int64ObservableGauge("distillguard.scoring.state.bytes",
		metric.WithDescription("Bytes of scoring state, by part (sessions, templates, clusters)."),
		metric.WithUnit("By"))
	if err != nil {
		return nil, err
	}
	prob := metric.WithAttributeSet(attribute.NewSet(attribute.String("tier", "probation")))
	main := metric.WithAttributeSet(attribute.NewSet(attribute.String("tier", "main")))
	partS := metric.WithAttributeSet(attribute.NewSet(attribute.String("part", "sessions")))
	partT := metric.WithAttributeSet(attribute.NewSet(attribute.String("part", "templates")))
	partC := metric.WithAttributeSet(attribute.NewSet(attribute.String("part", "clusters")))
	in.reg, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		st := e.Stats()
		o.ObserveInt64(sessions, st.ProbationSessions, prob)
		o.ObserveInt64(sessions, st.MainSessions, main)
		o.ObserveInt64(stateBytes, st.SessionBytes, partS)
		o.ObserveInt64(stateBytes, st.TemplateBytes, partT)
		o.ObserveInt64(stateBytes, st.ClusterBytes, partC)
		return nil
	}, sessions, stateBytes)
	if err != nil {
		return nil, err
	}
	return in, nil
}

func (in *instruments) badInput(reason string) {
	in.bad.Add(context.Background(), 1, in.badAt[reason]...)
}

// standing counts one scored request by standing; applies is false when
// standing is off or the identity is trusted.
func (in *instruments) standing(probation, applies bool) {
	if !applies {
		return
	}
	i := 0
	if probation {
		i = 1
	}
	in.stand.Add(context.Background(), 1, in.standAt[i]...)
}

func (in *instruments) standingReset() { in.resets.Add(context.Background(), 1) }
