package mutate_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/distillguard/distillguard/mutate"
)

// strictReq is the policy every format's caps are checked under.
func strictReq() mutate.RequestPolicy {
	return mutate.RequestPolicy{MaxTopLogprobs: 3, MaxN: 1, DropLogitBias: true}
}

func noReq() mutate.RequestPolicy { return mutate.RequestPolicy{MaxTopLogprobs: -1} }

// TestReadRequestFormats: each format's guarded fields are read with the
// meaning its upstream gives them, and the policy fields act on them as on
// the OpenAI ones: caps replace the number in place, drops remove the
// member with its comma, everything else is byte-identical.
func TestReadRequestFormats(t *testing.T) {
	cases := []struct {
		name   string
		f      mutate.Format
		body   string
		p      mutate.RequestPolicy
		want   string // the rewritten body
		asks   bool
		topK   int
		n      int
		stream bool
	}{
		{"gemini caps logprobs and candidateCount", mutate.FormatGemini,
			`{"contents":[{"parts":[{"text":"hi"}]}],"generationConfig":{"responseLogprobs":true,"logprobs":19,"candidateCount":4}}`, strictReq(),
			`{"contents":[{"parts":[{"text":"hi"}]}],"generationConfig":{"responseLogprobs":true,"logprobs":3,"candidateCount":1}}`, true, 19, 4, false},
		{"gemini proto names", mutate.FormatGemini,
			`{"contents":[],"generation_config":{"response_logprobs":true,"logprobs":5,"candidate_count":2}}`, strictReq(),
			`{"contents":[],"generation_config":{"response_logprobs":true,"logprobs":3,"candidate_count":1}}`, true, 5, 2, false},
		{"gemini strip", mutate.FormatGemini,
			`{"generationConfig":{"temperature":0.5,"responseLogprobs":true,"logprobs":5}}`, mutate.RequestPolicy{MaxTopLogprobs: -1, StripLogprobs: true},
			`{"generationConfig":{"temperature":0.5}}`, true, 5, 0, false},
		{"gemini cap 0 removes logprobs", mutate.FormatGemini,
			`{"generationConfig":{"responseLogprobs":true, "logprobs":5}}`, mutate.RequestPolicy{MaxTopLogprobs: 0},
			`{"generationConfig":{"responseLogprobs":true}}`, true, 5, 0, false},
		{"gemini no ask", mutate.FormatGemini,
			`{"generationConfig":{"responseLogprobs":false,"logprobs":0}}`, strictReq(),
			`{"generationConfig":{"responseLogprobs":false,"logprobs":0}}`, false, 0, 0, false},
		{"tgi caps and strips", mutate.FormatTGI,
			`{"inputs":"hi","parameters":{"details":true,"top_n_tokens":5,"best_of":2,"decoder_input_details":true,"max_new_tokens":20}}`, mutate.RequestPolicy{MaxTopLogprobs: -1, MaxN: 1, StripLogprobs: true},
			`{"inputs":"hi","parameters":{"best_of":1,"max_new_tokens":20}}`, true, 5, 0, false},
		{"tgi caps top_n_tokens", mutate.FormatTGI,
			`{"inputs":"hi","parameters":{"top_n_tokens":5,"grammar":{"type":"json","value":{}}},"stream":true}`, strictReq(),
			`{"inputs":"hi","parameters":{"top_n_tokens":3},"stream":true}`, true, 5, 0, true},
		{"llama.cpp n_probs and array logit_bias", mutate.FormatLlamaCpp,
			`{"prompt":"hi","n_probs":10,"logit_bias":[[15043,1.0],["Hello",false]],"stream":true}`, strictReq(),
			`{"prompt":"hi","n_probs":3,"stream":true}`, true, 10, 0, true},
		{"llama.cpp bias kept with the with-logprobs rule when no probs", mutate.FormatLlamaCpp,
			`{"prompt":"hi","n_probs":0,"logit_bias":{"15043":1.0}}`, mutate.RequestPolicy{MaxTopLogprobs: -1, DropLogitBiasWithLogprobs: true},
			`{"prompt":"hi","n_probs":0,"logit_bias":{"15043":1.0}}`, false, 0, 0, false},
		{"llama.cpp bias dropped with probs", mutate.FormatLlamaCpp,
			`{"prompt":"hi","logit_bias":{"15043":1.0},"n_probs":1}`, mutate.RequestPolicy{MaxTopLogprobs: -1, DropLogitBiasWithLogprobs: true},
			`{"prompt":"hi","n_probs":1}`, true, 1, 0, false},
		{"ollama caps top_logprobs", mutate.FormatOllama,
			`{"model":"m","prompt":"hi","logprobs":true,"top_logprobs":20}`, strictReq(),
			`{"model":"m","prompt":"hi","logprobs":true,"top_logprobs":3}`, true, 20, 0, true},
		{"ollama folded names", mutate.FormatOllama,
			`{"model":"m","LogProbs":true,"Top_Logprobs":20,"stream":false}`, mutate.RequestPolicy{MaxTopLogprobs: -1, StripLogprobs: true},
			`{"model":"m","stream":false}`, true, 20, 0, false},
		{"anthropic untouched", mutate.FormatAnthropic,
			`{"model":"c","max_tokens":10,"messages":[{"role":"user","content":"hi"}],"stream":true}`, mutate.RequestPolicy{MaxTopLogprobs: 0, MaxN: 1, StripLogprobs: true, DropLogitBias: true},
			`{"model":"c","max_tokens":10,"messages":[{"role":"user","content":"hi"}],"stream":true}`, false, 0, 0, true},
		{"anthropic path served by an OpenAI-compatible server", mutate.FormatAnthropic,
			`{"model":"c","max_tokens":10,"messages":[],"top_logprobs":20,"logprobs":true,"logit_bias":{"1":5}}`, strictReq(),
			`{"model":"c","max_tokens":10,"messages":[],"top_logprobs":3,"logprobs":true}`, true, 20, 0, false},
		{"gemini with OpenAI members", mutate.FormatGemini,
			`{"contents":[],"n":4,"logit_bias":{"1":5}}`, strictReq(),
			`{"contents":[],"n":1}`, false, 0, 4, false},
		{"vLLM prompt_logprobs capped", mutate.FormatOpenAIChat,
			`{"messages":[],"prompt_logprobs":10}`, strictReq(),
			`{"messages":[],"prompt_logprobs":3}`, true, 10, 0, false},
		{"vLLM echo with logprobs on completions stripped", mutate.FormatOpenAICompletions,
			`{"prompt":"a","echo":true,"logprobs":5}`, mutate.RequestPolicy{MaxTopLogprobs: -1, StripLogprobs: true},
			`{"prompt":"a","echo":true}`, true, 5, 0, false},
		{"vLLM best_of capped", mutate.FormatOpenAICompletions,
			`{"prompt":"a","best_of":5,"n":3}`, strictReq(),
			`{"prompt":"a","best_of":1,"n":1}`, false, 0, 3, false},
		{"noop policy", mutate.FormatGemini,
			`{"generationConfig":{"logprobs":19}}`, noReq(),
			`{"generationConfig":{"logprobs":19}}`, true, 19, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := mutate.ReadRequest([]byte(tc.body), mutate.ReadOptions{Format: tc.f})
			if err != nil {
				t.Fatalf("ReadRequest: %v", err)
			}
			if b.Asks() != tc.asks || b.Logprobs != tc.asks {
				t.Errorf("Asks %v Logprobs %v, want %v", b.Asks(), b.Logprobs, tc.asks)
			}
			if b.TopLogprobs != tc.topK || b.N != tc.n || b.Stream != tc.stream {
				t.Errorf("TopLogprobs %d N %d Stream %v, want %d %d %v", b.TopLogprobs, b.N, b.Stream, tc.topK, tc.n, tc.stream)
			}
			out, changed := b.Rewrite(nil, tc.p)
			if string(out) != tc.want {
				t.Errorf("Rewrite:\n got %s\nwant %s", out, tc.want)
			}
			if changed != (tc.want != tc.body) {
				t.Errorf("changed = %v", changed)
			}
			if !json.Valid(out) {
				t.Errorf("rewritten body is not JSON: %s", out)
			}
		})
	}
}

