package config

import (
	"github.com/distillguard/distillguard/mutate"
	"github.com/distillguard/distillguard/scoring"
)

// probationSlot is the probation tier's index in a resolvedSet, after the
// four verdicts.
const probationSlot = 4

// ResolveStanding is Resolve for an identity's standing: for one in
// probation (scoring.Decision.Probation) an allow verdict resolves to the
// set's probation tier; every other verdict, and every identity with
// standing, resolves as Resolve does.
func (c *Config) ResolveStanding(path, model string, v scoring.Verdict, probation bool) Action {
	if !probation || v != scoring.Allow {
		return c.Resolve(path, model, v)
	}
	return c.resolveSlot(path, model, probationSlot)
}

// resolveProbation resolves a set's probation tier over its allow tier.
// Absent, probation is allow. Present, every setting is the stricter of
// the tier's and allow's, so a probation tier that leaves a setting out
// inherits allow's and can never hand out more than allow: rounding and
// caps take the smaller value, strips and drops either's, perturbation the
// larger scale, and a rejection either's (the probation tier's first).
func resolveProbation(t *Tier, allow Action, name string) (Action, error) {
	if t == nil {
		return allow, nil
	}
	p, err := t.resolve(scoring.Allow, name)
	if err != nil {
		return allow, err
	}
	a := allow
	a.Probation = true
	a.Output = stricterOutput(allow.Output, p.Output)
	a.Request = stricterRequest(allow.Request, p.Request)
	if p.Reject != nil {
		a.Reject = p.Reject
	}
	return a, nil
}

// minSet is the smaller of two settings where negative means "not set".
func minSet(a, b int) int {
	switch {
	case a < 0:
		return b
	case b < 0:
		return a
	}
	return min(a, b)
}

func stricterOutput(a, b mutate.OutputPolicy) mutate.OutputPolicy {
	return mutate.OutputPolicy{
		StripLogprobs:     a.StripLogprobs || b.StripLogprobs,
		RoundDecimals:     minSet(a.RoundDecimals, b.RoundDecimals),
		MaxAlternatives:   minSet(a.MaxAlternatives, b.MaxAlternatives),
		Perturb:           max(a.Perturb, b.Perturb),
		EmbeddingDecimals: minSet(a.EmbeddingDecimals, b.EmbeddingDecimals),
		Watermark:         a.Watermark || b.Watermark,
	}
}

func stricterRequest(a, b mutate.RequestPolicy) mutate.RequestPolicy {
	n := a.MaxN
	switch {
	case n <= 0:
		n = b.MaxN
	case b.MaxN > 0:
		n = min(n, b.MaxN)
	}
	return mutate.RequestPolicy{
		MaxTopLogprobs:            minSet(a.MaxTopLogprobs, b.MaxTopLogprobs),
		MaxN:                      n,
		DropLogitBiasWithLogprobs: a.DropLogitBiasWithLogprobs || b.DropLogitBiasWithLogprobs,
		DropLogitBias:             a.DropLogitBias || b.DropLogitBias,
		StripLogprobs:             a.StripLogprobs || b.StripLogprobs,
	}
}
