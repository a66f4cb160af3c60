package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/distillguard/distillguard/scoring"
)

func TestDefaultPolicyIsTheDocumentedOne(t *testing.T) {
	c := Default()
	allow := c.Resolve("/v1/chat/completions", "any", scoring.Allow)
	if allow.Reject != nil {
		t.Fatal("allow rejects")
	}
	if allow.Output.RoundDecimals != 2 || allow.Output.MaxAlternatives != 5 || allow.Output.StripLogprobs || allow.Output.Perturb != 0 {
		t.Errorf("allow output = %+v", allow.Output)
	}
	if allow.Request.MaxTopLogprobs != 5 || !allow.Request.DropLogitBiasWithLogprobs || allow.Request.MaxN != 0 {
		t.Errorf("allow request = %+v", allow.Request)
	}
	deg := c.Resolve("/v1/chat/completions", "any", scoring.Degrade)
	if deg.Output.MaxAlternatives != 0 || deg.Output.RoundDecimals != 1 || deg.Output.Perturb <= 0 {
		t.Errorf("degrade output = %+v", deg.Output)
	}
	if deg.Request.MaxN != 1 || !deg.Request.DropLogitBias {
		t.Errorf("degrade request = %+v", deg.Request)
	}
	th := c.Resolve("/v1/completions", "", scoring.Throttle)
	if th.Reject == nil || th.Reject.Status != 429 || th.Reject.RetryAfter <= 0 || th.Reject.Message == "" || th.Reject.Type == "" {
		t.Errorf("throttle = %+v", th.Reject)
	}
	bl := c.Resolve("/v1/completions", "", scoring.Block)
	if bl.Reject == nil || bl.Reject.Status != 403 {
		t.Errorf("block = %+v", bl.Reject)
	}
	if c.Server.GRPCAddr != "127.0.0.1:50051" || c.Server.AdminAddr != "127.0.0.1:9090" {
		t.Errorf("addresses = %q %q", c.Server.GRPCAddr, c.Server.AdminAddr)
	}
	if c.Processing.RequestBodyMode != "BUFFERED" || c.Processing.ResponseBodyMode != "STREAMED" {
		t.Errorf("modes = %+v", c.Processing)
	}
	// Out-of-range verdicts resolve to the strongest action, never panic.
	if a := c.Resolve("/", "", scoring.Verdict(42)); a.Verdict != scoring.Block {
		t.Errorf("verdict 42 resolved to %v", a.Verdict)
	}
}

func TestStrictDecodingNamesTheLine(t *testing.T) {
	_, err := Parse([]byte("server:\n  grpc_addr: \":1\"\n  grpc_adr: x\n"))
	if err == nil {
		t.Fatal("unknown key accepted")
	}
	if !strings.Contains(err.Error(), "line 3") || !strings.Contains(err.Error(), "grpc_adr") {
		t.Fatalf("error does not name line 3 and the key: %v", err)
	}
}

