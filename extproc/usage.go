package extproc

import (
	"bytes"
	"encoding/json"

	"github.com/distillguard/distillguard/mutate"
	"github.com/distillguard/distillguard/scoring"
)

// usageTracker reads the output token count a response reports, per
// format, from the documents the body releases, so that the scorer learns
// what each response delivered (scoring.ResponseObserver). Counts are
// cumulative where an API streams them (Gemini's usageMetadata, Anthropic's
// message_delta), so the last report wins. Only the few documents that
// carry the format's key are decoded, from that key on: a 100 KB body is
// searched, not parsed again. A response passed at its headers (body mode
// NONE: nothing the policy could change) is not seen, so it is not
// observed either: the output count covers the responses distillguard
// reads.
//
// Where the count is:
//   - OpenAI chat and completions: usage.completion_tokens (reasoning
//     included); Responses: usage.output_tokens
//     (https://platform.openai.com/docs/api-reference/chat/object#chat/object-usage);
//   - Anthropic Messages: usage.output_tokens (message_delta when streamed);
//   - Gemini: usageMetadata.candidatesTokenCount + thoughtsTokenCount
//     (https://ai.google.dev/api/generate-content#UsageMetadata);
//   - TGI: details.generated_tokens; llama.cpp: tokens_predicted; Ollama:
//     eval_count (the final line of a stream).
type usageTracker struct {
	key   string
	found bool
	u     scoring.Usage
}

// usageKey is the member whose value says how many tokens a format's
// response delivered.
func usageKey(f mutate.Format) string {
	switch f {
	case mutate.FormatGemini:
		return `"usageMetadata"`
	case mutate.FormatTGI:
		return `"generated_tokens"`
	case mutate.FormatLlamaCpp:
		return `"tokens_predicted"`
	case mutate.FormatOllama:
		return `"eval_count"`
	case mutate.FormatOpenAIEmbeddings:
		return "" // no output tokens
	}
	return `"usage"`
}

func (t *usageTracker) reset(f mutate.Format) {
	*t = usageTracker{key: usageKey(f)}
}

// usageFields is the union of the usage objects' members.
type usageFields struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	InputTokens      int `json:"input_tokens"`
	OutputTokens     int `json:"output_tokens"`
	CompletionDet    struct {
		Reasoning int `json:"reasoning_tokens"`
	} `json:"completion_tokens_details"`
	OutputDet struct {
		Reasoning int `json:"reasoning_tokens"`
	} `json:"output_tokens_details"`
	PromptTokenCount     int `json:"promptTokenCount"`
	CandidatesTokenCount int `json:"candidatesTokenCount"`
	ThoughtsTokenCount   int `json:"thoughtsTokenCount"`
}

// scan reads every report in b (whole documents, or whole events and
// lines, as the body releases them).
func (t *usageTracker) scan(b []byte) {
	if len(t.key) == 0 {
		return
	}
	for off := 0; ; {
		i := bytes.Index(b[off:], []byte(t.key))
		if i < 0 {
			return
		}
		i += off
		off = i + len(t.key)
		if escapedQuote(b, i) {
			continue // inside a string: not a member name
		}
		j := off
		for j < len(b) && (b[j] == ' ' || b[j] == '\t' || b[j] == '\r' || b[j] == '\n') {
			j++
		}
		if j >= len(b) || b[j] != ':' {
			continue
		}
		t.read(b[j+1:])
	}
}

// escapedQuote reports whether the quote at b[i] is preceded by an odd
// number of backslashes (so it is part of a string's content).
func escapedQuote(b []byte, i int) bool {
	n := 0
	for k := i - 1; k >= 0 && b[k] == '\\'; k-- {
		n++
	}
	return n%2 == 1
}

// read decodes the value after a usage key.
func (t *usageTracker) read(v []byte) {
	dec := json.NewDecoder(bytes.NewReader(v))
	if t.key == `"usage"` || t.key == `"usageMetadata"` {
		var u usageFields
		if dec.Decode(&u) != nil {
			return
		}
		t.found = true
		t.u.PromptTokens = max(u.PromptTokens, u.InputTokens, u.PromptTokenCount, t.u.PromptTokens)
		out := max(u.CompletionTokens, u.OutputTokens, u.CandidatesTokenCount+u.ThoughtsTokenCount)
		if out > 0 || t.u.CompletionTokens == 0 {
			t.u.CompletionTokens = out
		}
		t.u.ReasoningTokens = max(u.CompletionDet.Reasoning, u.OutputDet.Reasoning, u.ThoughtsTokenCount)
		return
	}
	var n int
	if dec.Decode(&n) == nil {
		t.found = true
		t.u.CompletionTokens = n
	}
}

// observeUsage hands what the response reported to the scorer, once, at
// the end of the response body.
func (st *stream) observeUsage() {
	t := &st.rs.body.usage
	if !t.found || st.session == "" {
		return
	}
	t.found = false
	if o, ok := st.srv.scorer.(scoring.ResponseObserver); ok {
		u := t.u
		u.Time = st.reqTime
		o.ObserveResponse(st.session, u)
	}
}