// TestReadRequestFormatRefuses: a guarded field of another type, and two
// spellings the upstream reads as one member, are refused.
func TestReadRequestFormatRefuses(t *testing.T) {
	cases := []struct {
		name, body string
		f          mutate.Format
		msg, param string
	}{
		{"gemini logprobs string", `{"generationConfig":{"logprobs":"5"}}`, mutate.FormatGemini, "logprobs must be an integer", "logprobs"},
		{"gemini both spellings", `{"generationConfig":{"responseLogprobs":false,"response_logprobs":true}}`, mutate.FormatGemini, "given twice under different spellings", "response_logprobs"},
		{"gemini both configs", `{"generationConfig":{},"generation_config":{"logprobs":5}}`, mutate.FormatGemini, "given twice", "generation_config"},
		{"tgi details string", `{"parameters":{"details":"yes"}}`, mutate.FormatTGI, "details must be a boolean", "details"},
		{"tgi grammar string", `{"parameters":{"grammar":"x"}}`, mutate.FormatTGI, "grammar must be an object", "grammar"},
		{"llama.cpp n_probs fraction", `{"n_probs":1.5}`, mutate.FormatLlamaCpp, "n_probs must be an integer", "n_probs"},
		{"llama.cpp logit_bias string", `{"logit_bias":"x"}`, mutate.FormatLlamaCpp, "logit_bias must be an object", "logit_bias"},
		{"ollama case duplicate", `{"logprobs":false,"LOGPROBS":true}`, mutate.FormatOllama, "given twice", "LOGPROBS"},
		{"ollama long s", "{\"stream\":false,\"\u017ftream\":true}", mutate.FormatOllama, "given twice", "\u017ftream"},
		{"ollama top_logprobs string", `{"Top_LogProbs":"3"}`, mutate.FormatOllama, "must be an integer", "Top_LogProbs"},
		{"anthropic max_tokens string", `{"max_tokens":"10"}`, mutate.FormatAnthropic, "max_tokens must be an integer", "max_tokens"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := mutate.ReadRequest([]byte(tc.body), mutate.ReadOptions{Format: tc.f})
			re, ok := err.(*mutate.RequestError)
			if !ok {
				t.Fatalf("err = %v, want a *RequestError", err)
			}
			if re.Status != 400 || !strings.Contains(re.Message, tc.msg) || re.Param != tc.param {
				t.Errorf("got %d %q param %q; want 400 %q param %q", re.Status, re.Message, re.Param, tc.msg, tc.param)
			}
		})
	}
}

