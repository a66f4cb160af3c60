package extproc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	procv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/extproc/envoytest"
	"github.com/distillguard/distillguard/scoring"
)

// responseBodyMessages counts the response body messages Envoy sent.
func responseBodyMessages(res *envoytest.Result) int {
	n := 0
	for _, m := range res.Sent {
		if m.GetResponseBody() != nil {
			n++
		}
	}
	return n
}

// TestSkipBodyWhenUnchangeable: a stream whose policy cannot change it (no
// logprobs asked, a format that sends none unasked) is answered at its
// headers with mode_override NONE, so Envoy sends no per-token message and
// the client gets the upstream's bytes; one that asks, or whose format
// sends logprobs unasked (Gemini's avgLogprobs, TGI's streamed tokens), is
// read chunk by chunk. Without allow_mode_override the body comes, is
// passed unchanged, and nothing breaks.
func TestSkipBodyWhenUnchangeable(t *testing.T) {
	requireRealMutate(t)
	cfg := formatsConfig(t)
	h := newHarness(t, cfg, verdictScorer(scoring.Allow))
	ctx := context.Background()
	g := envoytest.NewGen(5)
	chat := envoytest.Join(g.ChatStream(envoytest.Options{Tokens: 12}))
	chatLP := envoytest.Join(g.ChatStream(envoytest.Options{Tokens: 12, Logprobs: true, TopLogprobs: 3}))
	anthropic := readFixture(t, "anthropic_messages_stream.sse")
	ollama := readFixture(t, "ollama_generate_stream.ndjson")
	gemini := readFixture(t, "gemini_stream.sse")
	tgi := readFixture(t, "tgi_generate_stream.sse")
	cases := []struct {
		name, path, req, ct string
		body                []byte
		skip                bool
	}{
		{"chat without logprobs", "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}`, "text/event-stream", chat, true},
		{"chat with logprobs", "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"logprobs":true,"top_logprobs":3}`, "text/event-stream", chatLP, false},
		{"anthropic", "/v1/messages", `{"model":"c","max_tokens":8,"messages":[{"role":"user","content":"hi"}],"stream":true}`, "text/event-stream", anthropic, true},
		{"ollama without logprobs", "/api/generate", `{"model":"m","prompt":"hi"}`, "application/x-ndjson", ollama, true},
		{"ollama with logprobs", "/api/generate", `{"model":"m","prompt":"hi","logprobs":true}`, "application/x-ndjson", ollama, false},
		{"gemini sends avgLogprobs unasked", "/v1beta/models/g:streamGenerateContent", `{"contents":[]}`, "text/event-stream", gemini, false},
		{"tgi streams logprobs unasked", "/generate_stream", `{"inputs":"hi"}`, "text/event-stream", tgi, false},
	}
	for _, tc := range cases {
		for _, allow := range []bool{true, false} {
			ec := envoyConfig(mBuffered, mStreamed)
			ec.AllowModeOverride = allow
			res, err := envoytest.New(h.client, ec).Do(ctx, &envoytest.Exchange{
				Path: tc.path, Body: []byte(tc.req), ResponseChunker: envoytest.Random(9, 40, false),
				Header:   http.Header{"Authorization": {"Bearer k"}, "Content-Type": {"application/json"}},
				Upstream: fixedUpstream(200, http.Header{"Content-Type": {tc.ct}}, tc.body),
			})
			if err != nil {
				t.Fatal(err)
			}
			noViolations(t, res)
			n := responseBodyMessages(res)
			switch {
			case tc.skip && allow:
				if n != 0 || res.ResponseMode != procv3.ProcessingMode_NONE || res.ModeOverrides != 1 {
					t.Errorf("%s: %d response body messages, mode %v, %d overrides; want 0, NONE, 1", tc.name, n, res.ResponseMode, res.ModeOverrides)
				}
				if !bytes.Equal(res.Body, tc.body) {
					t.Errorf("%s: body changed", tc.name)
				}
			case tc.skip:
				if n == 0 || !bytes.Equal(res.Body, tc.body) {
					t.Errorf("%s without allow_mode_override: %d body messages, body unchanged %v", tc.name, n, bytes.Equal(res.Body, tc.body))
				}
			default:
				if n == 0 || res.ResponseMode != procv3.ProcessingMode_STREAMED {
					t.Errorf("%s (allow %v): %d response body messages in mode %v; the body must be read", tc.name, allow, n, res.ResponseMode)
				}
			}
		}
	}
}

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	for _, c := range formatCases() {
		if c.fixture == name {
			b, err := readFormatFixture(name)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
	t.Fatalf("no fixture %s", name)
	return nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestUnchangedEventsNoMutation: where the body is rewritten (logprobs
// asked), a chunk whose events all come out unchanged (these carry none)
// is answered without a body_mutation, so Envoy forwards its own buffer;
// passed at the headers without allow_mode_override, likewise.
func TestUnchangedEventsNoMutation(t *testing.T) {
	requireRealMutate(t)
	h := newHarness(t, formatsConfig(t), verdictScorer(scoring.Allow))
	events := envoytest.NewGen(8).ChatStream(envoytest.Options{Tokens: 10})
	var cuts []int
	off := 0
	for _, e := range events[:len(events)-1] {
		off += len(e)
		cuts = append(cuts, off)
	}
	body := envoytest.Join(events)
	for _, req := range []string{
		`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"logprobs":true}`,
		`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}`,
	} {
		unchangedEvents(t, h, req, body, cuts, len(events))
	}
}

func unchangedEvents(t *testing.T, h *harness, req string, body []byte, cuts []int, events int) {
	t.Helper()
	ec := envoyConfig(mBuffered, mStreamed)
	ec.AllowModeOverride = false
	res, err := envoytest.New(h.client, ec).Do(context.Background(), &envoytest.Exchange{
		Path: "/v1/chat/completions", Body: []byte(req),
		Header:          http.Header{"Authorization": {"Bearer k"}, "Content-Type": {"application/json"}},
		ResponseChunker: envoytest.At(cuts...),
		Upstream:        fixedUpstream(200, http.Header{"Content-Type": {"text/event-stream"}}, body),
	})
	if err != nil {
		t.Fatal(err)
	}
	noViolations(t, res)
	if !bytes.Equal(res.Body, body) {
		t.Fatal("body changed")
	}
	replies, mutations := 0, 0
	for _, r := range res.Received {
		if rb := r.GetResponseBody(); rb != nil {
			replies++
			if rb.GetResponse().GetBodyMutation() != nil {
				mutations++
			}
		}
	}
	if replies != events || mutations != 0 {
		t.Errorf("%s: %d body replies (want %d), %d with a body mutation (want 0)", req, replies, events, mutations)
	}
}

// TestWatermarkReadsQuietResponses: on a tier with output.watermark the
// response text changes whether or not the request asked for logprobs, so
// a quiet chat or Anthropic stream is read chunk by chunk and marked, not
// skipped at its headers.
func TestWatermarkReadsQuietResponses(t *testing.T) {
	requireRealMutate(t)
	key := filepath.Join(t.TempDir(), "wm.key")
	if err := os.WriteFile(key, bytes.Repeat([]byte("7b"), 32), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte("watermark: {key_file: " + key + "}\npolicies:\n  default:\n    allow: {output: {watermark: true}}\n    probation: null\n"))
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, cfg, verdictScorer(scoring.Allow))
	// Words of the lexicon's synonym sets, many of them: some are marked
	// whatever the key.
	const text = "The big dog bought a huge car, and the children said it is quick. However, the large house seemed small to them; " +
		"they wanted a bigger one. Owners often begin to purchase fast cars because they are rich. Therefore the kids started to build a simple, easy plan and finally finished it."
	var chat, anth bytes.Buffer
	anth.WriteString("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n")
	for _, w := range strings.SplitAfter(text, " ") {
		q, _ := json.Marshal(w)
		fmt.Fprintf(&chat, "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":%s},\"finish_reason\":null}]}\n\n", q)
		fmt.Fprintf(&anth, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":%s}}\n\n", q)
	}
	chat.WriteString("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n")
	anth.WriteString("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n")
	for _, tc := range []struct {
		name, path, req string
		body            []byte
	}{
		{"chat without logprobs", "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}`, chat.Bytes()},
		{"anthropic", "/v1/messages", `{"model":"c","max_tokens":8,"messages":[{"role":"user","content":"hi"}],"stream":true}`, anth.Bytes()},
	} {
		ec := envoyConfig(mBuffered, mStreamed)
		ec.AllowModeOverride = true
		res, err := envoytest.New(h.client, ec).Do(context.Background(), &envoytest.Exchange{
			Path: tc.path, Body: []byte(tc.req), ResponseChunker: envoytest.Random(3, 50, false),
			Header:   http.Header{"Authorization": {"Bearer k"}, "Content-Type": {"application/json"}},
			Upstream: fixedUpstream(200, http.Header{"Content-Type": {"text/event-stream"}}, tc.body),
		})
		if err != nil {
			t.Fatal(err)
		}
		noViolations(t, res)
		if n := responseBodyMessages(res); n == 0 || res.ResponseMode != procv3.ProcessingMode_STREAMED {
			t.Errorf("%s: %d response body messages in mode %v; a marked response must be read", tc.name, n, res.ResponseMode)
		}
		if bytes.Equal(res.Body, tc.body) {
			t.Errorf("%s: the text came out unmarked", tc.name)
		}
	}
}
