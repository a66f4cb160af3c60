package config

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/distillguard/distillguard/scoring"
)

// TestPartialPolicyInherits: a file that defines part of a policy set gets
// the rest from the default, tier by tier and field by field.
func TestPartialPolicyInherits(t *testing.T) {
	def := Default()
	cases := []struct {
		name  string
		yaml  string
		check func(t *testing.T, c *Config)
	}{
		{"only allow: throttle and block still reject", "policies:\n  default:\n    allow:\n      output: {round_decimals: 3}\n", func(t *testing.T, c *Config) {
			a := c.Resolve("/v1/chat/completions", "", scoring.Allow)
			if a.Output.RoundDecimals != 3 || a.Output.MaxAlternatives != 5 || a.Request.MaxTopLogprobs != 5 || !a.Request.DropLogitBiasWithLogprobs {
				t.Errorf("allow = %+v %+v", a.Output, a.Request)
			}
			for _, v := range []scoring.Verdict{scoring.Throttle, scoring.Block} {
				if c.Resolve("/", "", v).Reject == nil {
					t.Errorf("%v no longer rejects", v)
				}
			}
			if d := c.Resolve("/", "", scoring.Degrade); d.Output != def.Resolve("/", "", scoring.Degrade).Output {
				t.Errorf("degrade changed: %+v", d.Output)
			}
		}},
		{"a named set inherits from the effective default", "policies:\n  default:\n    allow:\n      request: {max_top_logprobs: 2}\n  strict:\n    degrade:\n      output: {strip_logprobs: true}\nroutes:\n  - path_prefix: /s\n    policy: strict\n", func(t *testing.T, c *Config) {
			if a := c.Resolve("/s", "", scoring.Allow); a.Policy != "strict" || a.Request.MaxTopLogprobs != 2 || a.Output.RoundDecimals != 2 {
				t.Errorf("strict allow = %+v", a)
			}
			if d := c.Resolve("/s", "", scoring.Degrade); !d.Output.StripLogprobs || d.Output.Perturb != 0.3 || !d.Request.DropLogitBias {
				t.Errorf("strict degrade = %+v %+v", d.Output, d.Request)
			}
			if c.Resolve("/s", "", scoring.Block).Reject == nil {
				t.Error("strict block inherited no reject")
			}
		}},
		{"reject fields layered", "policies:\n  default:\n    throttle:\n      reject: {retry_after: 5s}\n", func(t *testing.T, c *Config) {
			r := c.Resolve("/", "", scoring.Throttle).Reject
			if r == nil || r.Status != 429 || r.RetryAfter != 5*time.Second || r.Code != "rate_limit_exceeded" {
				t.Errorf("throttle = %+v", r)
			}
		}},
		{"a rewrite tier drops the inherited reject", "policies:\n  default:\n    throttle:\n      output: {strip_logprobs: true}\n", func(t *testing.T, c *Config) {
			a := c.Resolve("/", "", scoring.Throttle)
			if a.Reject != nil || !a.Output.StripLogprobs {
				t.Errorf("throttle = %+v", a)
			}
		}},
		{"null removes", "policies:\n  default:\n    block: {reject: null}\n    allow:\n      output: {round_decimals: null}\n", func(t *testing.T, c *Config) {
			if c.Resolve("/", "", scoring.Block).Reject != nil {
				t.Error("block: reject: null still rejects")
			}
			if a := c.Resolve("/", "", scoring.Allow); a.Output.RoundDecimals != -1 || a.Output.MaxAlternatives != 5 {
				t.Errorf("allow = %+v", a.Output)
			}
		}},
		{"an empty tier", "policies:\n  default:\n    throttle: null\n", func(t *testing.T, c *Config) {
			a := c.Resolve("/", "", scoring.Throttle)
			if a.Reject != nil || !a.Output.IsNoop() || !a.Request.IsNoop() {
				t.Errorf("throttle = %+v", a)
			}
		}},
		{"anchors", "policies:\n  default:\n    allow: &t {output: {round_decimals: 4}}\n    degrade: *t\n", func(t *testing.T, c *Config) {
			a, d := c.Resolve("/", "", scoring.Allow), c.Resolve("/", "", scoring.Degrade)
			if a.Output.RoundDecimals != 4 || d.Output.RoundDecimals != 4 || d.Output.MaxAlternatives != 0 {
				t.Errorf("allow %+v degrade %+v", a.Output, d.Output)
			}
		}},
		{"unknown keys in a set", "policies:\n  default:\n    allow:\n      output: {round_decimal: 4}\n", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.yaml))
			if tc.check == nil {
				if err == nil {
					t.Fatal("an unknown top-level key was accepted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

// TestRangeChecks: every numeric field is range-checked; a negative count
// or decimals is an error, not "rewriting off".
func TestRangeChecks(t *testing.T) {
	bad := map[string]string{
		"policies:\n  default:\n    allow:\n      output: {round_decimals: -5}\n":     "round_decimals",
		"policies:\n  default:\n    allow:\n      output: {embedding_decimals: 13}\n": "embedding_decimals",
		"policies:\n  default:\n    allow:\n      output: {max_alternatives: -1}\n":   "max_alternatives",
		"policies:\n  default:\n    allow:\n      request: {max_top_logprobs: -1}\n":  "max_top_logprobs",
		"policies:\n  default:\n    allow:\n      output: {perturb: .nan}\n":          "perturb",
		"policies:\n  default:\n    throttle:\n      reject: {retry_after: 48h}\n":    "retry_after",
		"policies:\n  strict:\n    allow:\n      output: {round_decimals: -1}\n":      "policies.strict.allow",
		"processing: {max_body_bytes: 2147483648}\n":                                  "max_body_bytes",
		"processing: {max_held_bytes: 33554432}\n":                                    "max_held_bytes",
		"processing: {max_message_bytes: 1048576}\n":                                  "max_message_bytes",
		"processing: {max_held_total_bytes: 1024}\n":                                  "max_held_total_bytes",
		"processing: {max_decoded_chunk_bytes: 100}\n":                                "max_decoded_chunk_bytes",
		"processing: {max_logit_bias_entries: 0}\n":                                   "max_logit_bias_entries",
		"processing: {max_prompt_bytes: 0}\n":                                         "max_prompt_bytes",
		"processing: {max_decompressed_bytes: -1}\n":                                  "max_decompressed_bytes",
		"processing: {max_clock_skew: 48h}\n":                                         "max_clock_skew",
		"server: {drain_grace: 2h}\n":                                                 "drain_grace",
		"server: {grpc_addr: \"nonsense\"}\n":                                         "grpc_addr",
		"server: {grpc_addr: \"unix:\"}\n":                                            "grpc_addr",
		"routes:\n  - policy: default\n    on_oversize: sometimes\n":                  "on_oversize",
		"routes:\n  - policy: default\n    identity: [cookie]\n":                      "identity",
	}
	for in, want := range bad {
		if _, err := Parse([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want an error naming %s", in, err, want)
		}
	}
	for _, ok := range []string{
		"server: {grpc_addr: \"unix:///run/distillguard.sock\"}\n",
		"server: {grpc_addr: \"0.0.0.0:50051\"}\n",
		"policies:\n  default:\n    allow:\n      output: {round_decimals: 0, max_alternatives: 0}\n",
		"routes:\n  - policy: default\n    on_oversize: pass\n    identity: [\"header:x-api-key\", client_ip]\n",
	} {
		if _, err := Parse([]byte(ok)); err != nil {
			t.Errorf("Parse(%q): %v", ok, err)
		}
	}
}

// TestGuardedView: which routes are guarded, and what a path alone says
// when routes match on the model.
func TestGuardedView(t *testing.T) {
	c, err := Parse([]byte(`
policies:
  open:
    allow: {output: {round_decimals: 2, max_alternatives: 5}, request: {max_top_logprobs: null, drop_logit_bias_with_logprobs: false}}
    degrade: {output: {round_decimals: 2, max_alternatives: 5, perturb: 0, embedding_decimals: null, watermark: false}, request: {max_top_logprobs: null, max_n: 0, drop_logit_bias: false}}
    throttle: {reject: null, output: {round_decimals: 2, max_alternatives: 5}}
    block: {reject: null, output: {round_decimals: 2, max_alternatives: 5}}
    probation: null
routes:
  - path_prefix: /open/
    policy: open
    on_oversize: pass
  - path_prefix: /mixed/
    model: "secret-*"
    policy: default
    identity: ["header:x-api-key"]
  - path_prefix: /mixed/
    policy: open
    on_oversize: pass
`))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		path              string
		guarded, passOver bool
		identity          int
	}{
		{"/v1/chat/completions", true, false, 0},
		{"/open/x", false, true, 0},
		{"/mixed/x", true, false, 1}, // the model may pick the guarded route
	}
	for _, tc := range cases {
		v := c.View(tc.path)
		if v.Guarded != tc.guarded || v.OversizePass != tc.passOver || len(v.Identity) != tc.identity {
			t.Errorf("View(%s) = %+v", tc.path, v)
		}
	}
	if a := c.Resolve("/mixed/x", "secret-1", scoring.Allow); !a.Guarded || a.Identity == nil || a.OversizePass {
		t.Errorf("secret route: %+v", a)
	}
	if a := c.Resolve("/mixed/x", "public", scoring.Allow); a.Guarded || !a.OversizePass {
		t.Errorf("open route: %+v", a)
	}
	// Shadow: only allow is enforced, so a route whose allow tier acts on
	// nothing is unguarded in shadow mode.
	s, err := Parse([]byte("scoring: {shadow: true}\npolicies:\n  default:\n    allow: {request: {max_top_logprobs: null, drop_logit_bias_with_logprobs: false}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if s.View("/").Guarded {
		t.Error("shadow with a request-free allow tier is guarded")
	}
}

// TestPolicyTable: -check-config's table names every route and verdict
// with what it does, inherited fields included.
func TestPolicyTable(t *testing.T) {
	c, err := Parse([]byte("policies:\n  default:\n    allow:\n      output: {round_decimals: 3}\nroutes:\n  - path_prefix: /v1/embeddings\n    policy: default\n    on_oversize: pass\n"))
	if err != nil {
		t.Fatal(err)
	}
	rows := c.PolicyTable()
	if len(rows) != 12 { // 2 routes x (4 verdicts + allow and degrade in probation)
		t.Fatalf("%d rows", len(rows))
	}
	var b bytes.Buffer
	if err := c.WritePolicyTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"routes[0] path_prefix=/v1/embeddings", "default (no route matched)", "logprobs rounded to 3 decimals, <= 5 alternatives",
		"top_logprobs <= 5, logit_bias removed with logprobs", "429 rate_limit_error, retry-after 60s", "403 permission_error", "on_oversize: pass", "guarded", "allow (probation)", "degrade (probation)"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}
