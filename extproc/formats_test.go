package extproc

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	procv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/extproc/envoytest"
	"github.com/distillguard/distillguard/mutate"
	"github.com/distillguard/distillguard/scoring"
)

// formatCase is one response fixture of mutate/testdata/formats served on
// its format's path, with a request that asks for its logprobs.
type formatCase struct {
	fixture, path, ct string
	format            mutate.Format
	req               string
	logprobs          bool // the fixture carries values the policy changes
}

func formatCases() []formatCase {
	const (
		js, sse, nd = "application/json", "text/event-stream", "application/x-ndjson"
		gem         = `{"contents":[{"role":"user","parts":[{"text":"hi"}]}],"generationConfig":{"responseLogprobs":true,"logprobs":19,"candidateCount":2}}`
		tgi         = `{"inputs":"hi","parameters":{"details":true,"top_n_tokens":9,"best_of":2,"decoder_input_details":true}}`
		llama       = `{"prompt":"hi","n_probs":9,"logit_bias":[[1,false]]}`
		ollama      = `{"model":"m","prompt":"hi","logprobs":true,"top_logprobs":9}`
		ant         = `{"model":"c","max_tokens":16,"system":"s","messages":[{"role":"user","content":"hi"}],"stream":true}`
	)
	return []formatCase{
		{"gemini_generate_body.json", "/v1beta/models/gemini-2.0-flash:generateContent", js, mutate.FormatGemini, gem, true},
		{"gemini_stream.sse", "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse", sse, mutate.FormatGemini, gem, true},
		{"gemini_stream_array.json", "/v1/projects/p/locations/us-central1/publishers/google/models/m:streamGenerateContent", js, mutate.FormatGemini, gem, true},
		{"tgi_generate_body.json", "/generate", js, mutate.FormatTGI, tgi, true},
		{"tgi_compat_body.json", "/", js, mutate.FormatTGI, tgi, true},
		{"tgi_generate_stream.sse", "/tgi/generate_stream", sse, mutate.FormatTGI, tgi, true},
		{"llamacpp_completion_body.json", "/completion", js, mutate.FormatLlamaCpp, llama, true},
		{"llamacpp_completion_post_sampling.json", "/completion", js, mutate.FormatLlamaCpp, llama, true},
		{"llamacpp_completion_old.json", "/completion", js, mutate.FormatLlamaCpp, llama, true},
		{"llamacpp_completion_stream.sse", "/llama/completion", sse, mutate.FormatLlamaCpp, llama, true},
		{"ollama_generate_stream.ndjson", "/api/generate", nd, mutate.FormatOllama, ollama, true},
		{"ollama_chat_body.json", "/ollama/api/chat", js, mutate.FormatOllama, ollama, true},
		{"anthropic_messages_stream.sse", "/v1/messages", sse, mutate.FormatAnthropic, ant, false},
		{"anthropic_message_body.json", "/v1/messages", js, mutate.FormatAnthropic, ant, false},
		{"vllm_completion_echo.json", "/v1/completions", js, mutate.FormatOpenAICompletions, `{"prompt":"a","echo":true,"logprobs":9,"prompt_logprobs":9,"best_of":3}`, true},
		{"vllm_chat_prompt_logprobs.json", "/v1/chat/completions", js, mutate.FormatOpenAIChat, `{"messages":[{"role":"user","content":"hi"}],"logprobs":true,"top_logprobs":9,"prompt_logprobs":9}`, true},
	}
}

func readFormatFixture(name string) ([]byte, error) {
	return os.ReadFile(filepath.Join("..", "mutate", "testdata", "formats", name))
}

