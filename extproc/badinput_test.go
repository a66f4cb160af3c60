package extproc

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
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

// TestBadRequestBodies: unparseable request bodies pass to the upstream
// byte for byte, counted; the request is still scored.
func TestBadRequestBodies(t *testing.T) {
	cases := []struct {
		name        string
		body        []byte
		contentType string
		encoding    string
		reason      string
	}{
		{"truncated-json", []byte(`{"model":"x","messages":[{"role":"user","content":"hi"`), "application/json", "", reasonBadRequestJSON},
		{"not-an-object", []byte(`["model","x"]`), "application/json", "", reasonBadRequestJSON},
		{"form", []byte(`model=x&prompt=hello`), "application/x-www-form-urlencoded", "", reasonBadRequestJSON},
		{"encoded", []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0}, "application/json", "gzip", reasonRequestEncoded},
	}
	for _, tc := range cases {
		for _, m := range []procv3.ProcessingMode_BodySendMode{mBuffered, mStreamed, mDuplex} {
			t.Run(tc.name+"/"+m.String(), func(t *testing.T) {
				sc := verdictScorer(scoring.Allow)
				h := newHarness(t, testConfig(nil), sc)
				hdr := http.Header{"Content-Type": {tc.contentType}}
				if tc.encoding != "" {
					hdr.Set("Content-Encoding", tc.encoding)
				}
				res, err := envoytest.New(h.client, envoyConfig(m, mStreamed)).Do(context.Background(), &envoytest.Exchange{
					Body: tc.body, Header: hdr, RequestChunker: envoytest.Fixed(5),
					Upstream: fixedUpstream(400, http.Header{"Content-Type": {"application/json"}}, []byte(`{"error":{}}`)),
				})
				if err != nil {
					t.Fatal(err)
				}
				noViolations(t, res)
				if !bytes.Equal(res.Upstream.Body, tc.body) {
					t.Errorf("upstream got %q, want %q", res.Upstream.Body, tc.body)
				}
				if res.Status != 400 || string(res.Body) != `{"error":{}}` {
					t.Errorf("client got %d %q", res.Status, res.Body)
				}
				if n := h.passthroughs(t, tc.reason); n != 1 {
					t.Errorf("passthroughs{%s} = %d, want 1", tc.reason, n)
				}
				if n := h.passthroughs(t, reasonNon2xx); n != 1 {
					t.Errorf("passthroughs{non_2xx} = %d, want 1", n)
				}
				if len(sc.Calls()) != 1 {
					t.Errorf("scored %d times", len(sc.Calls()))
				}
			})
		}
	}
}

// TestInvalidUTF8: invalid UTF-8 inside strings neither crashes nor
// corrupts; the policy still applies to the parts it understands.
func TestInvalidUTF8(t *testing.T) {
	body := []byte("{\"model\":\"m\xff\",\"messages\":[{\"role\":\"user\",\"content\":\"\xc3\x28 caf\xe9\"}],\"logprobs\":true,\"top_logprobs\":9,\"logit_bias\":{\"5\":1}}")
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
	if !bytes.Contains(res.Upstream.Body, []byte("\xc3\x28 caf\xe9")) {
		t.Errorf("prompt bytes changed: %q", res.Upstream.Body)
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
		{"brotli", 200, http.Header{"Content-Type": {"application/json"}, "Content-Encoding": {"br"}}, reasonUnknownEncoding},
		{"server-error", 500, http.Header{"Content-Type": {"application/json"}}, reasonNon2xx},
	}
	for _, tc := range cases {
		for _, m := range []procv3.ProcessingMode_BodySendMode{mStreamed, mBuffered, mDuplex} {
			t.Run(tc.name+"/"+m.String(), func(t *testing.T) {
				h := newHarness(t, testConfig(nil), verdictScorer(scoring.Allow))
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
				if res.ModeOverrides != 0 {
					t.Error("mode overridden for an untouched response")
				}
				if n := h.passthroughs(t, tc.reason); n != 1 {
					t.Errorf("passthroughs{%s} = %d, want 1", tc.reason, n)
				}
			})
		}
	}
}

// TestSSEWithoutEventEnd: an event that never ends is held up to
// max_held_bytes, then the stream fails open: every byte passes, counted.
func TestSSEWithoutEventEnd(t *testing.T) {
	body := append([]byte(`data: {"choices":[{"logprobs":{"content":[{"token":"`), bytes.Repeat([]byte("x"), 300<<10)...)
	for _, m := range []procv3.ProcessingMode_BodySendMode{mStreamed, mDuplex, mBuffered} {
		t.Run(m.String(), func(t *testing.T) {
			h := newHarness(t, testConfig(func(p *config.Processing) { p.MaxHeldBytes = 64 << 10 }), verdictScorer(scoring.Allow))
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
			if !bytes.Equal(res.Body, body) {
				t.Fatalf("body changed (%d bytes out, %d in)", len(res.Body), len(body))
			}
			if realMutate() && m != mBuffered { // a whole body is never held
				if n := h.passthroughs(t, reasonHeldOverflow); n != 1 {
					t.Errorf("passthroughs{held_overflow} = %d, want 1", n)
				}
			}
		})
	}
}

