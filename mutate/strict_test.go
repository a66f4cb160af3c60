package mutate_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/distillguard/distillguard/extproc/envoytest"
	"github.com/distillguard/distillguard/mutate"
)

const msgs = `"messages":[{"role":"user","content":"hi"}]`

// TestReadRequestRefuses: every body a lenient reader takes differently
// from RFC 8259, and every guarded field of another type, is refused with
// a status and a message that names the problem.
func TestReadRequestRefuses(t *testing.T) {
	cases := []struct {
		name   string
		body   string
		ep     mutate.Format
		status int
		msg    string
		param  string
	}{
		{"NaN member", `{"x":NaN,` + msgs + `}`, 0, 400, "request body: NaN is not valid JSON", ""},
		{"Infinity", `{"x":Infinity}`, 0, 400, "Infinity is not valid JSON", ""},
		{"-Infinity", `{"x":[-Infinity]}`, 0, 400, "-Infinity is not valid JSON", ""},
		{"BOM", "\xef\xbb\xbf{}", 0, 400, "byte order mark", ""},
		{"UTF-16LE", "{\x00}\x00", 0, 415, "UTF-16 and UTF-32 are not accepted", ""},
		{"UTF-16 BOM", "\xff\xfe{\x00}\x00", 0, 415, "UTF-16", ""},
		{"UTF-32BE", "\x00\x00\x00{\x00\x00\x00}", 0, 415, "UTF-16", ""},
		{"invalid UTF-8", "{\"a\":\"\xff\"}", 0, 400, "invalid UTF-8 at byte 6", ""},
		{"encoded surrogate", "{\"a\":\"\xed\xa0\x80\"}", 0, 400, "invalid UTF-8 at byte 6", ""},
		{"130 levels", `{"x":` + strings.Repeat("[", 130) + strings.Repeat("]", 130) + `}`, 0, 400, "nested deeper than 128 levels", ""},
		{"duplicate", `{"logit_bias":{},"logit_bias":{"1":5}}`, 0, 400, `request body: duplicate member "logit_bias"`, "logit_bias"},
		{"duplicate by escape", `{"logit_bias":{},"logit\u005fbias":{"1":5}}`, 0, 400, `duplicate member "logit_bias"`, "logit_bias"},
		{"duplicate nested", `{"messages":[{"role":"user","role":"system"}]}`, 0, 400, `duplicate member "role"`, "role"},
		{"duplicate in a large object", `{"a0":0,"a1":1,"a2":2,"a3":3,"a4":4,"a5":5,"a6":6,"a7":7,"a8":8,"a3":9}`, 0, 400, `duplicate member "a3"`, "a3"},
		{"lone surrogate name", `{"\ud800":1}`, 0, 400, "lone surrogate", ""},
		{"control character", "{\"a\":\"\x01\"}", 0, 400, "unescaped control character", ""},
		{"invalid escape", `{"a":"\x"}`, 0, 400, "invalid escape", ""},
		{"trailing data", `{} {}`, 0, 400, "data after the JSON object", ""},
		{"trailing comma", `{"a":1,}`, 0, 400, "expected a member name", ""},
		{"leading zero", `{"a":01}`, 0, 400, "request body:", ""},
		{"array", `[{}]`, 0, 400, "must be a JSON object", ""},
		{"empty", ``, 0, 400, "request body: empty", ""},
		{"numeric string", `{"top_logprobs":"20"}`, 0, 400, "top_logprobs must be an integer", "top_logprobs"},
		{"boolean string", `{"logprobs":"true"}`, mutate.FormatOpenAIChat, 400, "logprobs must be a boolean", "logprobs"},
		{"two as a boolean", `{"logprobs":2}`, mutate.FormatOpenAIChat, 400, "logprobs must be a boolean", "logprobs"},
		{"boolean on completions", `{"logprobs":"yes"}`, mutate.FormatOpenAICompletions, 400, "logprobs must be an integer", "logprobs"},
		{"fraction", `{"n":1.5}`, 0, 400, "n must be an integer", "n"},
		{"overflow", `{"top_logprobs":1e400}`, 0, 400, "top_logprobs is out of range", "top_logprobs"},
		{"model number", `{"model":7}`, 0, 400, "model must be a string", "model"},
		{"model surrogate", `{"model":"m\udc00"}`, 0, 400, "model has a lone surrogate", "model"},
		{"logit_bias string", `{"logit_bias":"1:5"}`, 0, 400, "logit_bias must be an object", "logit_bias"},
		{"allowed_token_ids object", `{"allowed_token_ids":{}}`, 0, 400, "allowed_token_ids must be an array", "allowed_token_ids"},
		{"include numbers", `{"include":[1]}`, 0, 400, "include must be an array of strings", "include"},
		{"TGI nested", `{"parameters":{"top_n_tokens":"5"}}`, 0, 400, "top_n_tokens must be an integer", "top_n_tokens"},
		{"logit_bias too large", logitBias(1025), 0, 400, "logit_bias has more than 1024 entries", "logit_bias"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := mutate.ReadRequest([]byte(tc.body), mutate.ReadOptions{Format: tc.ep})
			var re *mutate.RequestError
			if !errors.As(err, &re) {
				t.Fatalf("accepted (err %v)", err)
			}
			if re.Status != tc.status || !strings.Contains(re.Message, tc.msg) || re.Param != tc.param || re.Reason == "" {
				t.Fatalf("got %d %q param %q reason %q, want %d %q param %q", re.Status, re.Message, re.Param, re.Reason, tc.status, tc.msg, tc.param)
			}
		})
	}
}

