package watermark

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// answerIn renders one answer (text, and per word the alternatives top,
// most likely first) in api's answer shape, as the provider documents it.
func answerIn(api, text string, top [][]TokenLogprob) []byte {
	var doc map[string]any
	switch api {
	case APICompletions:
		choice := map[string]any{"index": 0, "text": text, "finish_reason": "stop"}
		if top != nil {
			var tokens []string
			var tl []map[string]float64
			for _, alts := range top {
				tokens = append(tokens, alts[0].Token)
				m := map[string]float64{}
				for _, a := range alts {
					m[a.Token] = a.Logprob
				}
				tl = append(tl, m)
			}
			choice["logprobs"] = map[string]any{"tokens": tokens, "top_logprobs": tl}
		}
		doc = map[string]any{"id": "cmpl-1", "object": "text_completion", "choices": []any{choice}}
	case APIGemini:
		cand := map[string]any{"index": 0, "finishReason": "STOP",
			"content": map[string]any{"role": "model", "parts": []any{map[string]any{"text": text}}}}
		if top != nil {
			var tc, chosen []any
			for _, alts := range top {
				var cs []any
				for _, a := range alts {
					cs = append(cs, map[string]any{"token": a.Token, "logProbability": a.Logprob})
				}
				tc = append(tc, map[string]any{"candidates": cs})
				chosen = append(chosen, cs[0])
			}
			cand["logprobsResult"] = map[string]any{"topCandidates": tc, "chosenCandidates": chosen}
		}
		doc = map[string]any{"candidates": []any{cand}, "modelVersion": "suspect"}
	case APIResponses:
		part := map[string]any{"type": "output_text", "text": text, "annotations": []any{}}
		if top != nil {
			var lp []any
			for _, alts := range top {
				lp = append(lp, map[string]any{"token": alts[0].Token, "logprob": alts[0].Logprob, "top_logprobs": alts})
			}
			part["logprobs"] = lp
		}
		doc = map[string]any{"id": "resp_1", "object": "response", "status": "completed", "output": []any{
			map[string]any{"type": "reasoning", "id": "rs_1", "summary": []any{}},
			map[string]any{"type": "message", "id": "msg_1", "role": "assistant", "content": []any{part}}}}
	case APIAnthropic:
		doc = map[string]any{"id": "msg_1", "type": "message", "role": "assistant", "stop_reason": "end_turn",
			"content": []any{map[string]any{"type": "text", "text": text}}}
	default:
		msg := map[string]any{"role": "assistant", "content": text}
		choice := map[string]any{"index": 0, "message": msg, "finish_reason": "stop"}
		if top != nil {
			var content []any
			for _, alts := range top {
				content = append(content, map[string]any{"token": alts[0].Token, "logprob": alts[0].Logprob, "top_logprobs": alts})
			}
			choice["logprobs"] = map[string]any{"content": content}
		}
		doc = map[string]any{"id": "chatcmpl-1", "object": "chat.completion", "choices": []any{choice}}
	}
	b, _ := json.Marshal(doc)
	return b
}

// wordAlternatives: three alternatives per word of text, the word first.
func wordAlternatives(text string) [][]TokenLogprob {
	var top [][]TokenLogprob
	for i, w := range strings.Fields(text) {
		top = append(top, []TokenLogprob{{" " + w, -0.1}, {fmt.Sprintf(" alt%d", i%7), -2.4}, {fmt.Sprintf(" other%d", i%5), -3.1}})
	}
	return top
}