// formatsConfig rounds to 2 decimals and keeps one alternative; requests
// are capped at 3 alternatives and one candidate, bias dropped.
func formatsConfig(t testing.TB) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(`
policies:
  default:
    allow:
      output: {round_decimals: 2, max_alternatives: 1}
      request: {max_top_logprobs: 3, max_n: 1, drop_logit_bias: true}
`))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// wantFormat is the fixture rewritten whole by the format's rewriter: what
// any chunking must produce byte for byte.
func wantFormat(t testing.TB, c formatCase, p mutate.OutputPolicy, body []byte) []byte {
	t.Helper()
	rw := mutate.NewRewriterFor(c.format, p, 0)
	if c.ct == "application/json" {
		out, err := rw.Rewrite(nil, body)
		if err != nil {
			t.Fatalf("%s: %v", c.fixture, err)
		}
		return out
	}
	var s mutate.Stream = mutate.NewSSEStream(rw, 1<<20)
	if c.ct == "application/x-ndjson" {
		s = mutate.NewNDJSONStream(rw, 1<<20)
	}
	return s.Write(nil, body, true)
}

// TestFormatsConformance sends every format's fixture through the
// emulated Envoy with seeded random chunking, in streamed and full-duplex
// response modes: the request reaching the upstream is capped by the
// format's own fields, the response is the whole-body rewrite byte for
// byte (so every value the policy does not touch is unchanged), every
// logprob-like number in it has at most two decimals, and a format
// without logprobs comes back untouched.
func TestFormatsConformance(t *testing.T) {
	requireRealMutate(t)
	cfg := formatsConfig(t)
	allow := cfg.Resolve("/v1/chat/completions", "", scoring.Allow).Output
	h := newHarness(t, cfg, verdictScorer(scoring.Allow))
	ctx := context.Background()
	for _, c := range formatCases() {
		body, err := readFormatFixture(c.fixture)
		if err != nil {
			t.Fatal(err)
		}
		want := wantFormat(t, c, allow, body)
		if c.logprobs == bytes.Equal(want, body) {
			t.Fatalf("%s: the reference rewrite changed=%v, want %v", c.fixture, !bytes.Equal(want, body), c.logprobs)
		}
		checkRounded(t, c.fixture, c.ct, want)
		up := fixedUpstream(200, http.Header{"Content-Type": {c.ct}}, body)
		for _, mode := range []struct {
			name string
			m    procv3.ProcessingMode_BodySendMode
		}{{"streamed", mStreamed}, {"duplex", mDuplex}} {
			e := envoytest.New(h.client, envoyConfig(mBuffered, mode.m))
			for seed := uint64(1); seed <= 6; seed++ {
				chunker := envoytest.Random(seed*31+uint64(len(c.fixture)), 1+int(seed*seed*7), seed%2 == 0)
				res, err := e.Do(ctx, &envoytest.Exchange{Path: c.path, Body: []byte(c.req), Upstream: up, ResponseChunker: chunker,
					Header: http.Header{"Authorization": {"Bearer k"}, "Content-Type": {"application/json"}}})
				if err != nil {
					t.Fatal(err)
				}
				noViolations(t, res)
				if res.Status != 200 || res.Upstream == nil {
					t.Fatalf("%s %s seed %d: status %d (%s)", c.fixture, mode.name, seed, res.Status, res.LocalReply)
				}
				if !bytes.Equal(res.Body, want) {
					t.Fatalf("%s %s seed %d: body differs from the whole-body rewrite\n got %q\nwant %q", c.fixture, mode.name, seed, res.Body, want)
				}
				rb, err := mutate.ReadRequest(res.Upstream.Body, mutate.ReadOptions{Format: c.format})
				if err != nil {
					t.Fatalf("%s: forwarded request: %v", c.fixture, err)
				}
				if rb.TopLogprobs > 3 || rb.N > 1 || rb.LogitBiasSize > 0 {
					t.Fatalf("%s: forwarded request not capped: %s", c.fixture, res.Upstream.Body)
				}
			}
		}
	}
}

