package extproc

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	procv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"go.opentelemetry.io/otel/attribute"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/extproc/envoytest"
	"github.com/distillguard/distillguard/scoring"
)

// unguardedConfig is the default with a route whose policy set acts on
// nothing (no request policy, no reject, the same output everywhere): its
// request bodies are read only for scoring.
func unguardedConfig(t testing.TB) *config.Config {
	c, err := config.Parse([]byte(`
policies:
  open:
    allow: {output: {round_decimals: 2, max_alternatives: 5}, request: {max_top_logprobs: null, drop_logit_bias_with_logprobs: false}}
    degrade: {output: {round_decimals: 2, max_alternatives: 5, perturb: 0, embedding_decimals: null, watermark: false}, request: {max_top_logprobs: null, max_n: 0, drop_logit_bias: false}}
    throttle: {reject: null, output: {round_decimals: 2, max_alternatives: 5}}
    block: {reject: null, output: {round_decimals: 2, max_alternatives: 5}}
    probation: null
routes:
  - path_prefix: /open/
    policy: open
`))
	if err != nil {
		t.Fatal(err)
	}
	if v := c.View("/open/v1/chat/completions"); v.Guarded {
		t.Fatal("the open route is guarded")
	}
	return c
}

// TestBadRequestBodies: on a guarded route (the default) a request body
// that is not understood never reaches the upstream: it is answered with
// an OpenAI-style 400 or 415 that names the problem. On an unguarded route
// it passes byte for byte, counted, and the request is still scored.
func TestBadRequestBodies(t *testing.T) {
	cases := []struct {
		name        string
		body        []byte
		contentType string
		encoding    string
		status      int    // guarded
		msg         string // guarded: part of the error message
		reason      string // unguarded pass-through
	}{
		{"truncated-json", []byte(`{"model":"x","messages":[{"role":"user","content":"hi"`), "application/json", "", 400, "request body:", reasonBadRequestJSON},
		{"not-an-object", []byte(`["model","x"]`), "application/json", "", 400, "must be a JSON object", reasonBadRequestJSON},
		{"form", []byte(`model=x&prompt=hello`), "application/x-www-form-urlencoded", "", 415, "content-type", reasonBadRequestJSON},
		{"encoded", []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0}, "application/json", "gzip", 400, "does not decode", reasonRequestEncoded},
		{"unknown-encoding", []byte(`{"model":"x"}`), "application/json", "identity, foo", 415, "content-encoding", reasonRequestEncoded},
	}
	for _, tc := range cases {
		for _, m := range []procv3.ProcessingMode_BodySendMode{mBuffered, mStreamed, mDuplex} {
			for _, guarded := range []bool{true, false} {
				name := tc.name + "/" + m.String()
				if !guarded {
					name += "/unguarded"
				}
				t.Run(name, func(t *testing.T) {
					sc := verdictScorer(scoring.Allow)
					cfg := testConfig(nil)
					path := "/v1/chat/completions"
					if !guarded {
						cfg, path = unguardedConfig(t), "/open/v1/chat/completions"
					}
					h := newHarness(t, cfg, sc)
					hdr := http.Header{"Content-Type": {tc.contentType}}
					if tc.encoding != "" {
						hdr.Set("Content-Encoding", tc.encoding)
					}
					res, err := envoytest.New(h.client, envoyConfig(m, mStreamed)).Do(context.Background(), &envoytest.Exchange{
						Path: path, Body: tc.body, Header: hdr, RequestChunker: envoytest.Fixed(5),
						Upstream: fixedUpstream(400, http.Header{"Content-Type": {"application/json"}}, []byte(`{"error":{}}`)),
					})
					if err != nil {
						t.Fatal(err)
					}
					noViolations(t, res)
					if guarded {
						if res.Upstream != nil && len(res.Upstream.Body) > 0 {
							t.Errorf("upstream got %q", res.Upstream.Body)
						}
						if res.Status != tc.status || !bytes.Contains(res.Body, []byte(tc.msg)) || res.Header.Get("Content-Type") != "application/json" {
							t.Errorf("client got %d %s %q, want %d naming %q", res.Status, res.Header.Get("Content-Type"), res.Body, tc.status, tc.msg)
						}
						var e apiError
						if err := json.Unmarshal(res.Body, &e); err != nil || e.Error.Message == "" || e.Error.Type != "invalid_request_error" || e.Error.Code == nil {
							t.Errorf("not an OpenAI-style error: %s (%v)", res.Body, err)
						}
						if len(sc.Calls()) != 0 {
							t.Errorf("a refused request was scored")
						}
						return
					}
					if !bytes.Equal(res.Upstream.Body, tc.body) {
						t.Errorf("upstream got %q, want %q", res.Upstream.Body, tc.body)
					}
					if res.Status != 400 || string(res.Body) != `{"error":{}}` {
						t.Errorf("client got %d %q", res.Status, res.Body)
					}
					if n := h.passthroughs(t, tc.reason); n != 1 {
						t.Errorf("passthroughs{%s} = %d, want 1", tc.reason, n)
					}
					if len(sc.Calls()) != 1 {
						t.Errorf("scored %d times", len(sc.Calls()))
					}
				})
			}
		}
	}
}