// TestParseLogprobsFormats: the same positions, written as a chat
// completion, a legacy completion and a Gemini response, read back as the
// same positions, probe for probe.
func TestParseLogprobsFormats(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 9))
	var want []LogprobPosition
	var answers [][][]TokenLogprob
	for p := 0; p < 6; p++ {
		var top [][]TokenLogprob
		for i := 0; i < 1+r.IntN(9); i++ {
			var alts []TokenLogprob
			lp := -r.Float64()
			for j := 0; j < 1+r.IntN(5); j++ {
				alts = append(alts, TokenLogprob{fmt.Sprintf(" t%d", r.IntN(1000)*10+j), lp})
				lp -= 0.01 + r.Float64() // strictly falling: one order for every format
			}
			top = append(top, alts)
			want = append(want, LogprobPosition{Probe: p, Index: i, Top: alts})
		}
		answers = append(answers, top)
	}
	for _, api := range []string{APIChat, APICompletions, APIGemini, APIResponses} {
		var in bytes.Buffer
		for _, top := range answers {
			in.Write(answerIn(api, "x", top))
			in.WriteString("\n\n") // blank lines are skipped
		}
		got, err := ParseLogprobs(&in)
		if err != nil {
			t.Fatalf("%s: %v", api, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: read %d positions, want %d; first %+v", api, len(got), len(want), got[:min(1, len(got))])
		}
	}
	// A legacy position's alternatives come sorted whatever the key order
	// (ties by token).
	got, err := ParseLogprobs(strings.NewReader(`{"choices":[{"logprobs":{"tokens":["a"],"top_logprobs":[{"b":-2,"a":-1,"c":-2},null]}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := []TokenLogprob{{"a", -1}, {"b", -2}, {"c", -2}}; len(got) != 1 || !reflect.DeepEqual(got[0].Top, want) {
		t.Errorf("legacy alternatives %+v, want %+v", got, want)
	}
	// A response's positions are numbered across its output_text parts;
	// other output items do not count.
	got, err = ParseLogprobs(strings.NewReader(`{"object":"response","output":[{"type":"reasoning","summary":[]},{"type":"message","content":[` +
		`{"type":"output_text","text":"a","logprobs":[{"token":"a","logprob":-1,"top_logprobs":[{"token":"a","logprob":-1}]}]},` +
		`{"type":"output_text","text":"bc","logprobs":[{"token":"b","logprob":-1,"top_logprobs":[]},{"token":"c","logprob":-1,"top_logprobs":[{"token":"c","logprob":-1}]}]}]}]}` + "\n"))
	if err != nil || len(got) != 2 || got[0].Index != 0 || got[1].Index != 2 || got[1].Probe != 0 {
		t.Errorf("response positions %+v (%v), want indices 0 and 2 of probe 0", got, err)
	}
	// A Gemini candidate without logprobs is still a probe: the numbering
	// stays aligned with the probe set.
	got, err = ParseLogprobs(strings.NewReader(string(answerIn(APIGemini, "x", nil)) + "\n" + string(answerIn(APIGemini, "y", [][]TokenLogprob{{{"y", -1}}})) + "\n"))
	if err != nil || len(got) != 1 || got[0].Probe != 1 {
		t.Errorf("positions %+v (%v), want one of probe 1", got, err)
	}
}

// TestReadTextsAPIs: an answer's text parts are one text, its thoughts
// (Gemini thought parts, Responses reasoning summaries, Anthropic thinking
// blocks) another; an answer with neither is refused.
func TestReadTextsAPIs(t *testing.T) {
	for _, c := range []struct {
		name, in string
		want     []string
	}{
		{"gemini", `{"candidates":[{"content":{"parts":[{"text":"the kids ","thought":true},{"text":"maybe the "},{"text":"kids are big"},{"inlineData":{"mimeType":"image/png","data":""}}]}},{"content":{"parts":[{"text":"hello"}]}}]}`,
			[]string{"the kids ", "maybe the kids are big", "hello"}},
		{"responses", `{"object":"response","output":[{"type":"reasoning","summary":[{"type":"summary_text","text":"think "},{"type":"summary_text","text":"more"}]},` +
			`{"type":"message","content":[{"type":"output_text","text":"maybe "},{"type":"refusal","refusal":"no"},{"type":"output_text","text":"yes"}]},{"type":"function_call","arguments":"{}"}]}`,
			[]string{"think more", "maybe yes"}},
		{"anthropic", `{"type":"message","content":[{"type":"thinking","thinking":"hmm","signature":"x"},{"type":"text","text":"big "},{"type":"tool_use","input":{}},{"type":"text","text":"kids"}]}`,
			[]string{"hmm", "big kids"}},
	} {
		var got []string
		if err := readTexts(strings.NewReader(c.in+"\n"), func(b []byte) { got = append(got, string(b)) }); err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: texts %q, want %q", c.name, got, c.want)
		}
	}
	for _, in := range []string{`{"candidates":[{"finishReason":"SAFETY"}]}`, `{"object":"response","output":[]}`,
		`{"type":"error","error":{"type":"overloaded_error"}}`, `{"type":"message","content":[{"type":"tool_use"}]}`} {
		err := readTexts(strings.NewReader(in+"\n"), func([]byte) {})
		if err == nil || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("%s: err = %v, want one naming line 1", in, err)
		}
	}
}

// apiRequest is what a suspect of any of the APIs decodes.
type apiRequest struct {
	Model           string            `json:"model"`
	Stream          *bool             `json:"stream"`
	Temperature     *float64          `json:"temperature"`
	Messages        []json.RawMessage `json:"messages"`
	Input           []json.RawMessage `json:"input"`
	Prompt          *string           `json:"prompt"`
	System          *string           `json:"system"`
	Logprobs        json.RawMessage   `json:"logprobs"`
	TopLogprobs     *int              `json:"top_logprobs"`
	Include         []string          `json:"include"`
	MaxTokens       *int              `json:"max_tokens"`
	MaxOutputTokens *int              `json:"max_output_tokens"`
	Contents        []struct {
		Role  string `json:"role"`
		Parts []struct {
			Text string `json:"text"`
		} `json:"parts"`
	} `json:"contents"`
	SystemInstruction *struct {
		Parts []struct {
			Text string `json:"text"`
		} `json:"parts"`
	} `json:"systemInstruction"`
	GenerationConfig map[string]any `json:"generationConfig"`
}

// lastText is the text of the request's last turn, whatever its API.
func (r apiRequest) lastText() string {
	switch {
	case r.Prompt != nil:
		return *r.Prompt
	case len(r.Contents) > 0:
		var b strings.Builder
		for _, p := range r.Contents[len(r.Contents)-1].Parts {
			b.WriteString(p.Text)
		}
		return b.String()
	case len(r.Input) > 0:
		return messageContent(r.Input[len(r.Input)-1])
	case len(r.Messages) > 0:
		return messageContent(r.Messages[len(r.Messages)-1])
	}
	return ""
}

func messageContent(m json.RawMessage) string {
	var msg struct{ Content string }
	json.Unmarshal(m, &msg)
	return msg.Content
}

// probeAPI is how TestProbeAPIs reaches and checks a suspect of one API.
type probeAPI struct {
	api, path string
	args      []string // beyond the common ones
	logprobs  bool     // the API returns alternatives
	// check says what is wrong with a request, or "".
	check func(r *http.Request, req apiRequest) string
}

func probeAPIs() []probeAPI {
	bearer := func(r *http.Request) string {
		if r.Header.Get("Authorization") != "Bearer sk-api-9" {
			return fmt.Sprintf("Authorization %q", r.Header.Get("Authorization"))
		}
		return ""
	}
	return []probeAPI{
		{APIChat, "/v1/chat/completions", []string{"-model", "suspect-1", "-top-logprobs", "3"}, true, func(r *http.Request, req apiRequest) string {
			if len(req.Messages) != 1 || req.Prompt != nil || string(req.Logprobs) != "true" || req.TopLogprobs == nil || *req.TopLogprobs != 3 ||
				req.MaxTokens == nil || *req.MaxTokens != 80 {
				return fmt.Sprintf("chat request %+v", req)
			}
			return bearer(r)
		}},
		{APICompletions, "/v1/completions", []string{"-model", "suspect-1", "-top-logprobs", "3"}, true, func(r *http.Request, req apiRequest) string {
			if req.Prompt == nil || req.Messages != nil || string(req.Logprobs) != "3" || req.TopLogprobs != nil ||
				req.Model != "suspect-1" || req.MaxTokens == nil || *req.MaxTokens != 80 {
				return fmt.Sprintf("completions request %+v", req)
			}
			return bearer(r)
		}},
		{APIResponses, "/v1/responses", []string{"-model", "suspect-1", "-top-logprobs", "3"}, true, func(r *http.Request, req apiRequest) string {
			if len(req.Input) != 1 || req.Messages != nil || req.TopLogprobs == nil || *req.TopLogprobs != 3 ||
				strings.Join(req.Include, ",") != "message.output_text.logprobs" || req.MaxTokens != nil ||
				req.MaxOutputTokens == nil || *req.MaxOutputTokens != 80 || req.Model != "suspect-1" {
				return fmt.Sprintf("responses request %+v", req)
			}
			return bearer(r)
		}},
		{APIGemini, "/v1beta/models/suspect-1:generateContent", []string{"-top-logprobs", "3"}, true, func(r *http.Request, req apiRequest) string {
			gc := req.GenerationConfig
			if len(req.Contents) != 1 || req.Contents[0].Role != "user" || req.Model != "" || req.Messages != nil ||
				gc["responseLogprobs"] != true || gc["logprobs"] != float64(3) || gc["maxOutputTokens"] != float64(80) {
				return fmt.Sprintf("gemini request %+v", req)
			}
			if r.Header.Get("X-Goog-Api-Key") != "sk-api-9" || r.Header.Get("Authorization") != "" {
				return fmt.Sprintf("gemini key %q, Authorization %q", r.Header.Get("X-Goog-Api-Key"), r.Header.Get("Authorization"))
			}
			return ""
		}},
		{APIAnthropic, "/v1/messages", []string{"-model", "suspect-1"}, false, func(r *http.Request, req apiRequest) string {
			if len(req.Messages) != 1 || req.Model != "suspect-1" || req.MaxTokens == nil || *req.MaxTokens != 80 || req.System != nil || req.Logprobs != nil {
				return fmt.Sprintf("anthropic request %+v", req)
			}
			if r.Header.Get("X-Api-Key") != "sk-api-9" || r.Header.Get("Authorization") != "" || r.Header.Get("Anthropic-Version") != anthropicVersion {
				return fmt.Sprintf("anthropic headers %v", r.Header)
			}
			return ""
		}},
	}
}

// TestProbeAPIs probes a suspect of each API that serves marked answers
// (and one that serves them unmarked): each request has the API's shape
// and authentication, the answers are written as the suspect sent them in
// probe order whatever order they complete in, verify finds the key in
// the marked answers only, and the
// logprob test reads every position the suspect returned.
func TestProbeAPIs(t *testing.T) {
	t.Setenv("DG_PROBE_API_KEY", "sk-api-9")
	secret := bytes.Repeat([]byte{0x3c}, 32)
	key, err := NewKey("k1", secret)
	if err != nil {
		t.Fatal(err)
	}
	texts := suspectTexts(300, 21)
	mk := NewMarker(DefaultLexicon(), key)
	marked := make([]string, len(texts))
	for i, tx := range texts {
		out, _ := mk.Mark([]byte(tx))
		marked[i] = string(out)
	}
	for _, a := range probeAPIs() {
		for _, c := range []struct {
			name    string
			answers []string
			marked  bool
		}{{"marked", marked, true}, {"unmarked", texts, false}} {
			t.Run(a.api+"/"+c.name, func(t *testing.T) {
				alternatives := func(text string) [][]TokenLogprob {
					if !a.logprobs {
						return nil
					}
					return wordAlternatives(text)
				}
				var bad atomic.Value
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					var req apiRequest
					if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
						bad.CompareAndSwap(nil, fmt.Sprintf("decode: %v", err))
						http.Error(w, err.Error(), 400)
						return
					}
					if r.URL.Path != a.path {
						bad.CompareAndSwap(nil, "request to "+r.URL.Path)
					}
					if msg := a.check(r, req); msg != "" {
						bad.CompareAndSwap(nil, msg)
					}
					i, err := strconv.Atoi(strings.TrimPrefix(req.lastText(), "probe "))
					if err != nil || i < 0 || i >= len(c.answers) {
						bad.CompareAndSwap(nil, fmt.Sprintf("probe text %q", req.lastText()))
						http.Error(w, "unknown probe", 400)
						return
					}
					// Later probes answer sooner, so completion order is
					// not probe order.
					time.Sleep(time.Duration(len(c.answers)-i) * 10 * time.Microsecond)
					w.Write(answerIn(a.api, c.answers[i], alternatives(c.answers[i])))
				}))
				defer srv.Close()
				dir := t.TempDir()
				out := filepath.Join(dir, "answers.jsonl")
				var stdout, stderr bytes.Buffer
				rc := RunProbe(append([]string{"-api", a.api, "-url", srv.URL + a.path, "-prompts", writeProbes(t, dir, len(c.answers)),
					"-o", out, "-concurrency", "6", "-max-tokens", "80", "-api-key-env", "DG_PROBE_API_KEY",
					"-key-file", writeKeyFile(t, dir, key, secret)}, a.args...), &stdout, &stderr)
				if v := bad.Load(); v != nil {
					t.Fatal(v)
				}
				if rc != 0 {
					t.Fatalf("exit %d: %s", rc, stderr.String())
				}
				b, err := os.ReadFile(out)
				if err != nil {
					t.Fatal(err)
				}
				lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
				if len(lines) != len(c.answers) {
					t.Fatalf("%d answers written, want %d", len(lines), len(c.answers))
				}
				words := 0
				for i, l := range lines {
					var cb bytes.Buffer
					json.Compact(&cb, answerIn(a.api, c.answers[i], alternatives(c.answers[i])))
					if l != cb.String() {
						t.Fatalf("answer %d is not what the suspect sent for probe %d: %.100s", i, i, l)
					}
					words += len(strings.Fields(c.answers[i]))
				}
				dec := json.NewDecoder(&stdout)
				var rep TextReport
				if err := dec.Decode(&rep); err != nil {
					t.Fatalf("text report: %v", err)
				}
				if rep.Mode != "text" || rep.Texts != int64(len(c.answers)) || rep.Candidates == 0 {
					t.Errorf("text report %+v", rep)
				}
				if c.marked && rep.PValue > 1e-6 {
					t.Errorf("marked answers: p = %g, want <= 1e-6", rep.PValue)
				}
				if !c.marked && rep.PValue < 0.01 {
					t.Errorf("unmarked answers: p = %g, want >= 0.01", rep.PValue)
				}
				var lrep LogprobReport
				err = dec.Decode(&lrep)
				switch {
				case !a.logprobs:
					if err != io.EOF {
						t.Errorf("a logprob report without logprobs asked (%v)", err)
					}
				case err != nil:
					t.Fatalf("logprob report: %v", err)
				case lrep.Mode != "logprobs" || lrep.Probes != len(c.answers) || lrep.Positions != words:
					t.Errorf("logprob report: %d probes, %d positions; want %d, %d", lrep.Probes, lrep.Positions, len(c.answers), words)
				}
			})
		}
	}
}

// TestProbeAPIBodies: how a probe set's messages are carried by each API,
// and the probes an API cannot carry, refused before any request is sent.
func TestProbeAPIBodies(t *testing.T) {
	conv := `[{"role":"system","content":"be brief"},{"role":"developer","content":[{"type":"text","text":"no "},{"type":"text","text":"lists"}]},` +
		`{"role":"user","content":"hi"},{"role":"assistant","content":"hello"},{"role":"user","content":[{"type":"text","text":"probe 1"}]}]`
	for _, c := range []struct {
		api, probe string
		want       string // the request body, or the error's text
		err        bool
	}{
		{APIChat, conv, `{"messages":` + conv + `,"stream":false,"temperature":0.5}`, false},
		{APICompletions, `[{"role":"user","content":"probe 0"}]`, `{"prompt":"probe 0","stream":false,"temperature":0.5}`, false},
		{APICompletions, `[{"role":"user","content":[{"type":"text","text":"pro"},{"type":"text","text":"be"}]}]`, `{"prompt":"pro\nbe","stream":false,"temperature":0.5}`, false},
		{APICompletions, conv, "sends one prompt; this probe has 5 messages", true},
		{APICompletions, `[{"role":"system","content":"x"}]`, "sends one prompt", true},
		{APIGemini, conv, `{"contents":[{"role":"user","parts":[{"text":"hi"}]},{"role":"model","parts":[{"text":"hello"}]},{"role":"user","parts":[{"text":"probe 1"}]}],` +
			`"generationConfig":{"temperature":0.5},"systemInstruction":{"parts":[{"text":"be brief"},{"text":"no \nlists"}]}}`, false},
		{APIGemini, `[{"role":"system","content":"x"}]`, "no user or assistant message", true},
		{APIGemini, `[{"role":"tool","content":"x"}]`, `"tool" message has no Gemini form`, true},
		{APIGemini, `[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]`, `"image_url" part`, true},
		{APIChat, `[{"role":"user","content":"x"}]`, `{"messages":[{"role":"user","content":"x"}],"stream":false,"temperature":0.5}`, false},
		{APIGemini, `[{"role":"user","content":7}]`, "neither a string nor content parts", true},
		{APIResponses, conv, `{"input":[{"role":"system","content":"be brief"},{"role":"developer","content":[{"type":"input_text","text":"no "},{"type":"input_text","text":"lists"}]},` +
			`{"role":"user","content":"hi"},{"role":"assistant","content":"hello"},{"role":"user","content":[{"type":"input_text","text":"probe 1"}]}],"stream":false,"store":false,"temperature":0.5}`, false},
		{APIResponses, `[{"role":"assistant","content":[{"type":"text","text":"a"},{"type":"refusal","refusal":"r"}]},{"role":"user","content":[{"type":"input_image","image_url":"u"}]}]`,
			`{"input":[{"role":"assistant","content":[{"type":"output_text","text":"a"},{"type":"refusal","refusal":"r"}]},{"role":"user","content":[{"type":"input_image","image_url":"u"}]}],"stream":false,"store":false,"temperature":0.5}`, false},
		{APIAnthropic, conv, `{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"},{"role":"user","content":"probe 1"}],` +
			`"system":"be brief\n\nno \nlists","stream":false,"max_tokens":1024,"temperature":0.5}`, false},
		{APIAnthropic, `[{"role":"user","content":"x"}]`, `{"messages":[{"role":"user","content":"x"}],"stream":false,"max_tokens":1024,"temperature":0.5}`, false},
		{APIAnthropic, `[{"role":"system","content":"x"}]`, "no user or assistant message", true},
		{APIAnthropic, `[{"role":"tool","content":"x"}]`, `"tool" message has no Messages API form`, true},
	} {
		cfg := ProbeConfig{API: c.api, Temperature: 0.5}
		b, err := cfg.body(json.RawMessage(c.probe))
		if c.err {
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s %s: err = %v, want %q", c.api, c.probe, err, c.want)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s %s: %v", c.api, c.probe, err)
			continue
		}
		var got, want any
		json.Unmarshal(b, &got)
		if err := json.Unmarshal([]byte(c.want), &want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s %s:\n got %s\nwant %s", c.api, c.probe, b, c.want)
		}
	}

	// A probe the API cannot carry stops the run before the endpoint is
	// asked anything, and names the probe.
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.Write(answerIn(APICompletions, "x", nil))
	}))
	defer srv.Close()
	cfg := probeCfg(srv.URL)
	cfg.API = APICompletions
	probes := append(oneProbeSet(5), json.RawMessage(conv))
	_, err := Probe(context.Background(), cfg, probes)
	var pe *ProbeError
	if !errors.As(err, &pe) || pe.Index != 6 || pe.Status != 0 || n.Load() != 0 {
		t.Errorf("err = %v after %d requests, want probe 6 refused before any request", err, n.Load())
	}
}

