package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	procv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/distillguard/distillguard/extproc/envoytest"
	"github.com/distillguard/distillguard/watermark"
)

// anthropicUpstream answers Messages requests by streaming the text its
// prompt names ("problem N") as text_delta events, as the Messages API
// streams (https://docs.anthropic.com/en/docs/build-with-claude/streaming).
type anthropicUpstream struct{ texts []string }

func (u anthropicUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Messages []struct {
			Content string `json:"content"`
		} `json:"messages"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Messages) == 0 {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	i, err := strconv.Atoi(strings.TrimPrefix(req.Messages[0].Content, "problem "))
	if err != nil || i < 0 || i >= len(u.texts) {
		http.Error(w, "unknown problem", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	var b bytes.Buffer
	ev := func(typ, body string) { fmt.Fprintf(&b, "event: %s\ndata: {\"type\":%q%s}\n\n", typ, typ, body) }
	ev("message_start", `,"message":{"id":"msg","type":"message","role":"assistant","content":[],"model":"m","stop_reason":null,"usage":{"input_tokens":5,"output_tokens":1}}`)
	ev("content_block_start", `,"index":0,"content_block":{"type":"text","text":""}`)
	for _, tok := range tokens(u.texts[i]) {
		q, _ := json.Marshal(tok)
		ev("content_block_delta", `,"index":0,"delta":{"type":"text_delta","text":`+string(q)+`}`)
	}
	ev("content_block_stop", `,"index":0`)
	ev("message_delta", `,"delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9}`)
	ev("message_stop", "")
	_, _ = w.Write(b.Bytes())
}

// TestWatermarkAnthropicEndToEnd: on a route with output.watermark the
// text of an Anthropic Messages stream is marked through the assembled
// server, identically for every chunking, as the marker marks the whole
// text, and the verifier finds the key in it and not in the originals.
func TestWatermarkAnthropicEndToEnd(t *testing.T) {
	leakCheck(t)
	answers := heldOut(t, 200)
	var texts []string
	for i := 0; i < len(answers); i += 20 {
		texts = append(texts, strings.Join(answers[i:i+20], "\n\n"))
	}
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(2026, 13))
	secret := make([]byte, 32)
	for i := range secret {
		secret[i] = byte(r.Uint32())
	}
	wmFile := filepath.Join(dir, "wm.key")
	if err := os.WriteFile(wmFile, []byte(fmt.Sprintf("%x", secret)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := parse(t, fmt.Sprintf(`
watermark: {key_file: %q}
scoring: {secret: e2e-secret-e2e-secret-e2e-secret}
policies:
  marked:
    allow: {output: {watermark: true}}
    probation: null
routes:
  - path_prefix: /v1/
    policy: marked
`, wmFile))
	key := cfg.Marks().Keys.Active()
	s := start(t, cfg, Options{})
	env := envoytest.New(extprocv3.NewExternalProcessorClient(dial(t, s.GRPCAddr())), envoytest.Config{
		ProcessingMode: &procv3.ProcessingMode{
			RequestHeaderMode: procv3.ProcessingMode_SEND, ResponseHeaderMode: procv3.ProcessingMode_SEND,
			RequestBodyMode: procv3.ProcessingMode_BUFFERED, ResponseBodyMode: procv3.ProcessingMode_STREAMED,
			RequestTrailerMode: procv3.ProcessingMode_SKIP, ResponseTrailerMode: procv3.ProcessingMode_SKIP,
		},
		AllowModeOverride: true, SendProtocolConfig: true, RequestAttributes: true,
		SourceAddress: "203.0.113.10:40000", ReceivingNamespaces: []string{"distillguard"},
	})
	marker := watermark.NewMarker(watermark.DefaultLexicon(), key)
	v := watermark.NewVerifier(marker.Lexicon())
	marked, orig := v.NewSample(), v.NewSample()
	up := anthropicUpstream{texts: texts}
	for i, text := range texts {
		body := []byte(fmt.Sprintf(`{"model":"m","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"problem %d"}]}`, i))
		var first []byte
		for c := 0; c < 3; c++ {
			chunker := envoytest.Whole()
			if c > 0 {
				chunker = envoytest.Random(uint64(i*10+c), 61+700*(c-1), c == 2)
			}
			res, err := env.Do(context.Background(), &envoytest.Exchange{
				Path: "/v1/messages", Body: body, Upstream: up, ResponseChunker: chunker,
				Header: http.Header{"Content-Type": {"application/json"}, "X-Api-Key": {fmt.Sprintf("sk-ant-e2e-%d-%d", i, c)}},
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Violations) > 0 || res.Status != 200 {
				t.Fatalf("text %d chunking %d: status %d, violations %v", i, c, res.Status, res.Violations)
			}
			if c == 0 {
				first = res.Body
			} else if !bytes.Equal(res.Body, first) {
				t.Fatalf("text %d: chunking %d changed the output", i, c)
			}
		}
		var out strings.Builder
		for _, line := range bytes.Split(first, []byte("\n")) {
			p, ok := bytes.CutPrefix(line, []byte("data: "))
			if !ok {
				continue
			}
			var e struct {
				Type  string `json:"type"`
				Delta struct {
					Text *string `json:"text"`
				} `json:"delta"`
			}
			if err := json.Unmarshal(p, &e); err != nil {
				t.Fatalf("event %s: %v", p, err)
			}
			if e.Type == "content_block_delta" && e.Delta.Text != nil {
				out.WriteString(*e.Delta.Text)
			}
		}
		want, _ := marker.Mark([]byte(text))
		if got := out.String(); got != string(want) {
			k := 0
			for k < len(got) && k < len(want) && got[k] == want[k] {
				k++
			}
			t.Fatalf("text %d: the client got\n%q\nthe marker makes\n%q", i, got[max(0, k-80):min(len(got), k+80)], want[max(0, k-80):min(len(want), k+80)])
		}
		marked.Add([]byte(out.String()))
		orig.Add([]byte(text))
	}
	got, clean := marked.Score(key), orig.Score(key)
	t.Logf("marked p=%.3g (%d groups), originals p=%.3g", got.PValue, got.Scored, clean.PValue)
	if got.PValue > 1e-3 || clean.PValue < 1e-3 {
		t.Fatalf("verification: marked p=%g, originals p=%g", got.PValue, clean.PValue)
	}
}