// TestInvalidUTF8: a request body with invalid UTF-8 is refused on a
// guarded route (Python's json.loads fails on it too, or decodes encoded
// surrogates distillguard does not); invalid UTF-8 inside a streamed
// response neither crashes nor corrupts, and the policy still applies to
// the parts it understands.
func TestInvalidUTF8(t *testing.T) {
	bad := []byte("{\"model\":\"m\xff\",\"messages\":[{\"role\":\"user\",\"content\":\"\xc3\x28 caf\xe9\"}],\"logprobs\":true,\"top_logprobs\":9,\"logit_bias\":{\"5\":1}}")
	{
		h := newHarness(t, testConfig(nil), verdictScorer(scoring.Allow))
		res, err := envoytest.New(h.client, envoyConfig(mBuffered, mStreamed)).Do(context.Background(), &envoytest.Exchange{
			Body: bad, Header: http.Header{"Content-Type": {"application/json"}}, Upstream: &envoytest.Upstream{},
		})
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != 400 || res.Upstream != nil || !bytes.Contains(res.Body, []byte("invalid UTF-8 at byte 11")) {
			t.Fatalf("invalid UTF-8 request: %d %q, upstream reached: %v", res.Status, res.Body, res.Upstream != nil)
		}
	}
	body := []byte("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"caf\xc3\xa9\"}],\"logprobs\":true,\"top_logprobs\":9,\"logit_bias\":{\"5\":1}}")
	stream := []byte("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\xff\xfe\"},\"logprobs\":{\"content\":[{\"token\":\"\xff\",\"logprob\":-0.123456,\"bytes\":[255],\"top_logprobs\":[]}]}}]}\n\ndata: [DONE]\n\n")
	h := newHarness(t, testConfig(nil), verdictScorer(scoring.Allow))
	res, err := envoytest.New(h.client, envoyConfig(mBuffered, mStreamed)).Do(context.Background(), &envoytest.Exchange{
		Body: body, Header: http.Header{"Content-Type": {"application/json"}},
		ResponseChunker: envoytest.Fixed(7),
		Upstream:        fixedUpstream(200, sseHeader(), stream),
	})
	if err != nil {
		t.Fatal(err)
	}
	noViolations(t, res)
	if res.Status != 200 {
		t.Fatalf("status %d", res.Status)
	}
	if !bytes.Contains(res.Upstream.Body, []byte("caf\xc3\xa9")) || bytes.Contains(res.Upstream.Body, []byte("logit_bias")) {
		t.Errorf("prompt bytes changed or logit_bias kept: %q", res.Upstream.Body)
	}
	if !bytes.Contains(res.Body, []byte("\xff\xfe")) || !bytes.HasSuffix(res.Body, []byte("data: [DONE]\n\n")) {
		t.Errorf("stream bytes changed: %q", res.Body)
	}
	if realMutate() && !bytes.Contains(res.Body, []byte(`"logprob":-0.12`)) {
		t.Errorf("logprob not rounded: %q", res.Body)
	}
}

// TestUntouchedResponses: responses that must not be rewritten pass byte
// for byte, counted by reason.
func TestUntouchedResponses(t *testing.T) {
	g := envoytest.NewGen(8)
	js := g.ChatCompletion(envoytest.Options{Logprobs: true, TopLogprobs: 9})
	cases := []struct {
		name   string
		status int
		header http.Header
		reason string
	}{
		{"text-plain", 200, http.Header{"Content-Type": {"text/plain"}}, reasonUnknownContentType},
		{"no-content-type", 200, http.Header{"Content-Type": {"application/octet-stream"}}, reasonUnknownContentType},
		// An encoding the policy cannot read it in passes only where the
		// route says on_oversize: pass (TestUndecodableResponseRefused).
		{"brotli-pass", 200, http.Header{"Content-Type": {"application/json"}, "Content-Encoding": {"br"}}, reasonUnknownEncoding},
		{"server-error", 500, http.Header{"Content-Type": {"application/json"}}, reasonNon2xx},
	}
	for _, tc := range cases {
		for _, m := range []procv3.ProcessingMode_BodySendMode{mStreamed, mBuffered, mDuplex} {
			t.Run(tc.name+"/"+m.String(), func(t *testing.T) {
				cfg := testConfig(nil)
				if strings.HasSuffix(tc.name, "-pass") {
					cfg = passConfig(t, nil)
				}
				h := newHarness(t, cfg, verdictScorer(scoring.Allow))
				hdr := tc.header.Clone()
				hdr.Set("Content-Length", strconv.Itoa(len(js)))
				ec := envoyConfig(mBuffered, m)
				ec.AllowContentLengthHeader = true
				res, err := envoytest.New(h.client, ec).Do(context.Background(), &envoytest.Exchange{
					Body: chatBody, ResponseChunker: envoytest.Fixed(64),
					Upstream: fixedUpstream(tc.status, hdr, js),
				})
				if err != nil {
					t.Fatal(err)
				}
				noViolations(t, res)
				if res.Status != tc.status || !bytes.Equal(res.Body, js) {
					t.Fatalf("got %d, body changed: %v", res.Status, !bytes.Equal(res.Body, js))
				}
				if res.Header.Get("Content-Length") != strconv.Itoa(len(js)) {
					t.Errorf("content-length %q", res.Header.Get("Content-Length"))
				}
				// Untouched at its headers, the body is not asked for
				// (mode_override NONE), except around FULL_DUPLEX_STREAMED
				// where Envoy takes no override.
				if wantOv := b2i(m != mDuplex); res.ModeOverrides != wantOv || m != mDuplex && res.ResponseMode != mNone {
					t.Errorf("%d mode overrides, response mode %v for an untouched response; want %d (NONE)", res.ModeOverrides, res.ResponseMode, wantOv)
				}
				if n := h.passthroughs(t, tc.reason); n != 1 {
					t.Errorf("passthroughs{%s} = %d, want 1", tc.reason, n)
				}
			})
		}
	}
}