// TestReadRequestFormatScoring: scoring's inputs (prompt, system, tools,
// turns) come out of every format's own layout.
func TestReadRequestFormatScoring(t *testing.T) {
	cases := []struct {
		name           string
		f              mutate.Format
		body           string
		prompt, system string
		first          string
		user, asst     int
		tool, tools    int
		maxTokens      int
	}{
		{"gemini", mutate.FormatGemini, `{"systemInstruction":{"parts":[{"text":"be brief"}]},"contents":[{"role":"user","parts":[{"text":"one"}]},{"role":"model","parts":[{"functionCall":{"name":"f"}}]},{"role":"user","parts":[{"functionResponse":{"name":"f"}}]},{"role":"user","parts":[{"text":"two"},{"text":"three"}]}],"tools":[{"functionDeclarations":[]}],"generationConfig":{"maxOutputTokens":64}}`,
			"two\nthree", "be brief", "one", 2, 1, 1, 1, 64},
		{"gemini proto names", mutate.FormatGemini, `{"system_instruction":{"parts":[{"text":"s"}]},"contents":[{"parts":[{"text":"q"}]}],"generation_config":{"max_output_tokens":7}}`,
			"q", "s", "", 1, 0, 0, 0, 7},
		{"tgi", mutate.FormatTGI, `{"inputs":"<s>[INST] hi [/INST]","parameters":{"max_new_tokens":20}}`,
			"<s>[INST] hi [/INST]", "", "", 0, 0, 0, 0, 20},
		{"llama.cpp", mutate.FormatLlamaCpp, `{"prompt":"Once","n_predict":12}`, "Once", "", "", 0, 0, 0, 0, 12},
		{"ollama generate", mutate.FormatOllama, `{"model":"m","prompt":"why","system":"sys","options":{"num_predict":5}}`, "why", "sys", "", 0, 0, 0, 0, 5},
		{"ollama chat", mutate.FormatOllama, `{"model":"m","messages":[{"role":"system","content":"sys"},{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"}],"tools":[{"type":"function"}]}`,
			"c", "sys", "a", 2, 1, 0, 1, 0},
		{"anthropic", mutate.FormatAnthropic, `{"model":"c","max_tokens":9,"system":[{"type":"text","text":"sys"}],"messages":[{"role":"user","content":[{"type":"text","text":"first"}]},{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":{}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"r"}]},{"role":"user","content":"last"}],"tools":[{"name":"f","input_schema":{}}]}`,
			"last", "sys", "first", 2, 1, 1, 1, 9},
		{"anthropic string system", mutate.FormatAnthropic, `{"model":"c","max_tokens":9,"system":"sys","messages":[{"role":"user","content":"q"}]}`,
			"q", "sys", "", 1, 0, 0, 0, 9},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := mutate.ReadRequest([]byte(tc.body), mutate.ReadOptions{Format: tc.f})
			if err != nil {
				t.Fatal(err)
			}
			r := b.Request
			if r.Prompt != tc.prompt || r.System != tc.system || r.FirstUser != tc.first {
				t.Errorf("Prompt %q System %q FirstUser %q; want %q %q %q", r.Prompt, r.System, r.FirstUser, tc.prompt, tc.system, tc.first)
			}
			if r.UserTurns != tc.user || r.AssistantTurns != tc.asst || r.ToolTurns != tc.tool || r.ToolCount != tc.tools {
				t.Errorf("turns user %d assistant %d tool %d tools %d; want %d %d %d %d", r.UserTurns, r.AssistantTurns, r.ToolTurns, r.ToolCount, tc.user, tc.asst, tc.tool, tc.tools)
			}
			if r.MaxTokens != tc.maxTokens {
				t.Errorf("MaxTokens %d, want %d", r.MaxTokens, tc.maxTokens)
			}
		})
	}
}