// checkRounded fails when a number under a logprob-like member of any
// document of body has more than two decimals.
func checkRounded(t testing.TB, name, ct string, body []byte) {
	t.Helper()
	var docs [][]byte
	switch ct {
	case "application/json":
		docs = [][]byte{body}
	default:
		for _, line := range bytes.Split(body, []byte("\n")) {
			line = bytes.TrimRight(line, "\r")
			if ct == "text/event-stream" {
				d, ok := bytes.CutPrefix(line, []byte("data:"))
				if !ok {
					continue
				}
				line = bytes.TrimSpace(d)
			}
			if len(line) > 0 && line[0] == '{' {
				docs = append(docs, line)
			}
		}
	}
	for _, d := range docs {
		dec := json.NewDecoder(bytes.NewReader(d))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("%s: output document is not JSON: %v\n%s", name, err, d)
		}
		walkNumbers(v, "", func(key string, n json.Number) {
			k := strings.ToLower(key)
			if !strings.Contains(k, "logprob") && k != "prob" && !strings.Contains(k, "logprobability") {
				return
			}
			s := n.String()
			if i := strings.IndexByte(s, '.'); i >= 0 && len(s)-i-1 > 2 && !strings.ContainsAny(s, "eE") {
				t.Errorf("%s: %s = %s is not rounded to 2 decimals", name, key, s)
			}
		})
	}
}

func walkNumbers(v any, key string, f func(string, json.Number)) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			walkNumbers(e, k, f)
		}
	case []any:
		for _, e := range x {
			walkNumbers(e, key, f)
		}
	case json.Number:
		f(key, x)
	}
}

// TestFormatScoringInput: the scorer gets each format's prompt, system
// text and asks, and what the path says (Gemini's model, a streaming
// endpoint).
func TestFormatScoringInput(t *testing.T) {
	cases := []struct {
		path, body      string
		model, prompt   string
		system          string
		stream, asks    bool
		topK, maxTokens int
	}{
		{"/v1beta/models/gemini-2.0-flash:streamGenerateContent", `{"systemInstruction":{"parts":[{"text":"sys"}]},"contents":[{"role":"user","parts":[{"text":"q"}]}],"generationConfig":{"responseLogprobs":true,"logprobs":4,"maxOutputTokens":9}}`,
			"gemini-2.0-flash", "q", "sys", true, true, 4, 9},
		{"/v1/projects/p/locations/l/publishers/google/models/gemini-pro:generateContent", `{"contents":[{"parts":[{"text":"v"}]}]}`,
			"gemini-pro", "v", "", false, false, 0, 0},
		{"/generate_stream", `{"inputs":"hello","parameters":{"top_n_tokens":2,"max_new_tokens":5}}`, "", "hello", "", true, true, 2, 5},
		{"/api/chat", `{"model":"llama3","messages":[{"role":"system","content":"s"},{"role":"user","content":"u"}],"logprobs":true}`, "llama3", "u", "s", true, true, 0, 0},
		{"/v1/messages", `{"model":"claude","max_tokens":7,"system":"s","messages":[{"role":"user","content":"m"}]}`, "claude", "m", "s", false, false, 0, 7},
	}
	for _, tc := range cases {
		sc := verdictScorer(scoring.Allow)
		h := newHarness(t, config.Default(), sc)
		res, err := envoytest.New(h.client, envoyConfig(mBuffered, mStreamed)).Do(context.Background(), &envoytest.Exchange{
			Path: tc.path, Body: []byte(tc.body), Upstream: fixedUpstream(200, http.Header{"Content-Type": {"application/json"}}, []byte(`{}`)),
			Header: http.Header{"Authorization": {"Bearer k"}, "Content-Type": {"application/json"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		noViolations(t, res)
		calls := sc.Calls()
		if len(calls) != 1 {
			t.Fatalf("%s: %d scorer calls", tc.path, len(calls))
		}
		r := calls[0]
		if r.Model != tc.model || r.Prompt != tc.prompt || r.System != tc.system || r.Stream != tc.stream ||
			r.Logprobs != tc.asks || r.TopLogprobs != tc.topK || r.MaxTokens != tc.maxTokens {
			t.Errorf("%s: scored model %q prompt %q system %q stream %v logprobs %v top %d max_tokens %d", tc.path,
				r.Model, r.Prompt, r.System, r.Stream, r.Logprobs, r.TopLogprobs, r.MaxTokens)
		}
	}
}