// passConfig is the default with every route set to on_oversize: pass
// (the documented fail-open choice), processing changed by mod.
func passConfig(t testing.TB, mod func(p *config.Processing)) *config.Config {
	c, err := config.Parse([]byte("routes:\n  - policy: default\n    on_oversize: pass\n"))
	if err != nil {
		t.Fatal(err)
	}
	if mod != nil {
		mod(&c.Processing)
	}
	return c
}

// TestSSEWithoutEventEnd: an event that never ends is held up to
// max_held_bytes, then dropped (a comment in its place) and skipped to
// the end of the stream in bounded memory, counted; with on_oversize:
// pass its bytes go on raw instead.
func TestSSEWithoutEventEnd(t *testing.T) {
	body := append([]byte(`data: {"choices":[{"logprobs":{"content":[{"token":"`), bytes.Repeat([]byte("x"), 300<<10)...)
	for _, pass := range []bool{false, true} {
		for _, m := range []procv3.ProcessingMode_BodySendMode{mStreamed, mDuplex, mBuffered} {
			t.Run(fmt.Sprintf("%v/pass=%v", m, pass), func(t *testing.T) {
				mod := func(p *config.Processing) { p.MaxHeldBytes = 64 << 10 }
				cfg := testConfig(mod)
				if pass {
					cfg = passConfig(t, mod)
				}
				h := newHarness(t, cfg, verdictScorer(scoring.Allow))
				ec := envoyConfig(mBuffered, m)
				ec.AllowModeOverride = false
				res, err := envoytest.New(h.client, ec).Do(context.Background(), &envoytest.Exchange{
					Body: chatBody, ResponseChunker: envoytest.Fixed(8 << 10),
					Upstream: fixedUpstream(200, sseHeader(), body),
				})
				if err != nil {
					t.Fatal(err)
				}
				noViolations(t, res)
				switch {
				case pass:
					if !bytes.Equal(res.Body, body) {
						t.Fatalf("body changed (%d bytes out, %d in)", len(res.Body), len(body))
					}
				case m == mBuffered:
					// A whole body is never held; its unterminated event
					// carries logprobs and does not parse: dropped.
					if !bytes.HasPrefix(res.Body, []byte(": distillguard dropped an event it could not read")) {
						t.Fatalf("unreadable event not dropped: %.80q", res.Body)
					}
				case !bytes.HasPrefix(res.Body, []byte(": distillguard dropped an event")) || len(res.Body) > 200:
					t.Fatalf("oversized event not dropped: %d bytes %.80q", len(res.Body), res.Body)
				}
				if m != mBuffered {
					if n := h.passthroughs(t, reasonSSEEventOversize); n != 1 {
						t.Errorf("passthroughs{sse_event_oversize} = %d, want 1", n)
					}
				}
			})
		}
	}
}

// TestSSEOversizeEventKeepsRewriting: an event over max_held_bytes (an
// upstream's prompt_logprobs for a long prompt) costs that event only:
// every event after it is still rewritten, in every streamed mode.
func TestSSEOversizeEventKeepsRewriting(t *testing.T) {
	g := envoytest.NewGen(44)
	events := g.ChatStream(envoytest.Options{Tokens: 6, Logprobs: true, TopLogprobs: 8})
	big := []byte(`data: {"prompt_logprobs":[` + strings.Repeat(`{"1":{"logprob":-0.123456789,"rank":1}},`, 4000) + `null]}` + "\n\n")
	stream := append(append(append([]byte(nil), events[0]...), big...), envoytest.Join(events[1:])...)
	for _, m := range []procv3.ProcessingMode_BodySendMode{mStreamed, mDuplex} {
		t.Run(m.String(), func(t *testing.T) {
			h := newHarness(t, testConfig(func(p *config.Processing) { p.MaxHeldBytes = 32 << 10 }), verdictScorer(scoring.Allow))
			ec := envoyConfig(mBuffered, m)
			res, err := envoytest.New(h.client, ec).Do(context.Background(), &envoytest.Exchange{
				Body: chatBody, ResponseChunker: envoytest.Fixed(4 << 10),
				Upstream: fixedUpstream(200, sseHeader(), stream),
			})
			if err != nil {
				t.Fatal(err)
			}
			noViolations(t, res)
			if bytes.Contains(res.Body, []byte("-0.123456789")) {
				t.Fatal("the oversized event passed raw")
			}
			out := sseEvents(res.Body)
			if len(out) != len(events)+1 {
				t.Fatalf("%d events out, want %d", len(out), len(events)+1)
			}
			rewritten := 0
			for i, ev := range events[1:] {
				if !bytes.Equal(out[i+2], ev) {
					rewritten++
				}
				if bytes.Contains(out[i+2], []byte(`"top_logprobs":[`)) && bytes.Count(out[i+2], []byte(`"logprob"`)) > 1+5+1 {
					t.Errorf("event %d after the oversized one keeps more than 5 alternatives", i+1)
				}
			}
			if rewritten == 0 {
				t.Fatal("no event after the oversized one was rewritten")
			}
		})
	}
}

