package extproc

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	procv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"go.opentelemetry.io/otel/attribute"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/extproc/envoytest"
	"github.com/distillguard/distillguard/scoring"
)

var chatBody = []byte(`{"model":"gpt-x","messages":[{"role":"user","content":"What is 2+2?"}],"stream":true,"logprobs":true,"top_logprobs":3}`)

func chatExchange(up http.Handler) *envoytest.Exchange {
	return &envoytest.Exchange{
		Body: chatBody,
		Header: http.Header{
			"Content-Type":    {"application/json"},
			"Authorization":   {"Bearer sk-test-123"},
			"Accept-Encoding": {"gzip, deflate"},
		},
		Upstream: up,
	}
}

// TestReject: throttle answers 429 with an OpenAI error and retry-after,
// block 403; nothing reaches the upstream; shadow mode allows instead.
func TestReject(t *testing.T) {
	cases := []struct {
		verdict    scoring.Verdict
		shadow     bool
		status     int
		retryAfter string
		errType    string
	}{
		{scoring.Throttle, false, 429, "60", "rate_limit_error"},
		{scoring.Block, false, 403, "", "permission_error"},
		{scoring.Block, true, 200, "", ""},
	}
	for _, reqMode := range []procv3.ProcessingMode_BodySendMode{mBuffered, mStreamed, mDuplex} {
		for _, tc := range cases {
			t.Run(reqMode.String()+"/"+tc.verdict.String(), func(t *testing.T) {
				sc := verdictScorer(tc.verdict)
				sc.decision.Shadow = tc.shadow
				h := newHarness(t, testConfig(nil), sc)
				up := &envoytest.Upstream{Seed: 1}
				res, err := envoytest.New(h.client, envoyConfig(reqMode, mStreamed)).Do(context.Background(), chatExchange(up))
				if err != nil {
					t.Fatal(err)
				}
				noViolations(t, res)
				if res.Status != tc.status {
					t.Fatalf("status %d, want %d", res.Status, tc.status)
				}
				md := res.Metadata["distillguard"].GetFields()
				if got := md["verdict"].GetStringValue(); got != tc.verdict.String() {
					t.Errorf("metadata verdict %q, want %q", got, tc.verdict)
				}
				if got := md["shadow"].GetBoolValue(); got != tc.shadow {
					t.Errorf("metadata shadow %v", got)
				}
				if tc.status == 200 {
					if res.Upstream == nil {
						t.Fatal("shadow mode did not forward the request")
					}
					if md["action"].GetStringValue() != "allow" {
						t.Errorf("shadow action %q, want allow", md["action"].GetStringValue())
					}
					return
				}
				if res.Upstream != nil {
					t.Error("a rejected request reached the upstream")
				}
				if res.Header.Get("Content-Type") != "application/json" {
					t.Errorf("content-type %q", res.Header.Get("Content-Type"))
				}
				if got := res.Header.Get("Retry-After"); got != tc.retryAfter {
					t.Errorf("retry-after %q, want %q", got, tc.retryAfter)
				}
				if res.LocalReply != "distillguard_"+tc.verdict.String() {
					t.Errorf("details %q", res.LocalReply)
				}
				var e struct {
					Error struct {
						Message string  `json:"message"`
						Type    string  `json:"type"`
						Param   *string `json:"param"`
						Code    *string `json:"code"`
					} `json:"error"`
				}
				if err := json.Unmarshal(res.Body, &e); err != nil {
					t.Fatalf("body %q: %v", res.Body, err)
				}
				if e.Error.Type != tc.errType || e.Error.Message == "" || e.Error.Param != nil || e.Error.Code == nil {
					t.Errorf("error body %s", res.Body)
				}
				if !strings.Contains(string(res.Body), `"param":null`) {
					t.Errorf("param is not null: %s", res.Body)
				}
				if n := h.counter(t, "distillguard_immediate_responses", attribute.String("status", itoa(tc.status))); n != 1 {
					t.Errorf("immediate_responses{status=%d} = %d", tc.status, n)
				}
			})
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestDynamicMetadata: the decision rides on the request body reply (the
// request headers reply for body-less requests), only in the distillguard
// namespace, and the scorer sees the attributes and headers.
func TestDynamicMetadata(t *testing.T) {
	for _, reqMode := range []procv3.ProcessingMode_BodySendMode{mBuffered, mStreamed, mPartial, mDuplex} {
		t.Run(reqMode.String(), func(t *testing.T) {
			sc := verdictScorer(scoring.Degrade)
			h := newHarness(t, testConfig(nil), sc)
			ec := envoyConfig(reqMode, mStreamed)
			ec.RequestTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
			res, err := envoytest.New(h.client, ec).Do(context.Background(), chatExchange(&envoytest.Upstream{Seed: 2}))
			if err != nil {
				t.Fatal(err)
			}
			noViolations(t, res)
			if len(res.MetadataOn) != 1 || res.MetadataOn[0] != "request_body" {
				t.Fatalf("metadata on %v, want [request_body]", res.MetadataOn)
			}
			md := res.Metadata["distillguard"].GetFields()
			if md["verdict"].GetStringValue() != "degrade" || md["score"].GetNumberValue() != 0.75 ||
				md["session"].GetStringValue() != "sess-1234" || md["policy"].GetStringValue() != "default" {
				t.Errorf("metadata %v", md)
			}
			if sig := md["signals"].GetStructValue().GetFields(); sig["volume"].GetNumberValue() != 0.5 || len(sig) != 2 {
				t.Errorf("signals %v", sig)
			}
			calls := sc.Calls()
			if len(calls) != 1 {
				t.Fatalf("scorer called %d times", len(calls))
			}
			c := calls[0]
			if !c.Time.Equal(ec.RequestTime) || c.SourceAddress != ec.SourceAddress || c.Endpoint != "chat" || c.Path != "/v1/chat/completions" {
				t.Errorf("scoring request %+v", c)
			}
			if sc.headers[0] != "Bearer sk-test-123" {
				t.Errorf("scorer saw authorization %q", sc.headers[0])
			}
			if realMutate() && (c.Model != "gpt-x" || !c.Logprobs || c.TopLogprobs != 3 || !c.Stream) {
				t.Errorf("parsed fields %+v", c)
			}
			if got := res.Upstream.Header.Get("Accept-Encoding"); got != "" {
				t.Errorf("accept-encoding %q reached the upstream of a rewritten response", got)
			}
		})
	}
	t.Run("headers-only", func(t *testing.T) {
		sc := verdictScorer(scoring.Allow)
		h := newHarness(t, testConfig(nil), sc)
		ec := envoyConfig(mBuffered, mStreamed)
		ec.ReceivingNamespaces = []string{"distillguard", "other"}
		res, err := envoytest.New(h.client, ec).Do(context.Background(), &envoytest.Exchange{
			Method: "GET", Path: "/v1/models", Upstream: fixedUpstream(200, http.Header{"Content-Type": {"application/json"}}, []byte(`{"data":[]}`)),
		})
		if err != nil {
			t.Fatal(err)
		}
		noViolations(t, res)
		if len(res.MetadataOn) != 1 || res.MetadataOn[0] != "request_headers" {
			t.Fatalf("metadata on %v, want [request_headers]", res.MetadataOn)
		}
		if len(res.Metadata) != 1 {
			t.Errorf("namespaces %v", res.Metadata)
		}
		if len(sc.Calls()) != 1 || sc.Calls()[0].Endpoint != "" {
			t.Errorf("scorer calls %+v", sc.Calls())
		}
	})
	t.Run("not-received", func(t *testing.T) {
		h := newHarness(t, testConfig(nil), verdictScorer(scoring.Allow))
		ec := envoyConfig(mBuffered, mStreamed)
		ec.ReceivingNamespaces = nil // Envoy drops it
		res, err := envoytest.New(h.client, ec).Do(context.Background(), chatExchange(&envoytest.Upstream{}))
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Metadata) != 0 || len(res.MetadataOn) != 0 {
			t.Errorf("metadata accepted without a receiving namespace: %v", res.Metadata)
		}
		if res.Header.Get("x-distillguard") != "" || strings.Contains(string(res.Body), "distillguard") {
			t.Error("decision leaked to the client")
		}
	})
}

// TestObservabilityMode: Envoy does not wait, so the server never replies,
// but it still scores.
func TestObservabilityMode(t *testing.T) {
	sc := verdictScorer(scoring.Block)
	h := newHarness(t, testConfig(nil), sc)
	ec := envoyConfig(mStreamed, mStreamed)
	ec.ObservabilityMode = true
	g := envoytest.NewGen(5)
	res, err := envoytest.New(h.client, ec).Do(context.Background(), &envoytest.Exchange{
		Body: chatBody, RequestChunker: envoytest.Fixed(10), ResponseChunker: envoytest.Fixed(50),
		Upstream: fixedUpstream(200, sseHeader(), envoytest.Join(g.ChatStream(envoytest.Options{Logprobs: true, TopLogprobs: 8}))),
	})
	if err != nil {
		t.Fatal(err)
	}
	noViolations(t, res)
	if len(res.Received) != 0 {
		t.Fatalf("%d replies in observability mode", len(res.Received))
	}
	if res.Status != 200 || res.Upstream == nil {
		t.Fatalf("status %d", res.Status)
	}
	waitFor(t, func() bool { return len(sc.Calls()) == 1 }, "the scorer to run once")
	waitFor(t, func() bool { return h.srv.Active() == 0 }, "streams to end")
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestProtocolConfig: the body modes Envoy announces win over the
// configured ones; without the announcement a mismatch is a protocol
// failure (which is why the announcement matters).
func TestProtocolConfig(t *testing.T) {
	// Configured STREAMED/STREAMED; Envoy runs FULL_DUPLEX_STREAMED.
	cfg := testConfig(func(p *config.Processing) { p.RequestBodyMode, p.ResponseBodyMode = "STREAMED", "STREAMED" })
	g := envoytest.NewGen(11)
	stream := envoytest.Join(g.ChatStream(envoytest.Options{Logprobs: true, TopLogprobs: 2}))
	run := func(send bool) *envoytest.Result {
		h := newHarness(t, cfg, verdictScorer(scoring.Allow))
		ec := envoyConfig(mDuplex, mDuplex)
		ec.SendProtocolConfig = send
		ex := chatExchange(fixedUpstream(200, sseHeader(), stream))
		ex.RequestChunker, ex.ResponseChunker = envoytest.Fixed(9), envoytest.Fixed(64)
		res, err := envoytest.New(h.client, ec).Do(context.Background(), ex)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	res := run(true)
	noViolations(t, res)
	if res.Status != 200 || string(res.Upstream.Body) == "" {
		t.Fatalf("status %d", res.Status)
	}
	if !realMutate() && string(res.Body) != string(stream) {
		t.Errorf("body changed by the placeholder")
	}
	res = run(false)
	if len(res.Violations) == 0 {
		t.Error("a mode mismatch without protocol_config went unnoticed")
	}
}

// TestModeOverride: a JSON response under STREAMED is switched to BUFFERED
// and an SSE response under BUFFERED to STREAMED, copying the request mode;
// nothing is overridden around FULL_DUPLEX_STREAMED, and a response passed
// at its headers is switched to NONE (no body messages at all).
func TestModeOverride(t *testing.T) {
	g := envoytest.NewGen(3)
	sse := envoytest.Join(g.ChatStream(envoytest.Options{Logprobs: true, TopLogprobs: 2}))
	js := g.ChatCompletion(envoytest.Options{Logprobs: true, TopLogprobs: 2})
	cases := []struct {
		name        string
		req, resp   procv3.ProcessingMode_BodySendMode
		contentType string
		body        []byte
		verdict     scoring.Verdict
		noop        bool
		want        int
		wantMode    procv3.ProcessingMode_BodySendMode
	}{
		{"json-under-streamed", mBuffered, mStreamed, "application/json", js, scoring.Allow, false, 1, mBuffered},
		{"sse-under-buffered", mStreamed, mBuffered, "text/event-stream", sse, scoring.Allow, false, 1, mStreamed},
		{"sse-under-none", mBuffered, mNone, "text/event-stream", sse, scoring.Allow, false, 1, mStreamed},
		{"sse-under-streamed", mBuffered, mStreamed, "text/event-stream", sse, scoring.Allow, false, 0, mStreamed},
		{"duplex", mDuplex, mDuplex, "application/json", js, scoring.Allow, false, 0, mDuplex},
		{"noop-policy", mBuffered, mStreamed, "application/json", js, scoring.Allow, true, 1, mNone},
		{"plain-text", mBuffered, mStreamed, "text/plain", []byte("hello"), scoring.Allow, false, 1, mNone},
		{"plain-text-duplex", mDuplex, mDuplex, "text/plain", []byte("hello"), scoring.Allow, false, 0, mDuplex},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(nil)
			if tc.noop {
				c, err := config.Parse([]byte("policies:\n  default:\n    allow: {output: {round_decimals: null, max_alternatives: null}}\n"))
				if err != nil {
					t.Fatal(err)
				}
				cfg = c
			}
			h := newHarness(t, cfg, verdictScorer(tc.verdict))
			ec := envoyConfig(tc.req, tc.resp)
			ec.AllowContentLengthHeader = true
			ex := chatExchange(fixedUpstream(200, http.Header{"Content-Type": {tc.contentType}, "Content-Length": {itoa(len(tc.body))}}, tc.body))
			ex.ResponseChunker = envoytest.Fixed(33)
			res, err := envoytest.New(h.client, ec).Do(context.Background(), ex)
			if err != nil {
				t.Fatal(err)
			}
			noViolations(t, res)
			if res.ModeOverrides != tc.want || res.ResponseMode != tc.wantMode {
				t.Fatalf("overrides %d (want %d), response mode %v (want %v)", res.ModeOverrides, tc.want, res.ResponseMode, tc.wantMode)
			}
			if res.RequestMode != tc.req {
				t.Errorf("request mode became %v", res.RequestMode)
			}
			for _, r := range res.Received {
				if mo := r.GetModeOverride(); mo != nil && mo.GetRequestBodyMode() != tc.req {
					t.Errorf("override request_body_mode %v, want %v copied", mo.GetRequestBodyMode(), tc.req)
				}
			}
			if !realMutate() && string(res.Body) != string(tc.body) {
				t.Errorf("body changed by the placeholder")
			}
		})
	}
	t.Run("ignored", func(t *testing.T) {
		h := newHarness(t, testConfig(nil), verdictScorer(scoring.Allow))
		ec := envoyConfig(mBuffered, mStreamed)
		ec.AllowModeOverride = false
		ec.AllowContentLengthHeader = true
		ex := chatExchange(fixedUpstream(200, http.Header{"Content-Type": {"application/json"}, "Content-Length": {itoa(len(js))}}, js))
		ex.ResponseChunker = envoytest.Fixed(40)
		res, err := envoytest.New(h.client, ec).Do(context.Background(), ex)
		if err != nil {
			t.Fatal(err)
		}
		noViolations(t, res)
		if res.ModeOverrides != 0 || res.ResponseMode != mStreamed {
			t.Fatalf("override honoured while not allowed")
		}
		if res.Status != 200 || len(res.Body) == 0 {
			t.Fatalf("status %d, %d bytes", res.Status, len(res.Body))
		}
	})
}

// TestTrailers: every trailers message gets an (empty) trailers reply, and
// FULL_DUPLEX_STREAMED bodies ended by trailers flush before it.
func TestTrailers(t *testing.T) {
	for _, m := range []procv3.ProcessingMode_BodySendMode{mBuffered, mDuplex} {
		t.Run(m.String(), func(t *testing.T) {
			h := newHarness(t, testConfig(nil), verdictScorer(scoring.Allow))
			ec := envoyConfig(m, mStreamed)
			ec.ProcessingMode.RequestTrailerMode = procv3.ProcessingMode_SEND
			ex := chatExchange(&envoytest.Upstream{Seed: 4})
			ex.Trailers = http.Header{"X-Checksum": {"abc"}}
			ex.RequestChunker = envoytest.Fixed(25)
			res, err := envoytest.New(h.client, ec).Do(context.Background(), ex)
			if err != nil {
				t.Fatal(err)
			}
			noViolations(t, res)
			if res.Status != 200 || res.Upstream.Trailers.Get("X-Checksum") != "abc" {
				t.Fatalf("status %d trailers %v", res.Status, res.Upstream.Trailers)
			}
			var doc map[string]any
			if err := json.Unmarshal(res.Upstream.Body, &doc); err != nil {
				t.Fatalf("upstream body %q: %v", res.Upstream.Body, err)
			}
			n := 0
			for _, r := range res.Received {
				if r.GetRequestTrailers() != nil {
					n++
					if r.GetRequestTrailers().GetHeaderMutation() != nil {
						t.Error("trailers reply is not empty")
					}
				}
			}
			if n != 1 {
				t.Errorf("%d trailers replies", n)
			}
		})
	}
}

// TestHeaderValuesUseRawValue: every header the server sets uses raw_value
// only (Envoy sets value-only headers empty).
func TestHeaderValuesUseRawValue(t *testing.T) {
	h := newHarness(t, testConfig(nil), verdictScorer(scoring.Throttle))
	res, err := envoytest.New(h.client, envoyConfig(mBuffered, mStreamed)).Do(context.Background(), chatExchange(&envoytest.Upstream{}))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range res.Received {
		ms := []*extprocv3.HeaderMutation{r.GetImmediateResponse().GetHeaders(), r.GetRequestBody().GetResponse().GetHeaderMutation(),
			r.GetRequestHeaders().GetResponse().GetHeaderMutation(), r.GetResponseHeaders().GetResponse().GetHeaderMutation()}
		for _, m := range ms {
			for _, s := range m.GetSetHeaders() {
				n++
				if s.GetHeader().GetValue() != "" || len(s.GetHeader().GetRawValue()) == 0 {
					t.Errorf("header %q: value %q raw_value %q", s.GetHeader().GetKey(), s.GetHeader().GetValue(), s.GetHeader().GetRawValue())
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no header was set")
	}
}
