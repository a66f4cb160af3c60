package bench

import (
	"fmt"
	"strings"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/mutate"
	"github.com/distillguard/distillguard/scoring"
)

// Scenario is one row of the matrix.
type Scenario struct {
	Name        string       `json:"name"`
	Description string       `json:"description"`
	Workload    WorkloadSpec `json:"workload"`
	Mode        Mode         `json:"-"`
	ModeName    string       `json:"mode"`
	Concurrency int          `json:"concurrency"`
	// Rate is the open-loop message rate (messages/s); 0 is closed loop.
	Rate             float64 `json:"rate,omitempty"`
	DistinctSessions bool    `json:"distinct_sessions,omitempty"`
	// Config is the distillguard configuration (YAML layered over the
	// embedded default, as with -config).
	Config string `json:"config"`
	// Headline marks the scenario the published targets apply to.
	Headline bool `json:"headline,omitempty"`
	// RSS marks the scenario whose RSS per stream is compared with the
	// target (many concurrent streams make the per-stream figure
	// meaningful).
	RSS bool `json:"rss,omitempty"`
}

// Distillguard configurations of the scenarios. Scoring is off except where
// a scenario measures it, so every request gets the one tier the scenario
// names and the per-message work is known.
const (
	configAllow = "# default policy, allow tier for every request\nscoring:\n  enabled: false\n"

	configScoring = "# embedded default: scoring on\n"

	// configDegrade makes the allow tier the default degrade tier, so every
	// request is degraded: alternatives stripped, logprobs perturbed and
	// rounded.
	configDegrade = `# every request degraded: the allow tier is the default degrade tier
scoring:
  enabled: false
policies:
  default:
    allow: &degrade
      output:
        round_decimals: 1
        max_alternatives: 0
        perturb: 0.3
        embedding_decimals: 3
      request:
        max_top_logprobs: 5
        max_n: 1
        drop_logit_bias_with_logprobs: true
    degrade: *degrade
    throttle:
      reject:
        status: 429
        retry_after: 60s
        code: rate_limit_exceeded
    block:
      reject:
        status: 403
        code: access_denied
`
)

// DefaultScenarios is the matrix `make bench` runs. openRate is the
// open-loop scenario's message rate.
func DefaultScenarios(openRate float64) []Scenario {
	top5 := []MixEntry{{Alternatives: 5, Weight: 1}}
	stream := func(mix []MixEntry, tokens int) WorkloadSpec {
		return WorkloadSpec{Kind: KindStream, Mix: mix, Tokens: tokens}
	}
	ss := []Scenario{
		{Name: "passthrough", Description: "stream without logprobs, default policy",
			Workload: stream([]MixEntry{{Alternatives: 0, Weight: 1}}, 100), Mode: Streamed, Concurrency: 32, Config: configAllow},
		{Name: "default-top5", Description: "top-5 logprobs stream, default allow policy (round 2 decimals, cap 5)",
			Workload: stream(top5, 100), Mode: Streamed, Concurrency: 32, Config: configAllow, Headline: true},
		{Name: "default-top5-duplex", Description: "as default-top5 in FULL_DUPLEX_STREAMED",
			Workload: stream(top5, 100), Mode: FullDuplex, Concurrency: 32, Config: configAllow},
		{Name: "default-mix", Description: "0, 5 and 20 alternatives in equal parts, default policy",
			Workload: stream([]MixEntry{{0, 1}, {5, 1}, {20, 1}}, 100), Mode: Streamed, Concurrency: 32, Config: configAllow},
		{Name: "degrade-top5", Description: "top-5 stream, every request degraded (alternatives stripped, perturbed)",
			Workload: stream(top5, 100), Mode: Streamed, Concurrency: 32, Config: configDegrade},
		{Name: "json-100k", Description: "100 KB non-streamed chat.completion with top-5 logprobs, BUFFERED",
			Workload: WorkloadSpec{Kind: KindJSON, Mix: top5, JSONBytes: 100 << 10}, Mode: Streamed, Concurrency: 32, Config: configAllow},
		{Name: "embeddings-3072", Description: "3072-dimension embeddings response, BUFFERED",
			Workload: WorkloadSpec{Kind: KindEmbeddings, Dimensions: 3072}, Mode: Streamed, Concurrency: 32, Config: configAllow},
		{Name: "scoring-distinct", Description: "scoring on, a new session every request, 8-token streams",
			Workload: stream(top5, 8), Mode: Streamed, Concurrency: 32, DistinctSessions: true, Config: configScoring},
		{Name: "open-loop-top5", Description: fmt.Sprintf("top-5 stream, open loop at %.0f msg/s", openRate),
			Workload: stream(top5, 100), Mode: Streamed, Concurrency: 32, Rate: openRate, Config: configAllow},
		// LLM streams are long and slow: 1,000 streams at 20 tokens/s each
		// hold state for a long time while the message rate stays within
		// what two cores serve, so RSS per stream measures per-stream
		// state rather than garbage churn.
		{Name: "streams-1000", Description: "1,000 concurrent top-5 streams at 20 tokens/s each (RSS per stream)",
			Workload: stream(top5, 100), Mode: Streamed, Concurrency: 1000, Rate: 20000, Config: configAllow, RSS: true},
	}
	for i := range ss {
		ss[i].ModeName = ss[i].Mode.String()
	}
	return ss
}

// SelectScenarios keeps the scenarios named in the comma-separated list
// ("" or "all" keeps all).
func SelectScenarios(all []Scenario, names string) ([]Scenario, error) {
	if names == "" || names == "all" {
		return all, nil
	}
	var out []Scenario
	for n := range strings.SplitSeq(names, ",") {
		n = strings.TrimSpace(n)
		found := false
		for _, s := range all {
			if s.Name == n {
				out = append(out, s)
				found = true
			}
		}
		if !found {
			var known []string
			for _, s := range all {
				known = append(known, s.Name)
			}
			return nil, fmt.Errorf("unknown scenario %q (known: %s)", n, strings.Join(known, ", "))
		}
	}
	return out, nil
}

// outputPolicy is the response policy distillguard applies to the
// scenario's requests: its configuration resolved for the allow verdict
// (scenarios that score use distinct, first-time sessions).
func (s Scenario) outputPolicy() (mutate.OutputPolicy, error) {
	c, err := config.Parse([]byte(s.Config))
	if err != nil {
		return mutate.OutputPolicy{}, fmt.Errorf("scenario %s: config: %w", s.Name, err)
	}
	path, model := "/v1/chat/completions", requestModel
	if s.Workload.Kind == KindEmbeddings {
		path, model = "/v1/embeddings", embeddingModel
	}
	return c.Resolve(path, model, scoring.Allow).Output, nil
}