// TestLargeBodyBoundedMemory feeds 100 MiB through the state machine in
// 256 KiB chunks (a JSON response under STREAMED, and a request under
// STREAMED): the server holds at most max_body_bytes, then passes every
// byte through unchanged, counted.
func TestLargeBodyBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("100 MiB body")
	}
	const total, chunk, limit = 100 << 20, 256 << 10, 1 << 20
	cfg := testConfig(func(p *config.Processing) { p.MaxBodyBytes, p.ModeOverride = limit, false })
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
				RequestHeaders: &extprocv3.HttpHeaders{Headers: hdrs(":path", "/v1/chat/completions", ":method", "POST"), EndOfStream: !request}}}
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
// bound passes through untouched; announced by content-length, it is not
// even switched to BUFFERED.
func TestLargeBodyEndToEnd(t *testing.T) {
	body := append([]byte(`{"choices":[{"logprobs":{"content":[{"logprob":-0.123456}]},"x":"`), bytes.Repeat([]byte("y"), 8<<20)...)
	body = append(body, `"}]}`...)
	for _, announced := range []bool{false, true} {
		t.Run("content-length-"+strconv.FormatBool(announced), func(t *testing.T) {
			h := newHarness(t, testConfig(func(p *config.Processing) { p.MaxBodyBytes = 1 << 20 }), verdictScorer(scoring.Allow))
			ec := envoyConfig(mBuffered, mStreamed)
			ec.BufferLimit = 16 << 20
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
			if !bytes.Equal(res.Body, body) {
				t.Fatalf("body changed")
			}
			if announced && res.ModeOverrides != 0 {
				t.Error("an announced oversized body was switched to BUFFERED")
			}
			if n := h.passthroughs(t, reasonBodyTooLarge); n != 1 {
				t.Errorf("passthroughs{body_too_large} = %d", n)
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
// content-encoding; a bomb or a corrupt stream fails cleanly: restored
// untouched while the whole body is still in hand (BUFFERED), truncated to
// what decoded cleanly once bytes were released (streamed).
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
	cases := []struct {
		name     string
		ct       string
		body     []byte
		mode     procv3.ProcessingMode_BodySendMode
		override bool
		ok       bool // decodes cleanly
		restored bool // failure with the original passed back
	}{
		{"sse-streamed", "text/event-stream", gz(t, stream), mStreamed, true, true, false},
		{"sse-duplex", "text/event-stream", gz(t, stream), mDuplex, false, true, false},
		{"json-buffered", "application/json", gz(t, js), mStreamed, true, true, false},
		{"json-duplex", "application/json", gz(t, js), mDuplex, false, true, false},
		{"bomb-sse-streamed", "text/event-stream", bomb, mStreamed, true, false, false},
		{"bomb-json-buffered", "application/json", jsBomb, mBuffered, false, false, true},
		{"corrupt-json-buffered", "application/json", corrupt, mBuffered, false, false, true},
		{"corrupt-json-streamed", "application/json", corrupt, mStreamed, false, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.ok && !tc.restored {
				requireRealMutate(t) // the placeholder's Gunzip fails on the first byte
			}
			h := newHarness(t, testConfig(func(p *config.Processing) { p.MaxDecompressedBytes = 1 << 20 }), verdictScorer(scoring.Allow))
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
			if res.Status != 200 {
				t.Fatalf("status %d", res.Status)
			}
			ce := res.Header.Get("Content-Encoding")
			switch {
			case tc.restored:
				if ce != "gzip" || !bytes.Equal(res.Body, tc.body) {
					t.Errorf("not restored: content-encoding %q, body equal %v", ce, bytes.Equal(res.Body, tc.body))
				}
				if n := h.passthroughs(t, reasonGzipError); n != 1 {
					t.Errorf("passthroughs{gzip_error} = %d", n)
				}
			case !realMutate():
				// Placeholder Gunzip: everything fails and is restored or
				// dropped; only the absence of violations matters here.
			case tc.ok:
				if ce != "" {
					t.Errorf("content-encoding %q left on a decoded body", ce)
				}
				plain := stream
				if tc.ct == "application/json" {
					plain = js
				}
				if len(res.Body) == 0 || bytes.Equal(res.Body, plain) {
					t.Errorf("decoded body not rewritten (%d bytes)", len(res.Body))
				}
				if h.passthroughs(t, reasonGzipError) != 0 {
					t.Error("gzip_error counted for a valid stream")
				}
			default:
				if ce != "" {
					t.Errorf("content-encoding %q on a truncated decoded body", ce)
				}
				if len(res.Body) > 2<<20 {
					t.Errorf("%d bytes released past a 1 MiB decompression bound", len(res.Body))
				}
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
		Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{hv(":path", "/v1/chat/completions"), hv(":method", "POST"), hv("content-type", "application/json")}}}}}
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
	swapped, err := config.Parse([]byte("policies:\n  default:\n    throttle: {}\n"))
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
