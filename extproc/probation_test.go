package extproc

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/extproc/envoytest"
	"github.com/distillguard/distillguard/extproc/keys"
	"github.com/distillguard/distillguard/scoring"
)

// TestProbationResolution: a decision in probation gets the route's
// probation tier where it would get allow, degrade tightened by it, and
// nothing changes with standing, in shadow mode, or on a route whose set
// says probation: null.
func TestProbationResolution(t *testing.T) {
	requireRealMutate(t)
	body := []byte(`{"model":"gpt-x","messages":[{"role":"user","content":"hi"}],"logprobs":true,"top_logprobs":3,"n":3,"logit_bias":{"17":5},"max_tokens":4}`)
	noProbation, err := config.Parse([]byte("policies:\n  open:\n    allow:\n      output: {round_decimals: 2}\n    probation: null\nroutes:\n- path_prefix: /v1/open\n  policy: open\n"))
	if err != nil {
		t.Fatal(err)
	}
	shadow := *config.Default()
	shadow.Scoring.Shadow = true
	for _, tc := range []struct {
		name      string
		cfg       *config.Config
		path      string
		verdict   scoring.Verdict
		probation bool
		// what reaches the upstream and the client
		stripped, metaProbation bool
	}{
		{"in probation", config.Default(), "", scoring.Allow, true, true, true},
		{"with standing", config.Default(), "", scoring.Allow, false, false, false},
		{"degraded in probation: degrade tightened by probation", config.Default(), "", scoring.Degrade, true, true, true},
		{"shadow mode observes only", &shadow, "", scoring.Allow, true, false, false},
		{"route without a probation tier", noProbation, "/v1/open/chat/completions", scoring.Allow, true, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc := verdictScorer(tc.verdict)
			sc.decision.Probation = tc.probation
			h := newHarness(t, tc.cfg, sc)
			res, err := envoytest.New(h.client, envoyConfig(mBuffered, mStreamed)).Do(context.Background(), &envoytest.Exchange{
				Path: tc.path, Body: body, Header: http.Header{"Content-Type": {"application/json"}}, Upstream: &envoytest.Upstream{Seed: 3},
			})
			if err != nil {
				t.Fatal(err)
			}
			noViolations(t, res)
			var up map[string]any
			if err := json.Unmarshal(res.Upstream.Body, &up); err != nil {
				t.Fatalf("upstream body: %v", err)
			}
			_, lp := up["top_logprobs"]
			_, bias := up["logit_bias"]
			n, _ := up["n"].(float64)
			if tc.stripped && (lp || bias || n > 1) {
				t.Errorf("in probation the upstream got top_logprobs %v, logit_bias %v, n %v: %s", lp, bias, n, res.Upstream.Body)
			}
			if tc.verdict == scoring.Allow && !tc.stripped && !lp {
				t.Errorf("top_logprobs did not reach the upstream: %s", res.Upstream.Body)
			}
			var out struct {
				Choices []struct {
					Logprobs *json.RawMessage `json:"logprobs"`
				} `json:"choices"`
			}
			if err := json.Unmarshal(res.Body, &out); err != nil || len(out.Choices) == 0 {
				t.Fatalf("client body: %v: %s", err, res.Body)
			}
			gotLP := out.Choices[0].Logprobs != nil && string(*out.Choices[0].Logprobs) != "null"
			if tc.stripped == gotLP {
				t.Errorf("client got logprobs %v, want %v: %s", gotLP, !tc.stripped, res.Body)
			}
			md := res.Metadata[keys.MetadataNamespace].GetFields()
			if got := md[keys.Probation].GetBoolValue(); got != tc.metaProbation {
				t.Errorf("metadata probation = %v, want %v", got, tc.metaProbation)
			}
			if got := md[keys.Action].GetStringValue(); tc.verdict == scoring.Allow && got != "allow" {
				t.Errorf("metadata action = %q", got)
			}
		})
	}
}
