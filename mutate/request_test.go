package mutate

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/distillguard/distillguard/internal/corpus/corpustest"
)

func TestParseRequest(t *testing.T) {
	temp := 0.7
	zero := 0.0
	tests := []struct {
		name      string
		body      string
		maxPrompt int
		want      Request
	}{
		{
			name: "chat",
			body: `{"model":"gpt-4o","messages":[{"role":"system","content":"sys"},{"role":"user","content":"first"},{"role":"assistant","content":"ok"},{"role":"user","content":"second"}],"stream":true,"n":2,"max_tokens":10,"temperature":0.7,"logprobs":true,"top_logprobs":5,"logit_bias":{"1":2,"3":4}}`,
			want: Request{Model: "gpt-4o", Prompt: "second", Messages: 4, Stream: true, N: 2, MaxTokens: 10, Temperature: &temp, Logprobs: true, TopLogprobs: 5, LogitBiasSize: 2,
				ShapeKeys: []string{"logit_bias", "logprobs", "max_tokens", "messages", "model", "n", "stream", "temperature", "top_logprobs"},
				System:    "sys", FirstUser: "first", UserTurns: 2, AssistantTurns: 1},
		},
		{
			name: "chat content parts, newest user last but one",
			body: `{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"b"}]},{"role":"assistant","content":null}],"max_completion_tokens":7,"logprobs":false}`,
			want: Request{Prompt: "a\nb", Messages: 2, MaxTokens: 7, ShapeKeys: []string{"logprobs", "max_completion_tokens", "messages"},
				UserTurns: 1, AssistantTurns: 1, AfterUser: 1},
		},
		{
			name: "legacy completion with integer logprobs",
			body: `{"model":"davinci-002","prompt":"Once upon","logprobs":5,"echo":true,"temperature":0}`,
			want: Request{Model: "davinci-002", Prompt: "Once upon", Messages: 1, Logprobs: true, TopLogprobs: 5, Echo: true, Temperature: &zero,
				ShapeKeys: []string{"echo", "logprobs", "model", "prompt", "temperature"}},
		},
		{
			name: "legacy completion, prompt list and token arrays",
			body: `{"prompt":["a",[1,2,3]],"logprobs":0}`,
			want: Request{Prompt: "a\n1 2 3", Messages: 1, Logprobs: true, ShapeKeys: []string{"logprobs", "prompt"}},
		},
		{
			name: "token prompt",
			body: `{"prompt":[9707,11],"prompt_logprobs":20}`,
			want: Request{Prompt: "9707 11", Messages: 1, Logprobs: true, TopLogprobs: 20, ShapeKeys: []string{"prompt", "prompt_logprobs"}},
		},
		{
			name: "responses API items with include",
			body: `{"model":"gpt-4.1","instructions":"be brief","input":[{"role":"user","content":[{"type":"input_text","text":"hi"}]},{"type":"message","role":"assistant","content":[{"type":"output_text","text":"yo"}]}],"include":["message.output_text.logprobs"],"max_output_tokens":50}`,
			want: Request{Model: "gpt-4.1", Prompt: "hi", Messages: 2, MaxTokens: 50, Logprobs: true, ShapeKeys: []string{"include", "input", "instructions", "max_output_tokens", "model"},
				System: "be brief", UserTurns: 1, AssistantTurns: 1, AfterUser: 1},
		},
		{
			name: "responses API string input, top_logprobs",
			body: `{"input":"hello","top_logprobs":3}`,
			want: Request{Prompt: "hello", Messages: 1, Logprobs: true, TopLogprobs: 3, ShapeKeys: []string{"input", "top_logprobs"}},
		},
		{
			name: "responses API: instructions when no user text",
			body: `{"input":[{"role":"developer","content":"x"}],"instructions":"do it"}`,
			want: Request{Prompt: "do it", Messages: 1, ShapeKeys: []string{"input", "instructions"}, System: "do it\nx"},
		},
		{
			name: "embeddings",
			body: `{"model":"text-embedding-3-small","input":["a","b"],"encoding_format":"base64"}`,
			want: Request{Model: "text-embedding-3-small", Prompt: "a\nb", Messages: 1, ShapeKeys: []string{"encoding_format", "input", "model"}},
		},
		{
			name:      "prompt capped at a UTF-8 boundary",
			body:      `{"messages":[{"role":"user","content":"héllo"}]}`,
			maxPrompt: 2,
			want:      Request{Prompt: "h", Messages: 1, ShapeKeys: []string{"messages"}, UserTurns: 1},
		},
		{
			name:      "agent tool loop: the user turn re-sent after tool calls and results",
			body:      `{"model":"m","tools":[{"type":"function","function":{"name":"read_file"}},{"type":"function","function":{"name":"run"}}],"messages":[{"role":"system","content":[{"type":"text","text":"You are a coding agent."}]},{"role":"user","content":"fix the build"},{"role":"assistant","content":null,"tool_calls":[{"id":"1","type":"function","function":{"name":"run","arguments":"{}"}}]},{"role":"tool","tool_call_id":"1","content":"error: x"}]}`,
			maxPrompt: 40,
			want: Request{Model: "m", Prompt: "fix the build", Messages: 4, ShapeKeys: []string{"messages", "model", "tools"},
				System: "You are a coding agent.", Tools: `[{"type":"function","function":{"name":"`, ToolCount: 2,
				UserTurns: 1, AssistantTurns: 1, ToolTurns: 1, AfterUser: 2},
		},
		{
			name: "tool_result parts in a user message are tool turns; legacy functions",
			body: `{"functions":[{"name":"f"}],"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"},{"role":"assistant","content":null},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"out"}]}]}`,
			want: Request{Prompt: "", Messages: 5, ShapeKeys: []string{"functions", "messages"}, Tools: `[{"name":"f"}]`, ToolCount: 1,
				FirstUser: "a", UserTurns: 2, AssistantTurns: 2, ToolTurns: 1, AfterUser: 2},
		},
		{
			name: "responses API function call items",
			body: `{"input":[{"role":"developer","content":"d"},{"role":"user","content":"go"},{"type":"function_call","call_id":"c","name":"f","arguments":"{}"},{"type":"function_call_output","call_id":"c","output":"r"}],"tools":[]}`,
			want: Request{Prompt: "go", Messages: 4, ShapeKeys: []string{"input", "tools"}, System: "d", UserTurns: 1, AssistantTurns: 1, ToolTurns: 1, AfterUser: 2},
		},
		{
			// ParseRequest is the lenient reading (ReadRequest refuses
			// these); an array logit_bias is llama.cpp's form and counts.
			name: "wrong types are ignored",
			body: `{"model":1,"stream":"yes","n":"2","max_tokens":1.5,"temperature":"hot","logprobs":"x","top_logprobs":null,"logit_bias":[[1,2]],"messages":{"role":"user"}}`,
			want: Request{LogitBiasSize: 1, ShapeKeys: []string{"logit_bias", "logprobs", "max_tokens", "messages", "model", "n", "stream", "temperature", "top_logprobs"}},
		},
		{
			name: "integral floats and huge values",
			body: `{"n":2.0,"max_tokens":1e12}`,
			want: Request{N: 2, MaxTokens: 2147483647, ShapeKeys: []string{"max_tokens", "n"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRequest([]byte(tt.body), tt.maxPrompt)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", *got, tt.want)
			}
		})
	}
}

