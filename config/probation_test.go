package config

import (
	"strings"
	"testing"

	"github.com/distillguard/distillguard/mutate"
	"github.com/distillguard/distillguard/scoring"
)

func TestDefaultProbationTier(t *testing.T) {
	c := Default()
	p := c.ResolveStanding("/v1/chat/completions", "any", scoring.Allow, true)
	if !p.Probation || p.Verdict != scoring.Allow || p.Reject != nil || p.Policy != "default" {
		t.Fatalf("probation action = %+v", p)
	}
	if !p.Output.StripLogprobs || !p.Request.StripLogprobs || !p.Request.DropLogitBias || p.Request.MaxN != 1 {
		t.Errorf("probation = output %+v request %+v", p.Output, p.Request)
	}
	// Inherited from allow where the tier says nothing.
	if p.Output.RoundDecimals != 2 || p.Output.MaxAlternatives != 5 || p.Request.MaxTopLogprobs != 5 || !p.Request.DropLogitBiasWithLogprobs {
		t.Errorf("probation did not inherit allow: output %+v request %+v", p.Output, p.Request)
	}
	// Degrade in probation is degrade tightened by the probation tier: its
	// perturbed chosen-token logprob would be more than probation gives.
	d := c.ResolveStanding("/v1/chat/completions", "m", scoring.Degrade, true)
	plain := c.Resolve("/v1/chat/completions", "m", scoring.Degrade)
	if !d.Probation || !d.Output.StripLogprobs || !d.Request.StripLogprobs || d.Output.RoundDecimals != plain.Output.RoundDecimals ||
		d.Output.Perturb != plain.Output.Perturb || d.Request.MaxN != 1 || !d.Request.DropLogitBias {
		t.Errorf("degrade in probation = %+v (degrade %+v)", d, plain)
	}
	// An identity with standing, and the rejecting tiers, resolve as
	// before.
	for v := scoring.Allow; v <= scoring.Block; v++ {
		for _, prob := range []bool{false, true} {
			if (v == scoring.Allow || v == scoring.Degrade) && prob {
				continue
			}
			got, want := c.ResolveStanding("/v1/chat/completions", "m", v, prob), c.Resolve("/v1/chat/completions", "m", v)
			if got.Probation || got.Output != want.Output || got.Request != want.Request || (got.Reject == nil) != (want.Reject == nil) {
				t.Errorf("%v, probation %v: %+v, want %+v", v, prob, got, want)
			}
		}
	}
}

