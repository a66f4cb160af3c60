package envoytest

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	procv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/structpb"
)

// script is a processor whose replies a test chooses per message; a nil
// answer means "answer nothing".
type script struct {
	extprocv3.UnimplementedExternalProcessorServer
	answer func(*extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse
}

func (s *script) Process(ps extprocv3.ExternalProcessor_ProcessServer) error {
	for {
		req, err := ps.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, r := range s.answer(req) {
			if err := ps.Send(r); err != nil {
				return err
			}
		}
	}
}

func dial(t *testing.T, srv extprocv3.ExternalProcessorServer) extprocv3.ExternalProcessorClient {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer()
	extprocv3.RegisterExternalProcessorServer(gs, srv)
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(); gs.Stop(); <-done })
	return extprocv3.NewExternalProcessorClient(conn)
}

// passthrough answers every message with an empty reply of its kind.
func passthrough(req *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
	switch req.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{}}}
	case *extprocv3.ProcessingRequest_RequestBody:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{}}}
	case *extprocv3.ProcessingRequest_RequestTrailers:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{RequestTrailers: &extprocv3.TrailersResponse{}}}
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}}}
	case *extprocv3.ProcessingRequest_ResponseBody:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{}}}
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{ResponseTrailers: &extprocv3.TrailersResponse{}}}
	}
	return nil
}

func mode(req, resp procv3.ProcessingMode_BodySendMode) *procv3.ProcessingMode {
	return &procv3.ProcessingMode{RequestBodyMode: req, ResponseBodyMode: resp}
}

func echo() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Got-Auth", r.Header.Get("X-Auth"))
		w.Write(b)
	})
}

func setHdr(k, v string, raw bool) *extprocv3.HeaderMutation {
	hv := &corev3.HeaderValue{Key: k}
	if raw {
		hv.RawValue = []byte(v)
	} else {
		hv.Value = v
	}
	return &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{{Header: hv}}}
}