func TestParseRequestErrors(t *testing.T) {
	for _, body := range []string{``, `[]`, `"x"`, `{"a":}`, `{"a":1}x`, strings.Repeat("[", 200) + strings.Repeat("]", 200),
		`{"a":` + strings.Repeat("[", 128) + strings.Repeat("]", 128) + `}`} {
		if _, err := ParseRequest([]byte(body), 100); !errors.Is(err, ErrNotJSON) {
			t.Errorf("%.40q: err = %v, want ErrNotJSON", body, err)
		}
	}
	if _, err := ParseRequest([]byte(`{"a":`+strings.Repeat("[", 127)+strings.Repeat("]", 127)+`}`), 100); err != nil {
		t.Errorf("depth 128 rejected: %v", err)
	}
}

func TestRewriteRequest(t *testing.T) {
	allowReq := RequestPolicy{MaxTopLogprobs: 5, DropLogitBiasWithLogprobs: true}
	tests := []struct {
		name    string
		p       RequestPolicy
		in      string
		want    string
		changed bool
	}{
		{"cap top_logprobs", allowReq, `{"logprobs":true,"top_logprobs":20}`, `{"logprobs":true,"top_logprobs":5}`, true},
		{"under the cap", allowReq, `{"logprobs":true,"top_logprobs":2}`, `{"logprobs":true,"top_logprobs":2}`, false},
		{"logit_bias kept without logprobs", allowReq, `{"logit_bias":{"1":1},"n":3}`, `{"logit_bias":{"1":1},"n":3}`, false},
		{"logit_bias first", allowReq, `{"logit_bias":{"1":1},"logprobs":true}`, `{"logprobs":true}`, true},
		{"logit_bias middle", allowReq, `{"a":1, "logit_bias": {"1":1} , "logprobs":true}`, `{"a":1 , "logprobs":true}`, true},
		{"logit_bias last, pretty", allowReq, "{\n  \"logprobs\": 3,\n  \"logit_bias\": {\"1\": 1}\n}", "{\n  \"logprobs\": 3\n}", true},
		{"logit_bias only member", RequestPolicy{MaxTopLogprobs: -1, DropLogitBias: true}, `{ "logit_bias" : {} }`, `{}`, true},
		{"responses include asks for logprobs", allowReq, `{"include":["message.output_text.logprobs"],"logit_bias":{"1":1}}`, `{"include":["message.output_text.logprobs"]}`, true},
		{"prompt_logprobs asks and is capped", allowReq, `{"prompt_logprobs":10,"logit_bias":{"1":1}}`, `{"prompt_logprobs":5}`, true},
		{"logprobs false does not ask", allowReq, `{"logprobs":false,"logit_bias":{"1":1}}`, `{"logprobs":false,"logit_bias":{"1":1}}`, false},
		{"legacy integer logprobs capped", allowReq, `{"logprobs":10}`, `{"logprobs":5}`, true},
		{"n and best_of", RequestPolicy{MaxTopLogprobs: -1, MaxN: 1}, `{"n":4,"best_of":5.0,"x":[1]}`, `{"n":1,"best_of":1,"x":[1]}`, true},
		{"strip", RequestPolicy{MaxTopLogprobs: -1, StripLogprobs: true}, `{"model":"m","logprobs":true,"top_logprobs":3,"include":["a","message.output_text.logprobs","b"]}`, `{"model":"m","include":["a","b"]}`, true},
		{"strip include only element", RequestPolicy{MaxTopLogprobs: -1, StripLogprobs: true}, `{"include":[ "message.output_text.logprobs" ]}`, `{"include":[]}`, true},
		{"null values left", allowReq, `{"top_logprobs":null,"n":null}`, `{"top_logprobs":null,"n":null}`, false},
		{"escaped member names are the names they decode to", allowReq, `{"logit\u005fbias":{"1":1},"log\u0070robs":true,"top_logprob\u0073":20}`, `{"log\u0070robs":true,"top_logprob\u0073":5}`, true},
		{"integral float capped", allowReq, `{"logprobs":true,"top_logprobs":2e1}`, `{"logprobs":true,"top_logprobs":5}`, true},
		{"escaped include value asks and is stripped", RequestPolicy{MaxTopLogprobs: -1, StripLogprobs: true}, `{"include":["message.output_text.logprob\u0073"]}`, `{"include":[]}`, true},
		{"allowed_token_ids acts like logit_bias", allowReq, `{"logprobs":true,"allowed_token_ids":[1,2]}`, `{"logprobs":true}`, true},
		{"echo asks on chat", allowReq, `{"echo":true,"logit_bias":{"1":1}}`, `{"echo":true}`, true},
		{"TGI parameters", allowReq, `{"inputs":"x","parameters":{"top_n_tokens":9,"details":true}}`, `{"inputs":"x","parameters":{"top_n_tokens":5,"details":true}}`, true},
		{"Gemini generation config", RequestPolicy{MaxTopLogprobs: -1, StripLogprobs: true}, `{"generationConfig":{"responseLogprobs":true,"logprobs":5,"temperature":1}}`, `{"generationConfig":{"temperature":1}}`, true},
		{"nested members untouched", RequestPolicy{MaxTopLogprobs: 0, DropLogitBias: true}, `{"metadata":{"logit_bias":{},"top_logprobs":9}}`, `{"metadata":{"logit_bias":{},"top_logprobs":9}}`, false},
		{"noop policy", RequestPolicy{MaxTopLogprobs: -1}, `{"top_logprobs":20}`, `{"top_logprobs":20}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, changed, err := RewriteRequest([]byte("pre"), []byte(tt.in), tt.p)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != "pre"+tt.want || changed != tt.changed {
				t.Errorf("got %s changed=%v, want %s changed=%v", got[3:], changed, tt.want, tt.changed)
			}
			if !json.Valid(got[3:]) {
				t.Errorf("invalid JSON out")
			}
		})
	}
}

func TestRewriteRequestInvalid(t *testing.T) {
	p := RequestPolicy{MaxTopLogprobs: 1, DropLogitBias: true}
	for _, body := range []string{``, `[1]`, `{"logit_bias":{}`, `{"logit_bias":{}} x`, `{"a":tru}`} {
		got, changed, err := RewriteRequest(nil, []byte(body), p)
		if !errors.Is(err, ErrNotJSON) || changed || string(got) != body {
			t.Errorf("%q: got %q changed=%v err=%v", body, got, changed, err)
		}
	}
}

func readJSONL(t testing.TB, path string, each func(line []byte)) {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		each(sc.Bytes())
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
}

// TestParseRequestCorpus builds real conversations into chat requests and
// checks that the newest user turn comes back, whole or capped at a rune
// boundary.
func TestParseRequestCorpus(t *testing.T) {
	dir := corpustest.Require(t)
	n := 0
	readJSONL(t, filepath.Join(dir, "hh_rlhf_dialogs.jsonl"), func(line []byte) {
		var d struct {
			Turns []string `json:"turns"`
		}
		if err := json.Unmarshal(line, &d); err != nil || len(d.Turns) == 0 {
			t.Fatalf("bad corpus line: %v", err)
		}
		type msg struct {
			Role    string `json:"role"`
			Content any    `json:"content"`
		}
		var msgs []msg
		for i, turn := range d.Turns {
			var content any = turn
			if i%2 == 1 {
				content = []map[string]string{{"type": "text", "text": turn}}
			}
			msgs = append(msgs, msg{"user", content}, msg{"assistant", "ok"})
		}
		body, _ := json.Marshal(map[string]any{"model": "m", "messages": msgs[:len(msgs)-1], "logprobs": true, "top_logprobs": 20})
		last := d.Turns[len(d.Turns)-1]
		for _, max := range []int{0, 64} {
			req, err := ParseRequest(body, max)
			if err != nil {
				t.Fatal(err)
			}
			want := last
			if max > 0 && len(want) > max {
				if !strings.HasPrefix(want, req.Prompt) || len(req.Prompt) > max || len(req.Prompt) < max-3 {
					t.Fatalf("capped prompt %q of %q", req.Prompt, want)
				}
				want = req.Prompt
			}
			if req.Prompt != want || req.Messages != 2*len(d.Turns)-1 || !req.Logprobs || req.TopLogprobs != 20 {
				t.Fatalf("got %+v for %q", req, last)
			}
		}
		n++
	})
	if n < 1000 {
		t.Fatalf("only %d dialogs read", n)
	}
}