// TestLargeBodyBoundedMemory feeds 100 MiB through the state machine in
// 256 KiB chunks (a JSON response under STREAMED, and a request under
// STREAMED) on a route that lets oversized bodies pass (on_oversize:
// pass): the server holds at most max_body_bytes, then passes every byte
// through unchanged, counted. TestOversizeFailsClosed covers the default.
func TestLargeBodyBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("100 MiB body")
	}
	const total, chunk, limit = 100 << 20, 256 << 10, 1 << 20
	cfg := passConfig(t, func(p *config.Processing) { p.MaxBodyBytes, p.MaxHeldBytes, p.ModeOverride = limit, 64<<10, false })
	for _, side := range []string{"response", "request"} {
		t.Run(side, func(t *testing.T) {
			h := newHarness(t, cfg, verdictScorer(scoring.Allow))
			st := h.srv.newStream(context.Background())
			defer st.release()
			pc := &extprocv3.ProtocolConfiguration{RequestBodyMode: mStreamed, ResponseBodyMode: mStreamed}
			hdrs := func(kv ...string) *corev3.HeaderMap {
				m := &corev3.HeaderMap{}
				for i := 0; i < len(kv); i += 2 {
					m.Headers = append(m.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
				}
				return m
			}
			request := side == "request"
			first := &extprocv3.ProcessingRequest{ProtocolConfig: pc, Request: &extprocv3.ProcessingRequest_RequestHeaders{
				RequestHeaders: &extprocv3.HttpHeaders{Headers: hdrs(":path", "/v1/chat/completions", ":method", "POST", "authorization", "Bearer t"), EndOfStream: !request}}}
			if got := st.handle(first); len(got) != 1 {
				t.Fatalf("%d replies to request headers", len(got))
			}
			if !request {
				st.handle(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
					ResponseHeaders: &extprocv3.HttpHeaders{Headers: hdrs(":status", "200", "content-type", "application/json")}}})
			}
			pattern := bytes.Repeat([]byte("abcdefghijklmnopqrstuvwxyz"), chunk/26+2)
			in, out := sha256.New(), sha256.New()
			var held []byte // bytes the server asked Envoy to hold back
			maxHeld := 0
			for i := 0; i < total/chunk; i++ {
				buf := pattern[i%26 : i%26+chunk]
				if i == 0 {
					buf = append([]byte(`{"choices":[{"logprobs":{"content":[`), pattern[:chunk-36]...)
				}
				in.Write(buf)
				eos := i == total/chunk-1
				body := &extprocv3.HttpBody{Body: buf, EndOfStream: eos}
				msg := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: body}}
				if request {
					msg = &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: body}}
				}
				replies := st.handle(msg)
				if len(replies) != 1 {
					t.Fatalf("chunk %d: %d replies", i, len(replies))
				}
				cr := replies[0].GetResponseBody().GetResponse()
				if request {
					cr = replies[0].GetRequestBody().GetResponse()
				}
				switch bm := cr.GetBodyMutation().GetMutation().(type) {
				case nil:
					out.Write(buf)
				case *extprocv3.BodyMutation_ClearBody:
					held = append(held, buf...)
				case *extprocv3.BodyMutation_Body:
					out.Write(bm.Body)
					held = held[:0]
				default:
					t.Fatalf("chunk %d: mutation %T", i, bm)
				}
				maxHeld = max(maxHeld, cap(st.rs.body.buf), cap(st.rq.buf))
			}
			if len(held) != 0 {
				t.Fatalf("%d bytes still held at end of stream", len(held))
			}
			if !bytes.Equal(in.Sum(nil), out.Sum(nil)) {
				t.Fatal("bytes out differ from bytes in")
			}
			if maxHeld > 2*limit {
				t.Errorf("server held up to %d bytes (limit %d)", maxHeld, limit)
			}
			if n := h.passthroughs(t, reasonBodyTooLarge); n != 1 {
				t.Errorf("passthroughs{body_too_large} = %d, want 1", n)
			}
		})
	}
}