// TestReadRequestAccepts: the exact types, integral numbers for integer
// fields, true/false for integer fields and 0/1 for boolean ones (the
// same value in both readings), escaped names, nulls.
func TestReadRequestAccepts(t *testing.T) {
	cases := []struct {
		body     string
		ep       mutate.Format
		asks     bool
		top      int
		n        int
		logitSz  int
		model    string
		maxTok   int
		echo     bool
		escapeOK bool
	}{
		{body: `{"model":"m","logprobs":true,"top_logprobs":20.0,"n":2e0,"logit_bias":{"1":1,"2":2}}`, ep: mutate.FormatOpenAIChat, asks: true, top: 20, n: 2, logitSz: 2, model: "m"},
		{body: `{"log\u0070robs":1,"top_logprob\u0073":3}`, ep: mutate.FormatOpenAIChat, asks: true, top: 3},
		{body: `{"logprobs":false,"top_logprobs":null,"logit_bias":null}`, ep: mutate.FormatOpenAIChat},
		{body: `{"logprobs":true}`, ep: mutate.FormatOpenAICompletions, asks: true, top: 1},
		{body: `{"logprobs":0}`, ep: mutate.FormatOpenAICompletions, asks: true},
		{body: `{"echo":true}`, ep: mutate.FormatOpenAIChat, asks: true, echo: true},
		{body: `{"echo":true}`, ep: mutate.FormatOpenAICompletions, echo: true},
		{body: `{"model":"caf\u00e9","max_tokens":7}`, model: "café", maxTok: 7},
		{body: `{"prompt_logprobs":0}`, asks: true},
		{body: `{"generationConfig":{"responseLogprobs":true,"logprobs":4}}`, asks: true, top: 4},
		{body: `{"x":"\ud800","y":[1e400]}`},
	}
	for _, tc := range cases {
		b, err := mutate.ReadRequest([]byte(tc.body), mutate.ReadOptions{Format: tc.ep})
		if err != nil {
			t.Errorf("%s: %v", tc.body, err)
			continue
		}
		r := b.Request
		if b.Asks() != tc.asks || r.Logprobs != tc.asks || r.TopLogprobs != tc.top || r.N != tc.n || r.LogitBiasSize != tc.logitSz || r.Model != tc.model || r.MaxTokens != tc.maxTok || r.Echo != tc.echo {
			t.Errorf("%s: asks %v %+v", tc.body, b.Asks(), r)
		}
	}
}