// TestEmulatorFollowsEnvoy drives misbehaving and well-behaved processors
// and checks the emulator reacts as Envoy does.
func TestEmulatorFollowsEnvoy(t *testing.T) {
	body := []byte(`{"model":"m","prompt":"hello"}`)
	cases := []struct {
		name      string
		cfg       Config
		answer    func(*extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse
		status    int
		violation string // substring of a recorded violation; "" for none
		check     func(t *testing.T, r *Result)
	}{
		{
			name: "passthrough-streamed",
			cfg:  Config{ProcessingMode: mode(procv3.ProcessingMode_STREAMED, procv3.ProcessingMode_STREAMED)},
			answer: func(r *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
				return []*extprocv3.ProcessingResponse{passthrough(r)}
			},
			status: 200,
			check: func(t *testing.T, r *Result) {
				if !bytes.Equal(r.Body, body) || r.Upstream.Header.Get("Content-Length") != "" {
					t.Errorf("body %q, upstream content-length %q (Envoy strips it in STREAMED)", r.Body, r.Upstream.Header.Get("Content-Length"))
				}
			},
		},
		{
			name: "value-only-header",
			cfg:  Config{ProcessingMode: mode(procv3.ProcessingMode_NONE, procv3.ProcessingMode_NONE)},
			answer: func(r *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
				p := passthrough(r)
				if rh := p.GetRequestHeaders(); rh != nil {
					rh.Response = &extprocv3.CommonResponse{HeaderMutation: setHdr("x-auth", "secret", false)}
				}
				return []*extprocv3.ProcessingResponse{p}
			},
			status: 200, violation: "value only",
			check: func(t *testing.T, r *Result) {
				if v, ok := r.Upstream.Header["X-Auth"]; !ok || v[0] != "" {
					t.Errorf("x-auth %q, want present and empty", v)
				}
			},
		},
		{
			name: "buffered-wrong-content-length",
			cfg:  Config{ProcessingMode: mode(procv3.ProcessingMode_BUFFERED, procv3.ProcessingMode_NONE)},
			answer: func(r *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
				p := passthrough(r)
				if rb := p.GetRequestBody(); rb != nil {
					rb.Response = &extprocv3.CommonResponse{BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: []byte("{}")}}}
				}
				return []*extprocv3.ProcessingResponse{p}
			},
			status: 500, violation: "mismatch between content length",
		},
		{
			name: "buffered-right-content-length",
			cfg:  Config{ProcessingMode: mode(procv3.ProcessingMode_BUFFERED, procv3.ProcessingMode_NONE)},
			answer: func(r *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
				p := passthrough(r)
				if rb := p.GetRequestBody(); rb != nil {
					rb.Response = &extprocv3.CommonResponse{HeaderMutation: setHdr("content-length", "2", true),
						BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: []byte("{}")}}}
				}
				return []*extprocv3.ProcessingResponse{p}
			},
			status: 200,
			check: func(t *testing.T, r *Result) {
				if string(r.Upstream.Body) != "{}" || r.Upstream.Header.Get("Content-Length") != "2" {
					t.Errorf("upstream %q cl %q", r.Upstream.Body, r.Upstream.Header.Get("Content-Length"))
				}
			},
		},
		{
			name: "streamed-response-outside-duplex",
			cfg:  Config{ProcessingMode: mode(procv3.ProcessingMode_STREAMED, procv3.ProcessingMode_NONE)},
			answer: func(r *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
				p := passthrough(r)
				if rb := p.GetRequestBody(); rb != nil {
					rb.Response = &extprocv3.CommonResponse{BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_StreamedResponse{
						StreamedResponse: &extprocv3.StreamedBodyResponse{Body: []byte("x"), EndOfStream: true}}}}
				}
				return []*extprocv3.ProcessingResponse{p}
			},
			status: 500, violation: "streamed_response",
		},
		{
			name: "spurious-fail-open",
			cfg:  Config{ProcessingMode: mode(procv3.ProcessingMode_BUFFERED, procv3.ProcessingMode_NONE), FailureModeAllow: true},
			answer: func(r *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
				if r.GetRequestBody() != nil { // answer a body with a trailers reply
					return []*extprocv3.ProcessingResponse{{Response: &extprocv3.ProcessingResponse_RequestTrailers{RequestTrailers: &extprocv3.TrailersResponse{}}}}
				}
				return []*extprocv3.ProcessingResponse{passthrough(r)}
			},
			status: 200, violation: "spurious",
			check: func(t *testing.T, r *Result) {
				if !bytes.Equal(r.Upstream.Body, body) {
					t.Errorf("fail-open did not forward the original body: %q", r.Upstream.Body)
				}
			},
		},
		{
			name: "duplex-normal-mutation",
			cfg: Config{ProcessingMode: &procv3.ProcessingMode{RequestBodyMode: procv3.ProcessingMode_FULL_DUPLEX_STREAMED,
				RequestTrailerMode: procv3.ProcessingMode_SEND}},
			answer: func(r *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
				return []*extprocv3.ProcessingResponse{passthrough(r)}
			},
			status: 500, violation: "normal body mutation",
		},
		{
			name: "duplex-held-headers",
			cfg: Config{ProcessingMode: &procv3.ProcessingMode{RequestBodyMode: procv3.ProcessingMode_FULL_DUPLEX_STREAMED,
				RequestTrailerMode: procv3.ProcessingMode_SEND}},
			answer: func() func(r *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
				var held []byte
				return func(r *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
					switch {
					case r.GetRequestHeaders() != nil:
						return nil // held until the body is known
					case r.GetRequestBody() != nil:
						held = append(held, r.GetRequestBody().GetBody()...)
						if !r.GetRequestBody().GetEndOfStream() {
							return nil
						}
						return []*extprocv3.ProcessingResponse{
							{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{}}},
							{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{
								BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_StreamedResponse{
									StreamedResponse: &extprocv3.StreamedBodyResponse{Body: bytes.ToUpper(held), EndOfStream: true}}}}}}},
						}
					}
					return []*extprocv3.ProcessingResponse{passthrough(r)}
				}
			}(),
			status: 200,
			check: func(t *testing.T, r *Result) {
				if !bytes.Equal(r.Upstream.Body, bytes.ToUpper(body)) {
					t.Errorf("upstream body %q", r.Upstream.Body)
				}
			},
		},
		{
			name: "immediate-and-metadata",
			cfg:  Config{ProcessingMode: mode(procv3.ProcessingMode_BUFFERED, procv3.ProcessingMode_NONE), ReceivingNamespaces: []string{"ok"}},
			answer: func(r *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
				if r.GetRequestBody() == nil {
					return []*extprocv3.ProcessingResponse{passthrough(r)}
				}
				md, _ := structpb.NewStruct(map[string]any{"ok": map[string]any{"v": "1"}, "nope": map[string]any{"v": "2"}})
				return []*extprocv3.ProcessingResponse{{DynamicMetadata: md, Response: &extprocv3.ProcessingResponse_ImmediateResponse{
					ImmediateResponse: &extprocv3.ImmediateResponse{Status: &typev3.HttpStatus{Code: 418}, Body: []byte("teapot"),
						Headers: setHdr("content-type", "application/json", true), Details: "no coffee"}}}}
			},
			status: 418,
			check: func(t *testing.T, r *Result) {
				if r.Upstream != nil || string(r.Body) != "teapot" || r.Header.Get("Content-Type") != "application/json" || r.LocalReply != "no_coffee" {
					t.Errorf("local reply %d %q %v %q", r.Status, r.Body, r.Header, r.LocalReply)
				}
				if len(r.Metadata) != 1 || r.Metadata["ok"] == nil || r.MetadataOn[0] != "immediate_response" {
					t.Errorf("metadata %v on %v", r.Metadata, r.MetadataOn)
				}
			},
		},
		{
			name: "mode-override-honoured",
			cfg:  Config{ProcessingMode: mode(procv3.ProcessingMode_NONE, procv3.ProcessingMode_STREAMED), AllowModeOverride: true},
			answer: func(r *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
				p := passthrough(r)
				if r.GetResponseHeaders() != nil {
					p.ModeOverride = mode(procv3.ProcessingMode_NONE, procv3.ProcessingMode_BUFFERED)
				}
				if r.GetResponseBody() != nil && !r.GetResponseBody().GetEndOfStream() {
					return nil // a BUFFERED body must arrive whole; hang up instead of answering
				}
				return []*extprocv3.ProcessingResponse{p}
			},
			status: 200,
			check: func(t *testing.T, r *Result) {
				if r.ModeOverrides != 1 || r.ResponseMode != procv3.ProcessingMode_BUFFERED {
					t.Errorf("override %d mode %v", r.ModeOverrides, r.ResponseMode)
				}
			},
		},
		{
			name: "message-timeout",
			cfg:  Config{ProcessingMode: mode(procv3.ProcessingMode_BUFFERED, procv3.ProcessingMode_NONE), MessageTimeout: 50 * time.Millisecond},
			answer: func(r *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
				return nil // never answers
			},
			status: 504,
		},
		{
			name: "message-timeout-fail-open",
			cfg: Config{ProcessingMode: mode(procv3.ProcessingMode_BUFFERED, procv3.ProcessingMode_NONE), MessageTimeout: 50 * time.Millisecond,
				FailureModeAllow: true},
			answer: func(r *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse { return nil },
			status: 200,
			check: func(t *testing.T, r *Result) {
				if !bytes.Equal(r.Body, body) {
					t.Errorf("fail-open body %q", r.Body)
				}
			},
		},
		{
			name: "reply-in-observability-mode",
			cfg:  Config{ProcessingMode: mode(procv3.ProcessingMode_STREAMED, procv3.ProcessingMode_NONE), ObservabilityMode: true},
			answer: func(r *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
				return []*extprocv3.ProcessingResponse{passthrough(r)}
			},
			status: 200, violation: "after the exchange",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			client := dial(t, &script{answer: tc.answer})
			res, err := New(client, tc.cfg).Do(context.Background(), &Exchange{
				Body: body, Header: http.Header{"Content-Type": {"application/json"}},
				RequestChunker: Fixed(7), ResponseChunker: Fixed(5), Upstream: echo(),
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != tc.status {
				t.Errorf("status %d, want %d (%s)", res.Status, tc.status, res.LocalReply)
			}
			found := tc.violation == ""
			for _, v := range res.Violations {
				if tc.violation == "" {
					t.Errorf("unexpected violation: %s", v)
				} else if strings.Contains(v, tc.violation) {
					found = true
				}
			}
			if !found {
				t.Errorf("violation %q not recorded (got %v)", tc.violation, res.Violations)
			}
			if tc.check != nil {
				tc.check(t, res)
			}
		})
	}
}