// TestLargeBodyEndToEnd: an 8 MiB JSON response over gRPC with a 1 MiB
// bound, on a policy that rewrites it. By default it fails closed: a 502
// while Envoy still holds the headers (announced by content-length: at
// the headers; otherwise once the BUFFERED body is seen), a reset when
// they have gone downstream (STREAMED without override). With on_oversize:
// pass it passes untouched, counted; announced, it is not even switched to
// BUFFERED.
func TestLargeBodyEndToEnd(t *testing.T) {
	body := append([]byte(`{"choices":[{"logprobs":{"content":[{"logprob":-0.123456}]},"x":"`), bytes.Repeat([]byte("y"), 8<<20)...)
	body = append(body, `"}]}`...)
	for _, pass := range []bool{false, true} {
		for _, override := range []bool{true, false} {
			for _, announced := range []bool{false, true} {
				t.Run(fmt.Sprintf("pass=%v/override=%v/content-length=%v", pass, override, announced), func(t *testing.T) {
					mod := func(p *config.Processing) { p.MaxBodyBytes, p.MaxHeldBytes = 1<<20, 64<<10 }
					cfg := testConfig(mod)
					if pass {
						cfg = passConfig(t, mod)
					}
					h := newHarness(t, cfg, verdictScorer(scoring.Allow))
					ec := envoyConfig(mBuffered, mStreamed)
					ec.BufferLimit = 16 << 20
					ec.AllowModeOverride = override
					hdr := http.Header{"Content-Type": {"application/json"}}
					if announced {
						hdr.Set("Content-Length", strconv.Itoa(len(body)))
					}
					res, err := envoytest.New(h.client, ec).Do(context.Background(), &envoytest.Exchange{
						Body: chatBody, ResponseChunker: envoytest.Fixed(64 << 10),
						Upstream: fixedUpstream(200, hdr, body),
					})
					if err != nil {
						t.Fatal(err)
					}
					noViolations(t, res)
					switch {
					case pass:
						if !bytes.Equal(res.Body, body) {
							t.Fatalf("body changed")
						}
						if announced && res.ResponseMode == mBuffered {
							t.Error("an announced oversized body was switched to BUFFERED")
						}
						if n := h.passthroughs(t, reasonBodyTooLarge); n != 1 {
							t.Errorf("passthroughs{body_too_large} = %d", n)
						}
					case announced || override:
						if res.Status != 502 || res.Reset || !bytes.Contains(res.Body, []byte("larger than the gateway can rewrite")) {
							t.Fatalf("got %d reset=%v %.100q, want a 502", res.Status, res.Reset, res.Body)
						}
					default:
						if !res.Reset || bytes.Contains(res.Body, []byte("-0.123456")) {
							t.Fatalf("got %d reset=%v, %d bytes: want a reset", res.Status, res.Reset, len(res.Body))
						}
					}
					if !pass {
						if n := h.counter(t, "distillguard_refusals", attribute.String("reason", refuseResponseTooLarge)); n != 1 {
							t.Errorf("refusals{response_too_large} = %d", n)
						}
					}
				})
			}
		}
	}
}

// TestOversizeRequest: a request body beyond max_body_bytes on a guarded
// route gets a 413, in every body mode (BUFFERED_PARTIAL cuts it at
// Envoy's buffer limit: also a 413), never a pass and never a reset; a
// message above max_message_bytes is the only thing gRPC itself refuses.
func TestOversizeRequest(t *testing.T) {
	big := []byte(`{"model":"m","logprobs":true,"top_logprobs":20,"logit_bias":{"1":5},"messages":[{"role":"user","content":"` + strings.Repeat("a", 3<<20) + `"}]}`)
	for _, m := range []procv3.ProcessingMode_BodySendMode{mBuffered, mStreamed, mDuplex, mPartial} {
		t.Run(m.String(), func(t *testing.T) {
			h := newHarness(t, testConfig(func(p *config.Processing) { p.MaxBodyBytes = 1 << 20 }), verdictScorer(scoring.Allow))
			ec := envoyConfig(m, mStreamed)
			ec.BufferLimit = 8 << 20
			if m == mPartial {
				ec.BufferLimit = 2 << 20
			}
			res, err := envoytest.New(h.client, ec).Do(context.Background(), &envoytest.Exchange{
				Body: big, Header: http.Header{"Content-Type": {"application/json"}}, RequestChunker: envoytest.Fixed(256 << 10),
				Upstream: &envoytest.Upstream{},
			})
			if err != nil {
				t.Fatal(err)
			}
			noViolations(t, res)
			if res.Status != 413 || res.Upstream != nil && len(res.Upstream.Body) > 0 || !bytes.Contains(res.Body, []byte("request_too_large")) {
				t.Fatalf("got %d %.120q (upstream reached: %v)", res.Status, res.Body, res.Upstream != nil)
			}
		})
	}
}

