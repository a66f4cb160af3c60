package scoring

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2025, 3, 3, 9, 0, 0, 0, time.UTC)

func newTestEngine(t testing.TB, edit func(*Config), opts ...Options) *Engine {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Secret = "test-secret-test-secret-test-secret"
	cfg.MemoryBytes = 16 << 20
	if edit != nil {
		edit(&cfg)
	}
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	e, err := New(cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// client builds requests for one credential.
type client struct {
	token, addr, ua string
	hdr             map[string]string
}

func newClient(token, addr string) *client {
	return &client{token: token, addr: addr, ua: "OpenAI/Python 1.51.0"}
}

func (c *client) req(at time.Time, prompt string, edit ...func(*Request)) *Request {
	h := map[string]string{"user-agent": c.ua}
	if c.token != "" {
		h["authorization"] = "Bearer " + c.token
	}
	for k, v := range c.hdr {
		h[k] = v
	}
	r := &Request{
		Time: at, Header: func(n string) string { return h[n] }, SourceAddress: c.addr,
		Path: "/v1/chat/completions", Endpoint: "chat", Model: "gpt-4o-mini", Prompt: prompt, Messages: 1,
		ShapeKeys: []string{"messages", "model"},
	}
	for _, f := range edit {
		f(r)
	}
	return r
}

func strength(d Decision, name string) float64 {
	for _, s := range d.Signals {
		if s.Name == name {
			return s.Value
		}
	}
	return 0
}

func withLogprobs(top int) func(*Request) {
	return func(r *Request) { r.Logprobs, r.TopLogprobs = true, top }
}

func withLogitBias(n int) func(*Request) { return func(r *Request) { r.LogitBiasSize = n } }

func withMaxTokens(n int) func(*Request) { return func(r *Request) { r.MaxTokens = n } }

func withMessages(n int) func(*Request) { return func(r *Request) { r.Messages = n } }

// withTurns sets the conversation structure: user and assistant turns and
// the first user turn.
func withTurns(user, assistant int, first string) func(*Request) {
	return func(r *Request) {
		r.UserTurns, r.AssistantTurns, r.FirstUser = user, assistant, first
		r.Messages = user + assistant
	}
}

// withToolLoop marks the request as a tool-loop continuation.
func withToolLoop(calls int) func(*Request) {
	return func(r *Request) {
		r.UserTurns, r.AssistantTurns, r.ToolTurns, r.AfterUser = 1, calls, calls, 2*calls
		r.Messages = 2 + 2*calls
		r.System, r.Tools, r.ToolCount = "You are a coding agent.", `[{"type":"function","function":{"name":"run"}}]`, 1
	}
}

// distinctPrompt returns a prompt of 12 pseudo-words that shares no 4-gram
// with the prompts of other indices (with overwhelming probability).
func distinctPrompt(i int) string {
	syl := []string{"ka", "lo", "mi", "ren", "tus", "vor", "bel", "dan", "fi", "gor", "hu", "jat", "ne", "pol", "qui", "sa", "te", "ul", "wex", "zo"}
	rng := rand.New(rand.NewPCG(uint64(i), 99))
	words := make([]string, 12)
	for k := range words {
		words[k] = syl[rng.IntN(len(syl))] + syl[rng.IntN(len(syl))] + syl[rng.IntN(len(syl))]
	}
	return strings.Join(words, " ")
}