// TestUpstream checks the mock's endpoints against the API shapes.
func TestUpstream(t *testing.T) {
	u := &Upstream{Seed: 1, Gzip: true}
	do := func(path, body string, gz bool) *http.Response {
		req := httptest.NewRequest("POST", path, strings.NewReader(body))
		if gz {
			req.Header.Set("Accept-Encoding", "gzip")
		}
		rec := httptest.NewRecorder()
		u.ServeHTTP(rec, req)
		return rec.Result()
	}
	read := func(r *http.Response) []byte {
		var rd io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				t.Fatal(err)
			}
			rd = zr
		}
		b, err := io.ReadAll(rd)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	t.Run("chat-stream", func(t *testing.T) {
		r := do("/v1/chat/completions", `{"model":"x","stream":true,"logprobs":true,"top_logprobs":17,"max_tokens":5,"stream_options":{"include_usage":true}}`, false)
		if r.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
			t.Fatalf("content-type %q", r.Header.Get("Content-Type"))
		}
		events := strings.Split(strings.TrimSuffix(string(read(r)), "\n\n"), "\n\n")
		if events[len(events)-1] != "data: [DONE]" || len(events) != 1+5+1+1+1 {
			t.Fatalf("%d events, last %q", len(events), events[len(events)-1])
		}
		var c struct {
			Model   string
			Choices []struct {
				Logprobs struct {
					Content []struct {
						TopLogprobs []any `json:"top_logprobs"`
					}
				}
			}
		}
		if err := json.Unmarshal([]byte(strings.TrimPrefix(events[1], "data: ")), &c); err != nil {
			t.Fatal(err)
		}
		if c.Model != "x" || len(c.Choices[0].Logprobs.Content[0].TopLogprobs) != 17 {
			t.Errorf("token event %s", events[1])
		}
		for _, e := range events[:len(events)-1] {
			if !json.Valid([]byte(strings.TrimPrefix(e, "data: "))) {
				t.Errorf("invalid event %q", e)
			}
		}
	})
	t.Run("deterministic-and-gzip", func(t *testing.T) {
		body := `{"model":"x","logprobs":true,"top_logprobs":3}`
		_, before := u.LastRequest()
		a, b := read(do("/v1/chat/completions", body, true)), read(do("/v1/chat/completions", body, false))
		if !bytes.Equal(a, b) || !json.Valid(a) {
			t.Errorf("responses differ or are not JSON")
		}
		if rec, n := u.LastRequest(); string(rec.Body) != body || n-before != 2 {
			t.Errorf("last request %q (%d)", rec.Body, n)
		}
	})
	t.Run("completions", func(t *testing.T) {
		var c struct {
			Object  string
			Choices []struct {
				Logprobs struct {
					Tokens      []string
					TopLogprobs []map[string]float64 `json:"top_logprobs"`
				}
			}
		}
		if err := json.Unmarshal(read(do("/v1/completions", `{"prompt":"a","logprobs":3,"max_tokens":4}`, false)), &c); err != nil {
			t.Fatal(err)
		}
		if c.Object != "text_completion" || len(c.Choices[0].Logprobs.Tokens) != 4 || len(c.Choices[0].Logprobs.TopLogprobs[0]) == 0 {
			t.Errorf("completion %+v", c)
		}
	})
	t.Run("responses-stream", func(t *testing.T) {
		out := string(read(do("/v1/responses", `{"stream":true,"top_logprobs":2,"include":["message.output_text.logprobs"],"max_output_tokens":3}`, false)))
		if strings.Count(out, "event: response.output_text.delta\n") != 3 || !strings.Contains(out, `"top_logprobs":[{`) || strings.Contains(out, "[DONE]") {
			t.Errorf("responses stream %.300s", out)
		}
		var o struct{ Object, Status string }
		if err := json.Unmarshal(read(do("/v1/responses", `{"max_output_tokens":3}`, false)), &o); err != nil || o.Object != "response" || o.Status != "completed" {
			t.Errorf("responses body %+v %v", o, err)
		}
	})
	t.Run("embeddings", func(t *testing.T) {
		var e struct {
			Data []struct{ Embedding json.RawMessage }
		}
		if err := json.Unmarshal(read(do("/v1/embeddings", `{"input":["a","b"],"dimensions":7,"encoding_format":"base64"}`, false)), &e); err != nil {
			t.Fatal(err)
		}
		var s string
		json.Unmarshal(e.Data[1].Embedding, &s)
		raw, err := base64.StdEncoding.DecodeString(s)
		if len(e.Data) != 2 || err != nil || len(raw) != 28 {
			t.Errorf("base64 embedding: %d items, %d bytes, %v", len(e.Data), len(raw), err)
		}
		if err := json.Unmarshal(read(do("/v1/embeddings", `{"input":"a"}`, false)), &e); err != nil {
			t.Fatal(err)
		}
		var f []float64
		if json.Unmarshal(e.Data[0].Embedding, &f) != nil || len(f) != 16 {
			t.Errorf("float embedding of %d dims", len(f))
		}
	})
	t.Run("errors", func(t *testing.T) {
		if r := do("/v1/nope", `{}`, false); r.StatusCode != 404 {
			t.Errorf("status %d", r.StatusCode)
		}
		if r := do("/v1/chat/completions", `{`, false); r.StatusCode != 400 {
			t.Errorf("status %d", r.StatusCode)
		}
	})
}

// TestChunkers: every chunker covers the body exactly.
func TestChunkers(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 77)
	for name, c := range map[string]Chunker{
		"whole": Whole(), "fixed": Fixed(13), "bytes": Bytes(), "random": Random(5, 40, true),
		"random-nonempty": Random(6, 3, false), "at": At(0, 0, 5, 900, 3),
	} {
		parts := c(body)
		if got := bytes.Join(parts, nil); !bytes.Equal(got, body) {
			t.Errorf("%s: pieces do not concatenate to the body", name)
		}
		if name == "random-nonempty" {
			for _, p := range parts {
				if len(p) == 0 {
					t.Errorf("%s: empty piece", name)
				}
			}
		}
	}
}