func gz(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// TestGzip: gzip responses are decoded, rewritten and sent on without
// content-encoding. A bomb or a corrupt stream (a body labelled gzip that
// is not) fails closed by default: a 502 while Envoy still holds the
// headers (BUFFERED), a reset once they went downstream and nothing was
// released, never an empty 200; once bytes were released, the stream is
// cut after what decoded cleanly (counted). With on_oversize: pass a body
// still whole is restored untouched, content-encoding put back.
func TestGzip(t *testing.T) {
	g := envoytest.NewGen(21)
	stream := envoytest.Join(g.ChatStream(envoytest.Options{Logprobs: true, TopLogprobs: 7, Tokens: 8}))
	js := g.ChatCompletion(envoytest.Options{Logprobs: true, TopLogprobs: 7})
	// 16 MiB behind ~16 KiB of gzip, against a 1 MiB decompression bound.
	bomb := gz(t, append(append([]byte("data: "), bytes.Repeat([]byte(" "), 16<<20)...), "{}\n\n"...))
	jsBomb := gz(t, append([]byte(`{"a":"`), bytes.Repeat([]byte("0"), 16<<20)...))
	corrupt := gz(t, js)
	corrupt[len(corrupt)/2] ^= 0xff
	corrupt[len(corrupt)/2+1] ^= 0xff
	// Events that decode (flushed per event, as servers do), then
	// garbage: a cut after the released events.
	var flushed bytes.Buffer
	zw := gzip.NewWriter(&flushed)
	for _, ev := range g.ChatStream(envoytest.Options{Logprobs: true, TopLogprobs: 7, Tokens: 40}) {
		zw.Write(ev)
		zw.Flush()
	}
	cutStream := append(flushed.Bytes(), []byte("not gzip at all, not at all")...)
	type outcome int
	const (
		decoded  outcome = iota // rewritten and released without content-encoding
		refused                 // 502 local reply
		reset                   // stream reset, nothing released
		cut                     // released up to the failure, the rest dropped
		restored                // original bytes, content-encoding back (pass)
	)
	cases := []struct {
		name     string
		ct       string
		body     []byte
		mode     procv3.ProcessingMode_BodySendMode
		override bool
		pass     bool
		want     outcome
	}{
		{"sse-streamed", "text/event-stream", gz(t, stream), mStreamed, true, false, decoded},
		{"sse-duplex", "text/event-stream", gz(t, stream), mDuplex, false, false, decoded},
		{"json-buffered", "application/json", gz(t, js), mStreamed, true, false, decoded},
		{"json-duplex", "application/json", gz(t, js), mDuplex, false, false, decoded},
		{"bomb-sse-streamed", "text/event-stream", bomb, mStreamed, true, false, reset},
		{"bomb-json-buffered", "application/json", jsBomb, mBuffered, false, false, refused},
		{"corrupt-json-buffered", "application/json", corrupt, mBuffered, false, false, refused},
		{"corrupt-json-streamed", "application/json", corrupt, mStreamed, false, false, reset},
		{"not-gzip-sse-streamed", "text/event-stream", stream, mStreamed, true, false, reset},
		{"not-gzip-json-buffered", "application/json", js, mBuffered, false, false, refused},
		{"garbage-after-events", "text/event-stream", cutStream, mStreamed, true, false, cut},
		{"pass/bomb-json-buffered", "application/json", jsBomb, mBuffered, false, true, restored},
		{"pass/corrupt-json-buffered", "application/json", corrupt, mBuffered, false, true, restored},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mod := func(p *config.Processing) { p.MaxDecompressedBytes = 1 << 20 }
			cfg := testConfig(mod)
			if tc.pass {
				cfg = passConfig(t, mod)
			}
			h := newHarness(t, cfg, verdictScorer(scoring.Allow))
			ec := envoyConfig(mBuffered, tc.mode)
			ec.AllowModeOverride = tc.override
			ec.BufferLimit = 16 << 20
			res, err := envoytest.New(h.client, ec).Do(context.Background(), &envoytest.Exchange{
				Body: chatBody, ResponseChunker: envoytest.Fixed(1000),
				Upstream: fixedUpstream(200, http.Header{"Content-Type": {tc.ct}, "Content-Encoding": {"gzip"}, "Content-Length": {strconv.Itoa(len(tc.body))}}, tc.body),
			})
			if err != nil {
				t.Fatal(err)
			}
			noViolations(t, res)
			ce := res.Header.Get("Content-Encoding")
			plain := stream
			if tc.ct == "application/json" {
				plain = js
			}
			switch tc.want {
			case decoded:
				if res.Status != 200 || ce != "" || len(res.Body) == 0 || bytes.Equal(res.Body, plain) {
					t.Errorf("status %d content-encoding %q, %d bytes: not decoded and rewritten", res.Status, ce, len(res.Body))
				}
				if h.passthroughs(t, reasonGzipError) != 0 {
					t.Error("gzip_error counted for a valid stream")
				}
			case refused:
				if res.Status != 502 || res.Reset || !bytes.Contains(res.Body, []byte("bad_upstream_response")) {
					t.Errorf("got %d reset=%v %.100q, want a 502", res.Status, res.Reset, res.Body)
				}
			case reset:
				if !res.Reset || len(res.Body) != 0 {
					t.Errorf("got %d reset=%v, %d bytes: want a reset", res.Status, res.Reset, len(res.Body))
				}
			case cut:
				if res.Status != 200 || res.Reset || ce != "" || len(res.Body) == 0 || bytes.Contains(res.Body, []byte("not gzip")) {
					t.Errorf("got %d reset=%v content-encoding %q %q, want the decoded events only", res.Status, res.Reset, ce, res.Body)
				}
			case restored:
				if res.Status != 200 || ce != "gzip" || !bytes.Equal(res.Body, tc.body) {
					t.Errorf("not restored: %d content-encoding %q, body equal %v", res.Status, ce, bytes.Equal(res.Body, tc.body))
				}
			}
			if tc.want != decoded {
				if n := h.passthroughs(t, reasonGzipError); n != 1 {
					t.Errorf("passthroughs{gzip_error} = %d", n)
				}
			}
		})
	}
}

// TestScorerPanic fails open: the request is allowed and counted.
func TestScorerPanic(t *testing.T) {
	sc := verdictScorer(scoring.Block)
	sc.panics = true
	h := newHarness(t, testConfig(nil), sc)
	res, err := envoytest.New(h.client, envoyConfig(mBuffered, mStreamed)).Do(context.Background(), chatExchange(&envoytest.Upstream{}))
	if err != nil {
		t.Fatal(err)
	}
	noViolations(t, res)
	if res.Status != 200 || res.Upstream == nil {
		t.Fatalf("status %d", res.Status)
	}
	if n := h.passthroughs(t, reasonScorerPanic); n != 1 {
		t.Errorf("passthroughs{scorer_panic} = %d", n)
	}
}