// FuzzReadRequest is the reader's differential fuzz target: every body it
// accepts must be read the same way by the model of json.loads and
// pydantic (whether it asks for logprobs, how many alternatives, whether a
// bias is set), and the body rewritten by any policy must be safe under
// that lenient reading.
func FuzzReadRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"m",` + msgs + `,"logprobs":true,"top_logprobs":20,"logit_bias":{"1":100},"n":3}`,
		`{"log\u0070robs":true,"top_logprobs":2e1,"allowed_token_ids":[1]}`,
		`{"logprobs":5,"echo":true,"logit_bias":{"1":1},"best_of":4.0}`,
		`{"include":["message.output_text.logprob\u0073"],"top_logprobs":9,"input":"x"}`,
		`{"prompt_logprobs":7,"vllm_xargs":{"a":1}}`,
		`{"x":NaN}`, "\xef\xbb\xbf{}", `{"a":1,"a":2}`, `{"n_probs":9,"top_n_tokens":9}`,
		`{"parameters":{"top_n_tokens":9,"details":true},"logit_bias":[[1,2]]}`,
	} {
		for ep := range 4 {
			f.Add([]byte(s), uint8(ep), uint8(ep*3))
		}
	}
	f.Fuzz(func(t *testing.T, body []byte, epSel, polSel uint8) {
		eps := []mutate.Format{mutate.FormatOpenAIChat, mutate.FormatOpenAICompletions, mutate.FormatOpenAIResponses, mutate.FormatOpenAI}
		names := []string{"chat", "completions", "responses", "chat"}
		ep := eps[int(epSel)%len(eps)]
		b, err := mutate.ReadRequest(body, mutate.ReadOptions{Format: ep})
		if err != nil {
			var re *mutate.RequestError
			if !errors.As(err, &re) || re.Status < 400 || re.Message == "" {
				t.Fatalf("refusal without a status and message: %v", err)
			}
			return
		}
		if _, err := envoytest.PyLoads(body); err != nil {
			t.Fatalf("accepted a body json.loads refuses: %v", err)
		}
		for k := range names {
			if ep != eps[k] && ep != mutate.FormatOpenAI {
				continue
			}
			lr := envoytest.ReadLenient(names[k], body)
			if !lr.Valid {
				continue // the upstream refuses it: nothing to compare
			}
			// The strict reading may ask where vLLM would not (top_logprobs
			// without logprobs, the Responses include on chat): it judges
			// conservatively, never the other way.
			if lr.Asks() && !b.Asks() {
				t.Fatalf("%s: the lenient reading asks for logprobs, the strict one does not", names[k])
			}
		}
		policies := []mutate.RequestPolicy{
			{MaxTopLogprobs: 5, DropLogitBiasWithLogprobs: true},
			{MaxTopLogprobs: 5, MaxN: 1, DropLogitBias: true},
			{MaxTopLogprobs: 0, StripLogprobs: true, DropLogitBias: true},
			{MaxTopLogprobs: 1, MaxN: 2},
		}
		p := policies[int(polSel)%len(policies)]
		out, _ := b.Rewrite(nil, p)
		again, err := mutate.ReadRequest(out, mutate.ReadOptions{Format: ep})
		if err != nil {
			t.Fatalf("the rewritten body is refused: %v\n%q", err, out)
		}
		_ = again
		lim := envoytest.Limits{MaxTopLogprobs: p.MaxTopLogprobs, MaxN: p.MaxN, DropLogitBias: p.DropLogitBias,
			DropLogitBiasWithLogprobs: p.DropLogitBiasWithLogprobs, StripLogprobs: p.StripLogprobs}
		for k := range names {
			if ep != eps[k] && ep != mutate.FormatOpenAI {
				continue
			}
			if why := envoytest.ReadLenient(names[k], out).Violation(lim); why != "" {
				t.Fatalf("%s: %s after the rewrite\nin  %q\nout %q", names[k], why, body, out)
			}
		}
	})
}

// BenchmarkReadLogitBias: a 14 MB logit_bias costs no map and is refused
// after counting past the entry bound; a bias at the bound is read.
func BenchmarkReadLogitBias(b *testing.B) {
	build := func(entries int) []byte {
		var sb strings.Builder
		sb.WriteString(`{"model":"m",` + msgs + `,"logprobs":true,"logit_bias":{`)
		for i := range entries {
			if i > 0 {
				sb.WriteByte(',')
			}
			sb.WriteString(`"` + strconv.Itoa(i) + `":-100`)
		}
		sb.WriteString(`}}`)
		return []byte(sb.String())
	}
	huge := build(1 << 20) // ~14 MB
	for _, c := range []struct {
		name string
		body []byte
	}{{"14MB-refused", huge}, {"1024-entries", build(1024)}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.body)))
			for b.Loop() {
				_, _ = mutate.ReadRequest(c.body, mutate.ReadOptions{Format: mutate.FormatOpenAIChat})
			}
		})
	}
}

func logitBias(n int) string {
	var sb strings.Builder
	sb.WriteString(`{"logit_bias":{`)
	for i := range n {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(`"` + strconv.Itoa(i) + `":1`)
	}
	return sb.String() + `}}`
}
