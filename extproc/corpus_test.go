package extproc

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/extproc/envoytest"
	"github.com/distillguard/distillguard/internal/corpus/corpustest"
	"github.com/distillguard/distillguard/scoring"
)

func readJSONL(t *testing.T, path string, limit int, each func(line []byte)) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 0; n < limit && sc.Scan(); n++ {
		each(sc.Bytes())
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
}

// TestCorpusRequests sends real prompts (multi-turn dialogs, math questions
// as legacy completions, instructions) with logprobs and logit_bias: the
// scorer sees the newest user turn, capped, and the upstream gets every
// field but logit_bias unchanged, with top_logprobs capped.
func TestCorpusRequests(t *testing.T) {
	dir := corpustest.Require(t)
	requireRealMutate(t)
	sc := verdictScorer(scoring.Allow)
	cfg := testConfig(func(p *config.Processing) { p.MaxPromptBytes = 64 })
	h := newHarness(t, cfg, sc)
	env := envoytest.New(h.client, envoyConfig(mBuffered, mStreamed))
	up := &envoytest.Upstream{Seed: 3, MaxTokens: 2}

	type sample struct {
		path, last string
		messages   int
		body       map[string]any
	}
	var samples []sample
	readJSONL(t, filepath.Join(dir, "hh_rlhf_dialogs.jsonl"), 30, func(line []byte) {
		var d struct{ Turns []string }
		if json.Unmarshal(line, &d) != nil || len(d.Turns) == 0 {
			return
		}
		var msgs []any
		for i, turn := range d.Turns {
			if i > 0 {
				msgs = append(msgs, map[string]any{"role": "assistant", "content": "I see."})
			}
			msgs = append(msgs, map[string]any{"role": "user", "content": turn})
		}
		samples = append(samples, sample{"/v1/chat/completions", d.Turns[len(d.Turns)-1], len(msgs), map[string]any{
			"model": "m", "messages": msgs, "logprobs": true, "top_logprobs": 20, "logit_bias": map[string]int{"50256": -100}}})
	})
	readJSONL(t, filepath.Join(dir, "gsm8k_test.jsonl"), 30, func(line []byte) {
		var q struct{ Question string }
		if json.Unmarshal(line, &q) != nil || q.Question == "" {
			return
		}
		samples = append(samples, sample{"/v1/completions", q.Question, 1, map[string]any{
			"model": "m", "prompt": q.Question, "logprobs": 5, "logit_bias": map[string]int{"198": 5}}})
	})
	readJSONL(t, filepath.Join(dir, "selfinstruct_seed_tasks.jsonl"), 30, func(line []byte) {
		var s struct{ Instruction, Input string }
		if json.Unmarshal(line, &s) != nil || s.Instruction == "" {
			return
		}
		text := strings.TrimSpace(s.Instruction + "\n" + s.Input)
		samples = append(samples, sample{"/v1/chat/completions", text, 2, map[string]any{
			"model": "m", "messages": []any{map[string]any{"role": "system", "content": "Be brief."}, map[string]any{"role": "user", "content": text}},
			"logprobs": true, "top_logprobs": 9, "logit_bias": map[string]int{"11": 3}}})
	})
	if len(samples) < 60 {
		t.Fatalf("only %d corpus samples", len(samples))
	}
	for i, s := range samples {
		body, _ := json.Marshal(s.body)
		res, err := env.Do(context.Background(), &envoytest.Exchange{
			Path: s.path, Body: body, Header: http.Header{"Content-Type": {"application/json"}}, Upstream: up,
		})
		if err != nil {
			t.Fatal(err)
		}
		noViolations(t, res)
		if res.Status != 200 {
			t.Fatalf("sample %d: status %d", i, res.Status)
		}
		c := sc.Calls()[i]
		if !strings.HasPrefix(s.last, c.Prompt) || len(c.Prompt) > cfg.Processing.MaxPromptBytes || c.Prompt == "" {
			t.Errorf("sample %d: prompt %q, newest turn %q", i, c.Prompt, s.last)
		}
		if c.Messages != s.messages {
			t.Errorf("sample %d: %d messages, want %d", i, c.Messages, s.messages)
		}
		var got map[string]any
		if err := json.Unmarshal(res.Upstream.Body, &got); err != nil {
			t.Fatalf("sample %d: upstream body: %v", i, err)
		}
		if _, ok := got["logit_bias"]; ok {
			t.Errorf("sample %d: logit_bias reached the upstream", i)
		}
		want := map[string]any{}
		json.Unmarshal(body, &want)
		delete(want, "logit_bias")
		if v, ok := want["top_logprobs"].(float64); ok && v > 5 {
			want["top_logprobs"] = float64(5)
		}
		wb, _ := json.Marshal(want)
		gb, _ := json.Marshal(got)
		if string(wb) != string(gb) {
			t.Errorf("sample %d: upstream body\n got %s\nwant %s", i, gb, wb)
		}
	}
}