// TestRequestClock: request.time is the scoring clock unless it is further
// in the future than max_clock_skew.
func TestRequestClock(t *testing.T) {
	now := time.Now()
	cases := []struct {
		name   string
		at     time.Time
		useIt  bool
		counts string
	}{
		{"past", now.Add(-time.Hour), true, ""},
		{"slightly-ahead", now.Add(time.Minute), true, ""},
		{"far-future", now.Add(time.Hour), false, reasonClockSkew},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sc := verdictScorer(scoring.Allow)
			h := newHarness(t, testConfig(nil), sc)
			ec := envoyConfig(mBuffered, mStreamed)
			ec.RequestTime = tc.at
			if _, err := envoytest.New(h.client, ec).Do(context.Background(), chatExchange(&envoytest.Upstream{})); err != nil {
				t.Fatal(err)
			}
			got := sc.Calls()[0].Time
			if tc.useIt != got.Equal(tc.at) {
				t.Errorf("scored at %v (request.time %v, use it: %v)", got, tc.at, tc.useIt)
			}
			if !tc.useIt && got.Sub(now).Abs() > time.Minute {
				t.Errorf("fallback clock %v is not the server clock", got)
			}
			if tc.counts != "" && h.passthroughs(t, tc.counts) != 1 {
				t.Errorf("passthroughs{%s} not counted", tc.counts)
			}
		})
	}
}

// TestStateReleased: whatever way a stream ends (half-close, Envoy reset or
// client cancel mid-body), the server releases it: no stream stays active
// and no goroutine is left behind.
func TestStateReleased(t *testing.T) {
	h := newHarness(t, testConfig(nil), verdictScorer(scoring.Allow))
	// Warm up: the client connection and its transport goroutines start
	// with the first RPC.
	if _, err := envoytest.New(h.client, envoyConfig(mBuffered, mStreamed)).Do(context.Background(), chatExchange(&envoytest.Upstream{})); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return h.srv.Active() == 0 }, "the warm-up stream to end")
	base := runtime.NumGoroutine()
	g := envoytest.NewGen(2)
	gzStream := gz(t, envoytest.Join(g.ChatStream(envoytest.Options{Logprobs: true, TopLogprobs: 3})))
	hv := func(k, v string) *corev3.HeaderValue { return &corev3.HeaderValue{Key: k, RawValue: []byte(v)} }
	reqHeaders := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
		Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{hv(":path", "/v1/chat/completions"), hv(":method", "POST"), hv("content-type", "application/json"), hv("authorization", "Bearer t")}}}}}
	body := func(b []byte, eos bool) *extprocv3.ProcessingRequest {
		return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: b, EndOfStream: eos}}}
	}
	respHeaders := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
		Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{hv(":status", "200"), hv("content-type", "text/event-stream"), hv("content-encoding", "gzip")}}}}}
	respBody := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: gzStream[:len(gzStream)/2]}}}
	cases := []struct {
		name  string
		modes *extprocv3.ProtocolConfiguration
		msgs  []*extprocv3.ProcessingRequest
		end   string // "cancel" or "close"
	}{
		{"streamed-request-cancel", &extprocv3.ProtocolConfiguration{RequestBodyMode: mStreamed, ResponseBodyMode: mStreamed},
			[]*extprocv3.ProcessingRequest{reqHeaders, body([]byte(`{"model":`), false)}, "cancel"},
		{"duplex-request-cancel", &extprocv3.ProtocolConfiguration{RequestBodyMode: mDuplex, ResponseBodyMode: mDuplex},
			[]*extprocv3.ProcessingRequest{reqHeaders, body([]byte(`{"model":`), false)}, "cancel"},
		{"gzip-response-cancel", &extprocv3.ProtocolConfiguration{RequestBodyMode: mBuffered, ResponseBodyMode: mStreamed},
			[]*extprocv3.ProcessingRequest{reqHeaders, body(chatBody, true), respHeaders, respBody}, "cancel"},
		{"gzip-response-halfclose", &extprocv3.ProtocolConfiguration{RequestBodyMode: mBuffered, ResponseBodyMode: mStreamed},
			[]*extprocv3.ProcessingRequest{reqHeaders, body(chatBody, true), respHeaders, respBody}, "close"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			st, err := h.client.Process(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for i, m := range tc.msgs {
				if i == 0 {
					m.ProtocolConfig = tc.modes
				}
				if err := st.Send(m); err != nil {
					t.Fatal(err)
				}
				if tc.modes.RequestBodyMode == mDuplex {
					continue // the headers reply is held until the body ends
				}
				if _, err := st.Recv(); err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
			}
			waitFor(t, func() bool { return h.srv.Active() == 1 }, "the stream to be active")
			if tc.end == "cancel" {
				cancel()
			} else {
				st.CloseSend()
				if _, err := st.Recv(); err == nil {
					t.Fatal("reply after half-close")
				}
			}
			waitFor(t, func() bool { return h.srv.Active() == 0 }, "the stream to be released")
		})
	}
	waitFor(t, func() bool { return runtime.NumGoroutine() <= base+2 }, "goroutines to return to the baseline")
	if n := h.counter(t, "distillguard_streams_active"); n != 0 {
		t.Errorf("distillguard_streams_active = %d", n)
	}
	// Both request cases were cut while their body was held.
	if n := h.passthroughs(t, reasonHeldAtEnd); n < 2 {
		t.Errorf("passthroughs{held_at_end} = %d, want >= 2", n)
	}
}