func TestLayeringOverDefault(t *testing.T) {
	c, err := Parse([]byte(`
processing:
  max_held_bytes: 4096
policies:
  strict:
    allow:
      output: {strip_logprobs: true}
      request: {strip_logprobs: true, drop_logit_bias: true}
    degrade:
      output: {strip_logprobs: true}
    throttle:
      reject: {status: 429, retry_after: 10s}
    block:
      reject: {status: 403, message: "no"}
routes:
  - path_prefix: /v1/embeddings
    policy: strict
  - model: "secret-*"
    policy: strict
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Processing.MaxHeldBytes != 4096 {
		t.Errorf("max_held_bytes = %d", c.Processing.MaxHeldBytes)
	}
	if c.Processing.MaxBodyBytes != Default().Processing.MaxBodyBytes {
		t.Error("unset processing fields lost their defaults")
	}
	if _, ok := c.Policies["default"]; !ok {
		t.Fatal("default policy set dropped by a file defining another set")
	}
	cases := []struct {
		path, model string
		want        string
	}{
		{"/v1/embeddings", "x", "strict"},
		{"/v1/chat/completions", "secret-7b", "strict"},
		{"/v1/chat/completions", "secret", "default"},
		{"/v1/chat/completions", "public", "default"},
	}
	for _, tc := range cases {
		a := c.Resolve(tc.path, tc.model, scoring.Allow)
		if a.Policy != tc.want {
			t.Errorf("Resolve(%q,%q) = %q, want %q", tc.path, tc.model, a.Policy, tc.want)
		}
	}
	// The set's tiers are layered over the effective default field by
	// field: strict allow keeps default allow's rounding and caps.
	s := c.Resolve("/v1/embeddings", "", scoring.Allow)
	if !s.Output.StripLogprobs || s.Output.RoundDecimals != 2 || s.Output.MaxAlternatives != 5 || !s.Request.DropLogitBias || s.Request.MaxTopLogprobs != 5 {
		t.Errorf("strict allow = %+v %+v", s.Output, s.Request)
	}
	if b := c.Resolve("/v1/embeddings", "", scoring.Block); b.Reject.Message != "no" || b.Reject.Type != "permission_error" {
		t.Errorf("block reject = %+v", b.Reject)
	}
	if th := c.Resolve("/v1/embeddings", "", scoring.Throttle); th.Reject.RetryAfter != 10*time.Second {
		t.Errorf("retry_after = %v", th.Reject.RetryAfter)
	}
}

func TestValidationErrors(t *testing.T) {
	cases := map[string]string{
		"processing:\n  response_body_mode: SOMETIMES\n":                          "response_body_mode",
		"processing:\n  max_held_bytes: 0\n":                                      "max_held_bytes",
		"routes:\n  - policy: nope\n":                                             `policy "nope"`,
		"routes:\n  - path_prefix: v1\n    policy: default\n":                     "must start with /",
		"server:\n  tls: {cert_file: a}\n":                                        "go together",
		"log:\n  level: loud\n":                                                   "log.level",
		"policies:\n  default:\n    throttle:\n      reject: {status: 200}\n":     "4xx or 5xx",
		"policies:\n  default:\n    allow:\n      output: {round_decimals: 40}\n": "round_decimals",
		"policies:\n  default:\n    allow:\n      output: {perturb: -1}\n":        "perturb",
		"policies:\n  default:\n    degrade:\n      request: {max_n: -2}\n":       "max_n",
		"processing:\n  max_clock_skew: -1s\n":                                    "max_clock_skew",
		"server:\n  drain_grace: soon\n":                                          "line 2",
	}
	for in, want := range cases {
		_, err := Parse([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) error = %v, want it to mention %q", in, err, want)
		}
	}
}

func TestEmptyFileIsTheDefault(t *testing.T) {
	c, err := Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.Resolve("/", "", scoring.Allow), Default().Resolve("/", "", scoring.Allow)) {
		t.Error("empty file differs from default")
	}
}

func TestLoadNamesTheFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(p, []byte("nonsense: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p)
	if err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("Load error = %v, want it to name %s", err, p)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Fatal("missing file accepted")
	}
}

func FuzzParse(f *testing.F) {
	f.Add(DefaultYAML())
	f.Add([]byte("routes:\n  - model: a*\n    policy: default\n"))
	f.Add([]byte("policies: {default: {allow: {output: {round_decimals: 3}}}}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			return
		}
		// Any config that loads must resolve every verdict without panicking
		// and to a coherent action.
		for v := scoring.Allow; v <= scoring.Block; v++ {
			a := c.Resolve("/v1/chat/completions", "m", v)
			if a.Verdict != v {
				t.Fatalf("Resolve(%v).Verdict = %v", v, a.Verdict)
			}
			if a.Reject != nil && (a.Reject.Status < 400 || a.Reject.Status > 599) {
				t.Fatalf("reject status %d", a.Reject.Status)
			}
		}
	})
}

// TestRouteShadow: a route in shadow mode resolves every tier with Shadow
// set; other routes and the default set do not.
func TestRouteShadow(t *testing.T) {
	c, err := Parse([]byte(`
routes:
  - path_prefix: /v1/responses
    policy: default
    shadow: true
`))
	if err != nil {
		t.Fatal(err)
	}
	for v := scoring.Allow; v <= scoring.Block; v++ {
		if a := c.Resolve("/v1/responses", "m", v); !a.Shadow || a.Verdict != v {
			t.Errorf("shadow route, %v: %+v", v, a)
		}
		if a := c.Resolve("/v1/chat/completions", "m", v); a.Shadow {
			t.Errorf("default route, %v: shadow set", v)
		}
	}
}

// TestAdminTokenFile: admin.token_file is read at load (whitespace
// dropped); a token and a file together, an empty file and a missing file
// are errors that name the key.
func TestAdminTokenFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "token")
	if err := os.WriteFile(good, []byte("  s3cret-admin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Parse([]byte("admin: {token_file: " + good + "}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Admin.Token != "s3cret-admin" {
		t.Fatalf("token %q", c.Admin.Token)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"admin: {token: a, token_file: " + good + "}\n", "not both"},
		{"admin: {token_file: " + empty + "}\n", "is empty"},
		{"admin: {token_file: " + filepath.Join(dir, "missing") + "}\n", "admin.token_file"},
	} {
		if _, err := Parse([]byte(tc.yaml)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one containing %q", tc.yaml, err, tc.want)
		}
	}
}
