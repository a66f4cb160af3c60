package config

import (
	"github.com/distillguard/distillguard/mutate"
	"github.com/distillguard/distillguard/scoring"
)

// probationSlot is the index in a resolvedSet of the allow tier of an
// identity in probation; the other verdicts' follow it in verdict order.
const probationSlot = 4

// ResolveStanding is Resolve for an identity's standing. For one in
// probation (scoring.Decision.Probation) every rewriting tier is tightened
// by the set's probation tier: allow becomes the probation tier, and
// degrade (or any tier that rewrites rather than rejects) takes the
// stricter of its own settings and the probation tier's, so that no tier
// hands an identity without standing more than probation does (degrade's
// perturbed chosen-token logprob is more than probation's text alone).
// Rejecting tiers resolve as Resolve does, and so does every tier for an
// identity with standing.
func (c *Config) ResolveStanding(path, model string, v scoring.Verdict, probation bool) Action {
	if !probation {
		return c.Resolve(path, model, v)
	}
	if v < scoring.Allow || v > scoring.Block {
		v = scoring.Block
	}
	return c.resolveSlot(path, model, probationSlot+int(v))
}

// resolveProbation resolves a set's probation tier over one of its
// verdict tiers (base). Absent, or over a rejecting tier, it is base.
// Present, every setting is the stricter of the probation tier's and
// base's, so a probation tier that leaves a setting out inherits base's
// and can never hand out more than base: rounding and caps take the
// smaller value, strips and drops either's, perturbation the larger scale,
// and a rejection either's (the probation tier's first).
func resolveProbation(t *Tier, base Action, name string) (Action, error) {
	if t == nil || base.Reject != nil {
		return base, nil
	}
	p, err := t.resolve(scoring.Allow, name)
	if err != nil {
		return base, err
	}
	a := base
	a.Probation = true
	a.Output = stricterOutput(base.Output, p.Output)
	a.Request = stricterRequest(base.Request, p.Request)
	if p.Reject != nil {
		a.Reject = p.Reject
	}
	if a.Output == base.Output && a.Request == base.Request && a.Reject == base.Reject {
		// Nothing tightened (probation: null, or a tier no stricter than
		// base): not reported as probation.
		return base, nil
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