// FuzzReadRequestFormats: for every format, a body ReadRequest accepts
// rewrites under the strictest policy to a body it accepts again that asks
// for nothing, and under the caps to one whose counts are within them.
func FuzzReadRequestFormats(f *testing.F) {
	seeds := []string{
		`{"generationConfig":{"responseLogprobs":true,"logprobs":19,"candidateCount":4}}`,
		`{"generation_config":{"response_logprobs":1,"logprobs":2e1}}`,
		`{"inputs":"x","parameters":{"details":true,"top_n_tokens":5,"best_of":2,"decoder_input_details":true,"grammar":{"type":"regex"}}}`,
		`{"prompt":"x","n_probs":10,"logit_bias":[[1,false]],"grammar":"root ::= x","json_schema":{}}`,
		`{"model":"m","LogProbs":true,"TOP_LOGPROBS":20.0,"options":{"num_predict":3}}`,
		`{"model":"c","max_tokens":1,"system":"s","messages":[]}`,
		`{"prompt":"a","echo":true,"logprobs":5,"prompt_logprobs":3,"best_of":4}`,
	}
	for i, s := range seeds {
		f.Add([]byte(s), uint8(i))
	}
	f.Fuzz(func(t *testing.T, body []byte, fmtByte uint8) {
		formats := mutate.Formats()
		ft := formats[int(fmtByte)%len(formats)]
		b, err := mutate.ReadRequest(body, mutate.ReadOptions{Format: ft})
		if err != nil {
			if _, ok := err.(*mutate.RequestError); !ok {
				t.Fatalf("error %T %v is not a *RequestError", err, err)
			}
			return
		}
		strip, _ := b.Rewrite(nil, mutate.RequestPolicy{MaxTopLogprobs: -1, StripLogprobs: true, DropLogitBias: true})
		b2, err := mutate.ReadRequest(strip, mutate.ReadOptions{Format: ft})
		if err != nil {
			t.Fatalf("stripped body refused: %v\n%s", err, strip)
		}
		// Completions keep echo (it asks only together with logprobs).
		if b2.Asks() && ft != mutate.FormatOpenAICompletions {
			t.Fatalf("stripped body still asks: %s", strip)
		}
		capped, _ := b.Rewrite(nil, mutate.RequestPolicy{MaxTopLogprobs: 2, MaxN: 1})
		b3, err := mutate.ReadRequest(capped, mutate.ReadOptions{Format: ft})
		if err != nil {
			t.Fatalf("capped body refused: %v\n%s", err, capped)
		}
		if b3.TopLogprobs > 2 || b3.N > 1 {
			t.Fatalf("caps not applied: top %d n %d\n%s", b3.TopLogprobs, b3.N, capped)
		}
		if !json.Valid(strip) || !json.Valid(capped) {
			t.Fatalf("rewrites are not JSON")
		}
	})
}
