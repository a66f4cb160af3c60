package lab

import (
	"fmt"
	"strings"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/mutate"
	"github.com/distillguard/distillguard/scoring"
)

// Policy is one defence configuration the experiments compare: the response
// rewrite and the request rewrite the server would apply.
type Policy struct {
	Name    string
	Output  mutate.OutputPolicy
	Request mutate.RequestPolicy
}

// noRequestRewrite leaves every request as the client sent it.
func noRequestRewrite() mutate.RequestPolicy { return mutate.RequestPolicy{MaxTopLogprobs: -1} }

func outputPolicy(f func(*mutate.OutputPolicy)) mutate.OutputPolicy {
	p := mutate.Passthrough()
	f(&p)
	return p
}

// Policies returns the policies every defence experiment compares, in report
// order. The two "default" rows are read from cfg's route for
// /v1/chat/completions so the lab measures what the shipped configuration
// does, not a copy of it.
func Policies(cfg *config.Config, perturbScales []float64) []Policy {
	ps := []Policy{{Name: "raw API", Output: mutate.Passthrough(), Request: noRequestRewrite()}}
	for _, d := range []int{4, 3, 2, 1} {
		ps = append(ps, Policy{
			Name:    fmt.Sprintf("round %d", d),
			Output:  outputPolicy(func(p *mutate.OutputPolicy) { p.RoundDecimals = d }),
			Request: noRequestRewrite(),
		})
	}
	for _, s := range perturbScales {
		ps = append(ps, Policy{
			Name:    fmt.Sprintf("perturb %g", s),
			Output:  outputPolicy(func(p *mutate.OutputPolicy) { p.Perturb = s }),
			Request: noRequestRewrite(),
		})
	}
	ps = append(ps,
		Policy{
			Name:    "alternatives stripped",
			Output:  outputPolicy(func(p *mutate.OutputPolicy) { p.MaxAlternatives = 0 }),
			Request: noRequestRewrite(),
		},
		Policy{
			Name:    "logprobs stripped",
			Output:  outputPolicy(func(p *mutate.OutputPolicy) { p.StripLogprobs = true }),
			Request: noRequestRewrite(),
		},
		Policy{
			Name:    "logit_bias dropped",
			Output:  mutate.Passthrough(),
			Request: mutate.RequestPolicy{MaxTopLogprobs: -1, DropLogitBias: true},
		},
	)
	for _, v := range []scoring.Verdict{scoring.Allow, scoring.Degrade} {
		a := cfg.Resolve("/v1/chat/completions", labModel, v)
		ps = append(ps, Policy{Name: "default " + v.String(), Output: a.Output, Request: a.Request})
	}
	return ps
}

// Describe renders the policy's effective settings for the report.
func (p Policy) Describe() (output, request string) {
	var o []string
	if p.Output.StripLogprobs {
		o = append(o, "strip logprobs")
	}
	if p.Output.RoundDecimals >= 0 {
		o = append(o, fmt.Sprintf("round %d", p.Output.RoundDecimals))
	}
	if p.Output.MaxAlternatives >= 0 {
		o = append(o, fmt.Sprintf("max alternatives %d", p.Output.MaxAlternatives))
	}
	if p.Output.Perturb != 0 {
		o = append(o, fmt.Sprintf("perturb %g", p.Output.Perturb))
	}
	var r []string
	if p.Request.MaxTopLogprobs >= 0 {
		r = append(r, fmt.Sprintf("max top_logprobs %d", p.Request.MaxTopLogprobs))
	}
	if p.Request.MaxN > 0 {
		r = append(r, fmt.Sprintf("max n %d", p.Request.MaxN))
	}
	if p.Request.DropLogitBias {
		r = append(r, "drop logit_bias")
	}
	if p.Request.DropLogitBiasWithLogprobs {
		r = append(r, "drop logit_bias with logprobs")
	}
	if p.Request.StripLogprobs {
		r = append(r, "strip logprobs")
	}
	return orNone(o), orNone(r)
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
