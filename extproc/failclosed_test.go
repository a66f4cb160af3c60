package extproc

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	procv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"go.opentelemetry.io/otel/attribute"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/extproc/envoytest"
	"github.com/distillguard/distillguard/mutate"
	"github.com/distillguard/distillguard/scoring"
)

const probeBody = `{"model":"m","messages":[{"role":"user","content":"hi"}],"logprobs":true,"top_logprobs":20,"logit_bias":{"1":100}}`

// TestRequestHeadersRefused: on a guarded route, what makes a request
// ambiguous before its body is read is refused with an OpenAI-style error,
// and nothing reaches the upstream.
func TestRequestHeadersRefused(t *testing.T) {
	cases := []struct {
		name   string
		header http.Header
		noAddr bool
		status int
		msg    string
	}{
		{"duplicate authorization", http.Header{"Authorization": {"Bearer junk", "Bearer real"}}, false, 400, "authorization header is sent more than once"},
		{"duplicate x-api-key", http.Header{"X-Api-Key": {"a", "b"}}, false, 400, "x-api-key header is sent more than once"},
		{"no credential, no address", http.Header{}, true, 401, "no credential and no client address"},
		{"empty bearer, no address", http.Header{"Authorization": {"Bearer "}}, true, 401, "no credential and no client address"},
		{"charset", http.Header{"Content-Type": {"application/json; charset=utf-16"}}, false, 415, "only the UTF-8 charset"},
		{"media type", http.Header{"Content-Type": {"text/plain"}}, false, 415, `content-type "text/plain" is not accepted`},
		{"two content types", http.Header{"Content-Type": {"application/json", "text/plain"}}, false, 415, "content-type header is sent more than once"},
		{"encoding list", http.Header{"Content-Encoding": {"identity, foo"}}, false, 415, `content-encoding "identity, foo"`},
		{"two encodings", http.Header{"Content-Encoding": {"identity", "identity"}}, false, 415, "content-encoding"},
		{"brotli", http.Header{"Content-Encoding": {"br"}}, false, 415, "send identity or gzip"},
	}
	for _, tc := range cases {
		for _, m := range []bodyMode{mBuffered, mStreamed, mDuplex} {
			t.Run(tc.name+"/"+m.String(), func(t *testing.T) {
				sc := verdictScorer(scoring.Allow)
				h := newHarness(t, testConfig(nil), sc)
				ec := envoyConfig(m, mStreamed)
				if tc.noAddr {
					ec.SourceAddress = ""
				}
				up := &envoytest.Upstream{}
				res, err := envoytest.New(h.client, ec).Do(context.Background(), &envoytest.Exchange{Body: []byte(probeBody), Header: tc.header, Upstream: up})
				if err != nil {
					t.Fatal(err)
				}
				noViolations(t, res)
				var e apiError
				_ = json.Unmarshal(res.Body, &e)
				if res.Status != tc.status || !strings.Contains(e.Error.Message, tc.msg) || res.Upstream != nil {
					t.Fatalf("got %d %q (upstream reached %v), want %d naming %q", res.Status, res.Body, res.Upstream != nil, tc.status, tc.msg)
				}
				if len(sc.Calls()) != 0 {
					t.Error("a refused request was scored")
				}
				if got := res.Metadata["distillguard"].GetFields()["refused"].GetStringValue(); got == "" {
					t.Errorf("no refusal reason in the metadata: %v", res.Metadata)
				}
			})
		}
	}
}