func TestProbationTierOnlyTightensAllow(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		out  mutate.OutputPolicy
		req  mutate.RequestPolicy
		rej  int
		// defaultNull: the file says probation: null for the default set.
		defaultNull bool
	}{
		{
			// Layered like every tier: a set that leaves probation out
			// inherits the default set's, tightened to its own allow.
			name: "absent: the default set's probation",
			yaml: "policies:\n  p:\n    allow:\n      output: {round_decimals: 2}\n      request: {max_top_logprobs: 5}\n",
			out:  mutate.OutputPolicy{StripLogprobs: true, RoundDecimals: 2, MaxAlternatives: 5, EmbeddingDecimals: -1},
			req:  mutate.RequestPolicy{MaxTopLogprobs: 5, MaxN: 1, DropLogitBiasWithLogprobs: true, DropLogitBias: true, StripLogprobs: true},
		},
		{
			name: "probation: null is allow",
			yaml: "policies:\n  p:\n    allow:\n      output: {round_decimals: 2}\n      request: {max_top_logprobs: 5}\n    probation: null\n",
			out:  mutate.OutputPolicy{RoundDecimals: 2, MaxAlternatives: 5, EmbeddingDecimals: -1},
			req:  mutate.RequestPolicy{MaxTopLogprobs: 5, DropLogitBiasWithLogprobs: true},
		},
		{
			name: "looser settings keep allow's",
			yaml: "policies:\n  default:\n    probation: null\n  p:\n    allow:\n      output: {round_decimals: 2, max_alternatives: 3, perturb: 0.2, embedding_decimals: 4}\n      request: {max_top_logprobs: 3, max_n: 2, drop_logit_bias_with_logprobs: true}\n" +
				"    probation:\n      output: {round_decimals: 6, max_alternatives: 10, perturb: 0.1, embedding_decimals: 8}\n      request: {max_top_logprobs: 20, max_n: 4}\n",
			out:         mutate.OutputPolicy{RoundDecimals: 2, MaxAlternatives: 3, Perturb: 0.2, EmbeddingDecimals: 4},
			req:         mutate.RequestPolicy{MaxTopLogprobs: 3, MaxN: 2, DropLogitBiasWithLogprobs: true},
			defaultNull: true,
		},
		{
			name: "stricter settings win",
			yaml: "policies:\n  default:\n    probation: null\n  p:\n    allow:\n      output: {round_decimals: 2, max_alternatives: 5}\n      request: {max_top_logprobs: 5}\n" +
				"    probation:\n      output: {round_decimals: 1, max_alternatives: 0, perturb: 0.3, embedding_decimals: 3}\n      request: {max_top_logprobs: 1, max_n: 1, drop_logit_bias: true, strip_logprobs: true}\n",
			out:         mutate.OutputPolicy{RoundDecimals: 1, MaxAlternatives: 0, Perturb: 0.3, EmbeddingDecimals: 3},
			req:         mutate.RequestPolicy{MaxTopLogprobs: 1, MaxN: 1, DropLogitBiasWithLogprobs: true, DropLogitBias: true, StripLogprobs: true},
			defaultNull: true,
		},
		{
			name:        "settings allow leaves out come from probation",
			yaml:        "policies:\n  default:\n    probation: null\n  p:\n    allow: null\n    probation:\n      output: {strip_logprobs: true}\n      request: {max_n: 1}\n",
			out:         mutate.OutputPolicy{StripLogprobs: true, RoundDecimals: -1, MaxAlternatives: -1, EmbeddingDecimals: -1},
			req:         mutate.RequestPolicy{MaxTopLogprobs: -1, MaxN: 1},
			defaultNull: true,
		},
		{
			name:        "a probation tier may refuse",
			yaml:        "policies:\n  default:\n    probation: null\n  p:\n    allow: null\n    probation:\n      reject: {status: 403, message: accounts earn access after their first day}\n",
			out:         mutate.Passthrough(),
			req:         mutate.RequestPolicy{MaxTopLogprobs: -1},
			rej:         403,
			defaultNull: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.yaml + "routes:\n- path_prefix: /v1/p\n  policy: p\n"))
			if err != nil {
				t.Fatal(err)
			}
			a := c.ResolveStanding("/v1/p/chat", "m", scoring.Allow, true)
			if a.Output != tc.out || a.Request != tc.req {
				t.Errorf("probation = output %+v request %+v\nwant output %+v request %+v", a.Output, a.Request, tc.out, tc.req)
			}
			if got := 0; a.Reject != nil {
				got = a.Reject.Status
				if got != tc.rej {
					t.Errorf("reject %d, want %d", got, tc.rej)
				}
			} else if tc.rej != 0 {
				t.Errorf("no reject, want %d", tc.rej)
			}
			// Other routes keep the default set's probation, or allow
			// where the file removed it.
			d := c.ResolveStanding("/v1/chat/completions", "m", scoring.Allow, true)
			if allow := c.Resolve("/v1/chat/completions", "m", scoring.Allow); tc.defaultNull {
				if d.Output != allow.Output || d.Request != allow.Request {
					t.Errorf("default route with probation: null: %+v, want allow's %+v", d, allow)
				}
			} else if !d.Output.StripLogprobs {
				t.Errorf("default route lost its probation tier: %+v", d.Output)
			}
		})
	}
}

func TestProbationTierValidated(t *testing.T) {
	_, err := Parse([]byte("policies:\n  p:\n    allow: {}\n    probation:\n      output: {round_decimals: 14}\n"))
	if err == nil || !strings.Contains(err.Error(), "policies.p.probation") || !strings.Contains(err.Error(), "round_decimals") {
		t.Fatalf("error %v, want one naming policies.p.probation and round_decimals", err)
	}
	_, err = Parse([]byte("policies:\n  p:\n    probation:\n      output: {rounding: 1}\n"))
	if err == nil {
		t.Fatal("unknown key under probation accepted")
	}
}