// TestProbeRefusals: a Gemini answer without candidates (a blocked prompt
// answers 200 with promptFeedback) stops the run, naming the reason,
// without a retry; other APIs' answers with nothing to verify are refused
// with what they said; the configuration errors particular to an API are
// caught before anything is sent.
func TestProbeRefusals(t *testing.T) {
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		mu.Unlock()
		io.Copy(io.Discard, r.Body)
		w.Write([]byte(`{"promptFeedback":{"blockReason":"SAFETY"}}`))
	}))
	defer srv.Close()
	cfg := probeCfg(srv.URL + "/v1beta/models/m:generateContent")
	cfg.API, cfg.Concurrency = APIGemini, 1
	_, err := Probe(context.Background(), cfg, oneProbeSet(3))
	var pe *ProbeError
	if !errors.As(err, &pe) || pe.Index != 1 || pe.Status != 200 || !strings.Contains(err.Error(), "blocked (SAFETY)") || n != 1 {
		t.Errorf("err = %v after %d requests, want probe 1 refused once, naming SAFETY", err, n)
	}
	for _, c := range []struct {
		api, answer, want string
	}{
		{APIResponses, `{"object":"response","status":"failed","error":{"code":"server_error","message":"boom"},"output":[]}`, "the response failed"},
		{APIResponses, `{"object":"response","status":"completed","output":[]}`, "answer has no output"},
		{APIAnthropic, `{"type":"error","error":{"type":"invalid_request_error"}}`, "not a message with content"},
		{APIGemini, `[{"candidates":[]}]`, "not a JSON GenerateContentResponse"},
	} {
		bc := cfg
		bc.API = c.api
		if err := bc.checkAnswer([]byte(c.answer)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %s: err = %v, want %q", c.api, c.answer, err, c.want)
		}
	}
	for _, c := range []struct {
		cfg  func(*ProbeConfig)
		want string
	}{
		{func(c *ProbeConfig) { c.Model = "m" }, "a Gemini URL names the model"},
		{func(c *ProbeConfig) { c.URL = srv.URL + "/v1beta/models/m:streamGenerateContent" }, "want a Gemini .../models/MODEL:generateContent URL"},
		{func(c *ProbeConfig) { c.API = "claude" }, `-api "claude": want chat, completions, responses, gemini or anthropic`},
		{func(c *ProbeConfig) { c.API, c.TopLogprobs = APIAnthropic, 5 }, "the Messages API returns no logprobs"},
	} {
		bc := cfg
		c.cfg(&bc)
		if _, err := Probe(context.Background(), bc, oneProbeSet(1)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("err = %v, want %q", err, c.want)
		}
	}
	if n != 1 {
		t.Errorf("%d requests sent by refused configurations", n-1)
	}
}

