package extproc

import (
	"context"
	"net/http"
	"sync"
	"testing"

	"github.com/distillguard/distillguard/extproc/envoytest"
	"github.com/distillguard/distillguard/mutate"
	"github.com/distillguard/distillguard/scoring"
)

// observingScorer is a fakeScorer that also records ObserveResponse.
type observingScorer struct {
	*fakeScorer
	mu   sync.Mutex
	seen []scoring.Usage
	sess []string
}

func (o *observingScorer) ObserveResponse(session string, u scoring.Usage) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.seen = append(o.seen, u)
	o.sess = append(o.sess, session)
}

func TestUsageTracker(t *testing.T) {
	cases := []struct {
		f          mutate.Format
		body       string
		found      bool
		completion int
		reasoning  int
	}{
		{mutate.FormatOpenAIChat, `data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":12,"completion_tokens_details":{"reasoning_tokens":4}}}` + "\n\n", true, 12, 4},
		{mutate.FormatOpenAIResponses, `{"type":"response.completed","response":{"usage":{"input_tokens":2,"output_tokens":9}}}`, true, 9, 0},
		{mutate.FormatAnthropic, `event: message_delta` + "\n" + `data: {"type":"message_delta","usage":{"output_tokens":15}}` + "\n\n", true, 15, 0},
		{mutate.FormatGemini, `{"candidates":[],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":7,"thoughtsTokenCount":3}}`, true, 10, 3},
		{mutate.FormatTGI, `data:{"token":{},"details":{"finish_reason":"length","generated_tokens":20}}` + "\n\n", true, 20, 0},
		{mutate.FormatLlamaCpp, `{"content":"x","tokens_predicted":6,"stop":true}`, true, 6, 0},
		{mutate.FormatOllama, `{"done":true,"eval_count":33,"prompt_eval_count":2}` + "\n", true, 33, 0},
		// The key inside generated text is not a member name.
		{mutate.FormatOllama, `{"response":"say \"eval_count\": 99"}` + "\n", false, 0, 0},
		{mutate.FormatOpenAIChat, `data: {"choices":[{"delta":{"content":"\"usage\":{\"completion_tokens\":5}"}}]}` + "\n\n", false, 0, 0},
		{mutate.FormatOpenAIEmbeddings, `{"usage":{"prompt_tokens":3}}`, false, 0, 0},
	}
	for _, tc := range cases {
		var u usageTracker
		u.reset(tc.f)
		u.scan([]byte(tc.body))
		if u.found != tc.found || u.u.CompletionTokens != tc.completion || u.u.ReasoningTokens != tc.reasoning {
			t.Errorf("%v %s: found %v completion %d reasoning %d; want %v %d %d", tc.f, tc.body, u.found, u.u.CompletionTokens, u.u.ReasoningTokens, tc.found, tc.completion, tc.reasoning)
		}
	}
}

// TestObserveResponse: at the end of a rewritten stream, the scorer gets
// the output tokens the last usage report gave, with the request's
// session; a stream that reports none is not observed.
func TestObserveResponse(t *testing.T) {
	requireRealMutate(t)
	sc := &observingScorer{fakeScorer: verdictScorer(scoring.Allow)}
	h := newHarness(t, formatsConfig(t), sc)
	g := envoytest.NewGen(4)
	withUsage := envoytest.Join(g.ChatStream(envoytest.Options{Tokens: 6, Logprobs: true, TopLogprobs: 2, Usage: true}))
	without := envoytest.Join(g.ChatStream(envoytest.Options{Tokens: 6, Logprobs: true, TopLogprobs: 2}))
	for _, body := range [][]byte{withUsage, without} {
		res, err := envoytest.New(h.client, envoyConfig(mBuffered, mStreamed)).Do(context.Background(), &envoytest.Exchange{
			Body:            []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"logprobs":true,"top_logprobs":2}`),
			Header:          http.Header{"Authorization": {"Bearer k"}, "Content-Type": {"application/json"}},
			ResponseChunker: envoytest.Random(3, 50, false),
			Upstream:        fixedUpstream(200, sseHeader(), body),
		})
		if err != nil {
			t.Fatal(err)
		}
		noViolations(t, res)
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if len(sc.seen) != 1 || sc.sess[0] != "sess-1234" || sc.seen[0].CompletionTokens <= 0 {
		t.Fatalf("observed %v for sessions %v; want one report with output tokens for sess-1234", sc.seen, sc.sess)
	}
}