// TestConfigSnapshot: a configuration swapped mid-stream does not affect
// the stream in flight.
func TestConfigSnapshot(t *testing.T) {
	var cur atomicConfig
	cur.store(testConfig(nil))
	srv, err := New(Options{Config: cur.load, Scorer: verdictScorer(scoring.Throttle)})
	if err != nil {
		t.Fatal(err)
	}
	st := srv.newStream(context.Background())
	defer st.release()
	swapped, err := config.Parse([]byte("policies:\n  default:\n    throttle: {reject: null}\n"))
	if err != nil {
		t.Fatal(err)
	}
	cur.store(swapped)
	r := st.handle(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{EndOfStream: true}}})
	if len(r) != 1 || r[0].GetImmediateResponse() == nil {
		t.Fatalf("stream did not keep its snapshot: %v", r)
	}
	st2 := srv.newStream(context.Background())
	defer st2.release()
	r = st2.handle(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{EndOfStream: true}}})
	if len(r) != 1 || r[0].GetImmediateResponse() != nil {
		t.Fatalf("new stream did not see the swapped config: %v", r)
	}
	if strings.Contains(r[0].String(), "immediate") {
		t.Fatal("unexpected immediate response")
	}
}

// TestProtocolViolations: messages Envoy never sends are still answered
// (a missing reply would stall the stream) and counted.
func TestProtocolViolations(t *testing.T) {
	h := newHarness(t, testConfig(nil), verdictScorer(scoring.Allow))
	st := h.srv.newStream(context.Background())
	defer st.release()
	reqH := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{EndOfStream: true}}}
	late := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte("x")}}}
	cases := []struct {
		msg     *extprocv3.ProcessingRequest
		replies int
		kind    string
		count   int64
	}{
		{reqH, 1, protoOutOfOrder, 0},
		{late, 1, protoAfterEnd, 1},
		{reqH, 1, protoOutOfOrder, 1},
		{&extprocv3.ProcessingRequest{}, 0, protoEmptyRequest, 1},
	}
	for i, tc := range cases {
		if got := st.handle(tc.msg); len(got) != tc.replies {
			t.Fatalf("message %d: %d replies, want %d", i, len(got), tc.replies)
		}
		if n := h.counter(t, "distillguard_protocol_errors", attribute.String("kind", tc.kind)); n != tc.count {
			t.Errorf("message %d: protocol_errors{%s} = %d, want %d", i, tc.kind, n, tc.count)
		}
	}
}

// TestBufferedPartialCut: a body larger than Envoy's buffer limit under
// BUFFERED_PARTIAL reaches the processor cut; the rest bypasses it. SSE
// events completed in the cut part are rewritten and the unfinished one is
// released raw; a cut JSON document passes untouched, counted.
func TestBufferedPartialCut(t *testing.T) {
	g := envoytest.NewGen(31)
	events := g.ChatStream(envoytest.Options{Tokens: 12, Logprobs: true, TopLogprobs: 4})
	sse := envoytest.Join(events)
	js := g.ChatCompletion(envoytest.Options{Tokens: 12, Logprobs: true, TopLogprobs: 4})
	for _, tc := range []struct {
		name, ct string
		body     []byte
	}{{"sse", "text/event-stream", sse}, {"json", "application/json", js}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, testConfig(nil), verdictScorer(scoring.Allow))
			ec := envoyConfig(mBuffered, mPartial)
			ec.AllowModeOverride = false
			ec.BufferLimit = len(tc.body) / 3
			res, err := envoytest.New(h.client, ec).Do(context.Background(), &envoytest.Exchange{
				Body: chatBody, ResponseChunker: envoytest.Fixed(100),
				Upstream: fixedUpstream(200, http.Header{"Content-Type": {tc.ct}}, tc.body),
			})
			if err != nil {
				t.Fatal(err)
			}
			noViolations(t, res)
			if tc.name == "json" {
				if !bytes.Equal(res.Body, tc.body) || h.passthroughs(t, reasonPartialBody) != 1 {
					t.Errorf("cut JSON changed or not counted")
				}
				return
			}
			if got, want := len(sseEvents(res.Body)), len(events); got != want {
				t.Errorf("%d events out, %d in", got, want)
			}
			cutAt := len(tc.body) / 3
			if realMutate() && bytes.Equal(res.Body[:cutAt], tc.body[:cutAt]) {
				t.Error("no event of the cut part was rewritten")
			}
			tail := tc.body[len(tc.body)-len(tc.body)/2:]
			if !bytes.HasSuffix(res.Body, tail) {
				t.Error("the part past the cut did not pass untouched")
			}
		})
	}
}

// TestUndecodableResponseRefused: a response the policy would change, in
// an encoding distillguard cannot decode (br, zstd, a list of codings),
// is answered 502 at its headers instead of passing raw.
func TestUndecodableResponseRefused(t *testing.T) {
	js := envoytest.NewGen(8).ChatCompletion(envoytest.Options{Logprobs: true, TopLogprobs: 9})
	for _, ce := range [][]string{{"br"}, {"zstd"}, {"gzip, br"}, {"gzip", "gzip"}} {
		h := newHarness(t, testConfig(nil), verdictScorer(scoring.Allow))
		res, err := envoytest.New(h.client, envoyConfig(mBuffered, mStreamed)).Do(context.Background(), &envoytest.Exchange{
			Body: chatBody, Upstream: fixedUpstream(200, http.Header{"Content-Type": {"application/json"}, "Content-Encoding": ce}, js)})
		if err != nil {
			t.Fatal(err)
		}
		noViolations(t, res)
		if res.Status != 502 || bytes.Contains(res.Body, []byte("logprob")) {
			t.Errorf("content-encoding %q: %d %.80q", ce, res.Status, res.Body)
		}
	}
}