// FuzzProbeBody: any probe the probe-set reader accepts becomes, for
// every API, a JSON request or a clear error; never a panic, and never a
// request that drops the probe's last turn.
func FuzzProbeBody(f *testing.F) {
	f.Add([]byte(`{"prompt":"probe 0"}`))
	f.Add([]byte(`{"messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"t"}]}]}`))
	f.Add([]byte(`{"messages":[{"role":"assistant","content":null}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		probes, err := ReadProbeMessages(bytes.NewReader(b))
		if err != nil {
			return
		}
		for _, api := range []string{APIChat, APICompletions, APIResponses, APIGemini, APIAnthropic} {
			cfg := ProbeConfig{API: api, Temperature: -1, TopLogprobs: 2}
			for _, p := range probes {
				body, err := cfg.body(p)
				if err != nil {
					if err.Error() == "" {
						t.Fatalf("%s: empty error", api)
					}
					continue
				}
				var req apiRequest
				if err := json.Unmarshal(body, &req); err != nil {
					t.Fatalf("%s: request %s is not JSON: %v", api, body, err)
				}
				if req.Prompt == nil && len(req.Contents) == 0 && len(req.Messages) == 0 && len(req.Input) == 0 {
					t.Fatalf("%s: request %s carries no turn", api, body)
				}
			}
		}
	})
}
