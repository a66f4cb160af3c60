package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/distillguard/distillguard/extproc/envoytest"
	"github.com/distillguard/distillguard/internal/tokens"
	"github.com/distillguard/distillguard/watermark"
)

// anthropicUpstream answers Messages requests by streaming the text its
// prompt names ("problem N") as text_delta events, as the Messages API
// streams (https://docs.anthropic.com/en/docs/build-with-claude/streaming).
type anthropicUpstream struct{ texts []string }

func (u anthropicUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	i, ok := problem(w, r, len(u.texts))
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	var b bytes.Buffer
	ev := func(typ, body string) { fmt.Fprintf(&b, "event: %s\ndata: {\"type\":%q%s}\n\n", typ, typ, body) }
	ev("message_start", `,"message":{"id":"msg","type":"message","role":"assistant","content":[],"model":"m","stop_reason":null,"usage":{"input_tokens":5,"output_tokens":1}}`)
	ev("content_block_start", `,"index":0,"content_block":{"type":"text","text":""}`)
	for _, tok := range tokens.Split(u.texts[i]) {
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
	texts := texts20(heldOut(t, 200))
	wmFile := writeWatermarkKey(t, t.TempDir(), "anthropic-e2e", 13)
	cfg := markedConfig(t, wmFile, "")
	key := cfg.Marks().Keys.Active()
	s := start(t, cfg, Options{})
	env := markingEnvoy(t, s, "203.0.113.10:40000")
	marker := watermark.NewMarker(watermark.DefaultLexicon(), key)
	v := watermark.NewVerifier(marker.Lexicon())
	marked, orig := v.NewSample(), v.NewSample()
	up := anthropicUpstream{texts: texts}
	for i, text := range texts {
		body := []byte(fmt.Sprintf(`{"model":"m","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"problem %d"}]}`, i))
		first := chunkings(t, env, i, 61, 700, func(c int) *envoytest.Exchange {
			return &envoytest.Exchange{
				Path: "/v1/messages", Body: body, Upstream: up,
				Header: http.Header{"Content-Type": {"application/json"}, "X-Api-Key": {fmt.Sprintf("sk-ant-e2e-%d-%d", i, c)}},
			}
		}, nil)
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
		sameText(t, i, out.String(), string(want))
		marked.Add([]byte(out.String()))
		orig.Add([]byte(text))
	}
	got, clean := marked.Score(key), orig.Score(key)
	t.Logf("marked p=%.3g (%d groups), originals p=%.3g", got.PValue, got.Scored, clean.PValue)
	if got.PValue > 1e-3 || clean.PValue < 1e-3 {
		t.Fatalf("verification: marked p=%g, originals p=%g", got.PValue, clean.PValue)
	}
}