// TestGzipRequestDecoded: a gzip request body on a guarded route is
// decoded within bounds, read, rewritten, and forwarded as identity with
// content-encoding removed and a matching length; a body that decodes
// beyond max_body_bytes is a 413.
func TestGzipRequestDecoded(t *testing.T) {
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	zw.Write([]byte(probeBody))
	zw.Close()
	for _, m := range []bodyMode{mBuffered, mStreamed, mDuplex} {
		t.Run(m.String(), func(t *testing.T) {
			h := newHarness(t, testConfig(nil), verdictScorer(scoring.Allow))
			ec := envoyConfig(m, mStreamed)
			ec.AllowContentLengthHeader = true
			res, err := envoytest.New(h.client, ec).Do(context.Background(), &envoytest.Exchange{
				Body: zb.Bytes(), Header: http.Header{"Content-Encoding": {"gzip"}, "Content-Type": {"application/json"}},
				RequestChunker: envoytest.Fixed(16), Upstream: &envoytest.Upstream{},
			})
			if err != nil {
				t.Fatal(err)
			}
			noViolations(t, res)
			up := res.Upstream
			if up == nil || up.Header.Get("Content-Encoding") != "" || bytes.Contains(up.Body, []byte("logit_bias")) || !bytes.Contains(up.Body, []byte(`"top_logprobs":5`)) {
				t.Fatalf("forwarded %v %q", up.Header, up.Body)
			}
		})
	}
	h := newHarness(t, testConfig(func(p *config.Processing) { p.MaxBodyBytes, p.MaxHeldBytes = 1<<10, 1<<10 }), verdictScorer(scoring.Allow))
	var big bytes.Buffer
	zw = gzip.NewWriter(&big)
	zw.Write([]byte(`{"messages":[{"role":"user","content":"` + strings.Repeat("a", 1<<20) + `"}]}`))
	zw.Close()
	res, err := envoytest.New(h.client, envoyConfig(mBuffered, mStreamed)).Do(context.Background(), &envoytest.Exchange{
		Body: big.Bytes(), Header: http.Header{"Content-Encoding": {"gzip"}}, Upstream: &envoytest.Upstream{}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 413 || res.Upstream != nil {
		t.Fatalf("gzip bomb request: %d %q", res.Status, res.Body)
	}
}

// TestPathNormalized: routes and endpoints are matched on the path as
// servers route it, so a spelling that reaches the chat handler cannot
// pick a more lenient route.
func TestPathNormalized(t *testing.T) {
	cfg, err := config.Parse([]byte("policies:\n  strict:\n    allow:\n      request: {strip_logprobs: true, drop_logit_bias: true}\nroutes:\n  - path_prefix: /v1/chat/\n    policy: strict\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/v1/chat/completions", "/v1/%63hat/completions", "//v1/chat/completions", "/v1/x/../chat/completions", "/v1/./chat/completions?a=b"} {
		h := newHarness(t, cfg, verdictScorer(scoring.Allow))
		res, err := envoytest.New(h.client, envoyConfig(mBuffered, mStreamed)).Do(context.Background(), &envoytest.Exchange{
			Path: p, Body: []byte(probeBody), Header: http.Header{"Content-Type": {"application/json"}}, Upstream: &envoytest.Upstream{}})
		if err != nil {
			t.Fatal(err)
		}
		if res.Upstream == nil || bytes.Contains(res.Upstream.Body, []byte("logprobs")) {
			t.Errorf("%s: forwarded %q", p, res.Upstream.Body)
		}
		if got := res.Metadata["distillguard"].GetFields()["policy"].GetStringValue(); got != "strict" {
			t.Errorf("%s: policy %q", p, got)
		}
	}
	for in, want := range map[string]string{"/v1/%63hat/completions": "/v1/chat/completions", "/a//b/../c/": "/a/c/", "/x?y": "/x", "/%zz": "/%zz", "": "/"} {
		if got := normalizePath(in); got != want {
			t.Errorf("normalizePath(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestRouteIdentity: a route's identity sources reach the scorer; the
// Messages API puts x-api-key first by default.
func TestRouteIdentity(t *testing.T) {
	cfg, err := config.Parse([]byte("routes:\n  - path_prefix: /key/\n    policy: default\n    identity: [\"header:x-api-key\", client_ip]\n"))
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{"/key/v1/chat/completions": "header:x-api-key", "/v1/messages": "header:x-api-key", "/v1/chat/completions": ""} {
		sc := verdictScorer(scoring.Allow)
		h := newHarness(t, cfg, sc)
		if _, err := envoytest.New(h.client, envoyConfig(mBuffered, mStreamed)).Do(context.Background(), &envoytest.Exchange{
			Path: p, Body: []byte(probeBody), Upstream: &envoytest.Upstream{}}); err != nil {
			t.Fatal(err)
		}
		calls := sc.Calls()
		if len(calls) != 1 {
			t.Fatalf("%s: %d calls", p, len(calls))
		}
		got := ""
		if len(calls[0].Identity) > 0 {
			got = calls[0].Identity[0]
		}
		if got != want {
			t.Errorf("%s: identity %v, want %q first", p, calls[0].Identity, want)
		}
	}
}

// TestHeldBytesBound: past processing.max_held_total_bytes a request that
// must be held is answered 503 with retry-after, and a response the
// policy would change fails closed; the reservations are returned when
// the streams end.
func TestHeldBytesBound(t *testing.T) {
	cfg := testConfig(func(p *config.Processing) { p.MaxHeldTotalBytes = int64(p.MaxBodyBytes) })
	h := newHarness(t, cfg, verdictScorer(scoring.Allow))
	// Take nearly all of the bound, as held bodies of other streams would.
	hog := int64(cfg.Processing.MaxHeldTotalBytes) - 1000
	h.srv.mem.used.Add(hog)
	res, err := envoytest.New(h.client, envoyConfig(mBuffered, mStreamed)).Do(context.Background(), &envoytest.Exchange{
		Body: []byte(probeBody + strings.Repeat(" ", 2000)), Upstream: &envoytest.Upstream{}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 503 || res.Header.Get("Retry-After") == "" || res.Upstream != nil {
		t.Fatalf("request over the bound: %d %v %q", res.Status, res.Header, res.Body)
	}
	h.srv.mem.used.Add(-hog)
	waitFor(t, func() bool { return h.srv.Active() == 0 }, "streams to end")
	if u := h.srv.mem.used.Load(); u != 0 {
		t.Errorf("%d bytes still reserved with no stream", u)
	}
	// A response: the request fits, then the bound is taken.
	g := envoytest.NewGen(9)
	js := g.ChatCompletion(envoytest.Options{Logprobs: true, TopLogprobs: 20, Tokens: 100})
	up := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.srv.mem.used.Add(hog + 1000)
		w.Header().Set("Content-Type", "application/json")
		w.Write(js)
	})
	res, err = envoytest.New(h.client, envoyConfig(mBuffered, mStreamed)).Do(context.Background(), &envoytest.Exchange{Body: []byte(probeBody), Upstream: up})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 503 || bytes.Contains(res.Body, []byte("logprob")) {
		t.Fatalf("response over the bound: %d %q", res.Status, res.Body)
	}
	if n := h.counter(t, "distillguard_refusals", attribute.String("reason", refuseOverloaded)); n != 2 {
		t.Errorf("refusals{overloaded} = %d", n)
	}
}

// TestNothingRetainedBetweenMessages: once a stream's replies are sent, it
// keeps no reference to the last message's body or to the bytes of its
// replies.
func TestNothingRetainedBetweenMessages(t *testing.T) {
	srv, err := New(Options{Scorer: verdictScorer(scoring.Allow)})
	if err != nil {
		t.Fatal(err)
	}
	st := srv.newStream(context.Background())
	defer st.release()
	body := []byte(probeBody)
	st.handle(&extprocv3.ProcessingRequest{Attributes: envoytest.Attributes(time.Now(), "198.51.100.1:1"),
		Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: hmap(":path", "/v1/chat/completions", ":method", "POST")}}})
	st.sent()
	r := st.handle(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: body, EndOfStream: true}}})
	if len(r) != 1 || r[0].GetRequestBody().GetResponse().GetBodyMutation().GetBody() == nil {
		t.Fatalf("no rewritten body: %v", r)
	}
	st.sent()
	for i, rb := range st.replies {
		if rb.body.Body != nil || rb.br.Response != nil || rb.resp.Response != nil {
			t.Errorf("reply tree %d still points at its body", i)
		}
	}
	if len(st.out) != 0 || cap(st.rq.buf) != 0 || st.scratch.buf != nil {
		t.Errorf("stream keeps %d replies, %d request bytes, scratch %v", len(st.out), cap(st.rq.buf), st.scratch.buf != nil)
	}
}

// TestWarningsRateLimited: malformed messages are counted one by one but
// logged at most once per second per kind, with the number suppressed.
func TestWarningsRateLimited(t *testing.T) {
	var mu sync.Mutex
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(p)
	}), nil))
	h := newHarness(t, testConfig(nil), verdictScorer(scoring.Allow))
	h.srv.log = logger
	st := h.srv.newStream(context.Background())
	defer st.release()
	for range 2000 {
		st.handle(&extprocv3.ProcessingRequest{})
	}
	mu.Lock()
	lines := strings.Count(logs.String(), "ext_proc message without a request")
	mu.Unlock()
	if lines != 1 {
		t.Errorf("%d warning lines for 2000 malformed messages", lines)
	}
	if n := h.counter(t, "distillguard_protocol_errors", attribute.String("kind", protoEmptyRequest)); n != 2000 {
		t.Errorf("protocol_errors = %d", n)
	}
	l := newLogLimiter(time.Second)
	t0 := time.Unix(100, 0)
	var out bytes.Buffer
	lg := slog.New(slog.NewTextHandler(&out, nil))
	for i := range 5 {
		l.warn(lg, t0.Add(time.Duration(i)*100*time.Millisecond), "k", "m")
	}
	l.warn(lg, t0.Add(2*time.Second), "k", "m")
	if got := out.String(); strings.Count(got, "msg=m") != 2 || !strings.Contains(got, "suppressed=4") {
		t.Errorf("limiter output:\n%s", got)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

var _ io.Writer = writerFunc(nil)

// TestRefusalIsOpenAIStyle: the error body of a refusal.
func TestRefusalIsOpenAIStyle(t *testing.T) {
	srv, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	st := srv.newStream(context.Background())
	defer st.release()
	r := st.refuse(&mutate.RequestError{Status: 400, Reason: mutate.RefuseDuplicate, Param: "logit_bias", Message: `request body: duplicate member "logit_bias"`})
	ir := r.GetImmediateResponse()
	want := `{"error":{"message":"request body: duplicate member \"logit_bias\"","type":"invalid_request_error","param":"logit_bias","code":"invalid_request_body"}}`
	if ir.GetStatus().GetCode() != 400 || string(ir.GetBody()) != want || ir.GetDetails() != "distillguard_refused_duplicate_member" {
		t.Fatalf("got %d %s %s", ir.GetStatus().GetCode(), ir.GetBody(), ir.GetDetails())
	}
}

// TestGzipChunkBounded: with the default bounds, one 64 KiB chunk of a
// gzip bomb (decoding to 64 MiB) is refused, never turned into a reply
// larger than max_decoded_chunk_bytes.
func TestGzipChunkBounded(t *testing.T) {
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	zw.Write([]byte("data: "))
	zw.Write(bytes.Repeat([]byte(" "), 64<<20))
	zw.Close()
	h := newHarness(t, testConfig(nil), verdictScorer(scoring.Allow))
	res, err := envoytest.New(h.client, envoyConfig(mBuffered, mStreamed)).Do(context.Background(), &envoytest.Exchange{
		Body: chatBody, ResponseChunker: envoytest.Fixed(64 << 10),
		Upstream: fixedUpstream(200, http.Header{"Content-Type": {"text/event-stream"}, "Content-Encoding": {"gzip"}}, zb.Bytes()),
	})
	if err != nil {
		t.Fatal(err)
	}
	noViolations(t, res)
	if !res.Reset {
		t.Fatalf("got %d reset=%v, %d bytes", res.Status, res.Reset, len(res.Body))
	}
	for _, r := range res.Received {
		if n := len(r.GetResponseBody().GetResponse().GetBodyMutation().GetBody()); n > testConfig(nil).Processing.MaxDecodedChunkBytes {
			t.Fatalf("a %d-byte reply", n)
		}
	}
}

// TestUnreadableLogprobsNotPassed: a response that carries logprobs but is
// not JSON distillguard reads (Python's json.dumps writes -Infinity and
// NaN, which Python clients read back) is never passed unrewritten: the
// JSON document is refused, the SSE event dropped and the stream goes on.
func TestUnreadableLogprobsNotPassed(t *testing.T) {
	doc := []byte(`{"choices":[{"logprobs":{"content":[{"token":"a","logprob":-0.123456,"top_logprobs":[{"token":"b","logprob":-Infinity}]}]}}]}`)
	h := newHarness(t, testConfig(nil), verdictScorer(scoring.Allow))
	res, err := envoytest.New(h.client, envoyConfig(mBuffered, mStreamed)).Do(context.Background(), &envoytest.Exchange{
		Body: chatBody, Upstream: fixedUpstream(200, http.Header{"Content-Type": {"application/json"}}, doc)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 502 || bytes.Contains(res.Body, []byte("-0.123456")) {
		t.Fatalf("JSON: %d %q", res.Status, res.Body)
	}
	g := envoytest.NewGen(3)
	events := g.ChatStream(envoytest.Options{Tokens: 3, Logprobs: true, TopLogprobs: 2})
	stream := append(append(append([]byte(nil), events[0]...), []byte("data: "+string(doc)+"\n\n")...), envoytest.Join(events[1:])...)
	res, err = envoytest.New(h.client, envoyConfig(mBuffered, mStreamed)).Do(context.Background(), &envoytest.Exchange{
		Body: chatBody, ResponseChunker: envoytest.Fixed(100), Upstream: fixedUpstream(200, sseHeader(), stream)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 200 || bytes.Contains(res.Body, []byte("-0.123456")) || !bytes.Contains(res.Body, []byte("could not read")) || !bytes.HasSuffix(res.Body, []byte("data: [DONE]\n\n")) {
		t.Fatalf("SSE: %d %q", res.Status, res.Body)
	}
	if n := h.passthroughs(t, reasonSSEEventUnreadable); n != 1 {
		t.Errorf("passthroughs{sse_event_unreadable} = %d", n)
	}
}

// TestBodyModesThatHideTheBody: on a guarded route, request body mode NONE
// would let the body reach the upstream unread: refused. With the request
// headers skipped, the body is still read (under the default set) and
// rewritten.
func TestBodyModesThatHideTheBody(t *testing.T) {
	h := newHarness(t, testConfig(nil), verdictScorer(scoring.Allow))
	res, err := envoytest.New(h.client, envoyConfig(mNone, mStreamed)).Do(context.Background(), &envoytest.Exchange{
		Body: []byte(probeBody), Upstream: &envoytest.Upstream{}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 500 || res.Upstream != nil {
		t.Fatalf("NONE: %d %q, upstream reached %v", res.Status, res.Body, res.Upstream != nil)
	}
	ec := envoyConfig(mBuffered, mStreamed)
	ec.ProcessingMode.RequestHeaderMode = procv3.ProcessingMode_SKIP
	res, err = envoytest.New(h.client, ec).Do(context.Background(), &envoytest.Exchange{
		Body: []byte(probeBody), Upstream: &envoytest.Upstream{}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Upstream == nil || bytes.Contains(res.Upstream.Body, []byte("logit_bias")) || !bytes.Contains(res.Upstream.Body, []byte(`"top_logprobs":5`)) {
		t.Fatalf("headers skipped: forwarded %q", res.Upstream.Body)
	}
	res, err = envoytest.New(h.client, ec).Do(context.Background(), &envoytest.Exchange{
		Body: []byte(`{"x":NaN,` + probeBody[1:]), Upstream: &envoytest.Upstream{}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 400 || res.Upstream != nil {
		t.Fatalf("headers skipped, NaN: %d, upstream reached %v", res.Status, res.Upstream != nil)
	}
}
