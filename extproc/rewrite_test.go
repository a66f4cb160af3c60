package extproc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"testing"

	procv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/extproc/envoytest"
	"github.com/distillguard/distillguard/scoring"
)

// fixedUpstream answers every request with body (and the given headers).
func fixedUpstream(status int, header http.Header, body []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, vs := range header {
			for _, v := range vs {
				w.Header().Add(k, v)
			}
		}
		w.WriteHeader(status)
		w.Write(body)
	})
}

func sseHeader() http.Header { return http.Header{"Content-Type": {"text/event-stream"}} }

// TestStreamRewrite sends randomized chat and legacy completion streams
// (0..20 alternatives per position) through every response body mode and
// many chunkings, and checks: as many events out as in, every logprob
// rounded per the allow tier, at most its alternatives, every other byte
// unchanged, and byte-identical output whatever the chunking or mode.
func TestStreamRewrite(t *testing.T) {
	requireRealMutate(t)
	cfg := testConfig(nil)
	allow := cfg.Resolve("/v1/chat/completions", "", scoring.Allow).Output
	h := newHarness(t, cfg, verdictScorer(scoring.Allow))
	ctx := context.Background()

	type mode struct {
		name string
		resp procv3.ProcessingMode_BodySendMode
	}
	modes := []mode{{"streamed", mStreamed}, {"duplex", mDuplex}, {"buffered", mBuffered}}
	rounded := 0
	for seed := uint64(1); seed <= 8; seed++ {
		r := rand.New(rand.NewPCG(seed, 7))
		g := envoytest.NewGen(seed)
		top := r.IntN(21)
		tokens := 1 + r.IntN(10)
		if seed <= 2 {
			top, tokens = 3+int(seed), 2 // small enough for one message per byte
		}
		path := "/v1/chat/completions"
		var events [][]byte
		if seed%2 == 0 {
			path = "/v1/completions"
			events = g.CompletionStream(envoytest.Options{Tokens: tokens, Logprobs: true, TopLogprobs: top, Usage: seed%4 == 0})
		} else {
			events = g.ChatStream(envoytest.Options{Tokens: tokens, Logprobs: true, TopLogprobs: top, Usage: seed%3 == 0})
		}
		in := envoytest.Join(events)
		chunkers := map[string]envoytest.Chunker{
			"whole":   envoytest.Whole(),
			"small":   envoytest.Random(seed+7, 3, false),
			"rand7":   envoytest.Random(seed, 7, true),
			"rand300": envoytest.Random(seed+100, 300, true),
			"events":  envoytest.At(len(events[0]), len(events[0])+1, len(events[0])+1, len(in)-3),
		}
		if len(in) < 8<<10 {
			chunkers["1byte"] = envoytest.Bytes()
		}
		var want []byte
		for _, m := range modes {
			for cname, ch := range chunkers {
				t.Run(fmt.Sprintf("seed%d/%s/%s", seed, m.name, cname), func(t *testing.T) {
					cfgEnvoy := envoyConfig(mBuffered, m.resp)
					if m.resp == mBuffered {
						cfgEnvoy.AllowModeOverride = false // stay BUFFERED
					}
					res, err := envoytest.New(h.client, cfgEnvoy).Do(ctx, &envoytest.Exchange{
						Path: path, Body: []byte(`{"model":"m","stream":true,"logprobs":true}`),
						Header:          http.Header{"Content-Type": {"application/json"}},
						ResponseChunker: ch,
						Upstream:        fixedUpstream(200, sseHeader(), in),
					})
					if err != nil {
						t.Fatal(err)
					}
					noViolations(t, res)
					if res.Status != 200 {
						t.Fatalf("status %d", res.Status)
					}
					inEv, outEv := sseEvents(in), sseEvents(res.Body)
					if len(inEv) != len(outEv) {
						t.Fatalf("%d events in, %d out", len(inEv), len(outEv))
					}
					for i := range inEv {
						di, do := eventData(inEv[i]), eventData(outEv[i])
						if bytes.Equal(di, []byte("[DONE]")) {
							if !bytes.Equal(inEv[i], outEv[i]) {
								t.Fatalf("[DONE] event changed: %q", outEv[i])
							}
							continue
						}
						c := &rewriteCheck{in: di, out: do, dec: allow.RoundDecimals, maxAlt: allow.MaxAlternatives}
						if err := c.run(); err != nil {
							t.Fatalf("event %d: %v", i, err)
						}
						rounded += c.rounded
					}
					if want == nil {
						want = bytes.Clone(res.Body)
					} else if !bytes.Equal(want, res.Body) {
						t.Fatalf("output differs from the first mode/chunking:\nfirst: %q\n this: %q", want, res.Body)
					}
				})
			}
		}
	}
	if rounded == 0 {
		t.Fatal("no logprob was rewritten in any stream")
	}
	if n := h.counter(t, "distillguard_events_rewritten"); n == 0 {
		t.Error("distillguard_events_rewritten stayed 0")
	}
}

// TestResponsesAPIStream covers the Responses API event shape (event:
// lines, logprobs arrays on delta and done events).
func TestResponsesAPIStream(t *testing.T) {
	requireRealMutate(t)
	cfg := testConfig(nil)
	allow := cfg.Resolve("/v1/responses", "", scoring.Allow).Output
	h := newHarness(t, cfg, verdictScorer(scoring.Allow))
	g := envoytest.NewGen(42)
	events := g.ResponsesStream(envoytest.Options{Tokens: 6, Logprobs: true, TopLogprobs: 12})
	in := envoytest.Join(events)
	res, err := envoytest.New(h.client, envoyConfig(mBuffered, mStreamed)).Do(context.Background(), &envoytest.Exchange{
		Path: "/v1/responses", Body: []byte(`{"model":"m","stream":true,"top_logprobs":12}`),
		ResponseChunker: envoytest.Random(3, 40, true),
		Upstream:        fixedUpstream(200, sseHeader(), in),
	})
	if err != nil {
		t.Fatal(err)
	}
	noViolations(t, res)
	inEv, outEv := sseEvents(in), sseEvents(res.Body)
	if len(inEv) != len(outEv) {
		t.Fatalf("%d events in, %d out", len(inEv), len(outEv))
	}
	for i := range inEv {
		if !bytes.Equal(bytes.SplitN(inEv[i], []byte("\n"), 2)[0], bytes.SplitN(outEv[i], []byte("\n"), 2)[0]) {
			t.Fatalf("event line changed: %q", outEv[i])
		}
		c := &rewriteCheck{in: eventData(inEv[i]), out: eventData(outEv[i]), dec: allow.RoundDecimals, maxAlt: allow.MaxAlternatives}
		if err := c.run(); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
}

// TestRequestRewrite: a request asking for logprobs with logit_bias reaches
// the upstream without logit_bias, with top_logprobs capped and a correct
// content-length, in every request body mode.
func TestRequestRewrite(t *testing.T) {
	requireRealMutate(t)
	body := []byte(`{"model":"gpt-x","messages":[{"role":"user","content":"hi"}],"logprobs":true,"top_logprobs":20,"logit_bias":{"1734":100,"9906":-100},"max_tokens":4}`)
	for _, m := range []procv3.ProcessingMode_BodySendMode{mBuffered, mStreamed, mDuplex, mPartial} {
		t.Run(m.String(), func(t *testing.T) {
			up := &envoytest.Upstream{Seed: 1}
			h := newHarness(t, testConfig(nil), verdictScorer(scoring.Allow))
			ec := envoyConfig(m, mStreamed)
			ec.AllowContentLengthHeader = true // make the processor responsible for it
			res, err := envoytest.New(h.client, ec).Do(context.Background(), &envoytest.Exchange{
				Body: body, Header: http.Header{"Content-Type": {"application/json"}},
				RequestChunker: envoytest.Fixed(17), Upstream: up,
			})
			if err != nil {
				t.Fatal(err)
			}
			noViolations(t, res)
			got := res.Upstream.Body
			var req map[string]any
			if err := json.Unmarshal(got, &req); err != nil {
				t.Fatalf("upstream body is not JSON: %v: %s", err, got)
			}
			if _, ok := req["logit_bias"]; ok {
				t.Errorf("logit_bias reached the upstream: %s", got)
			}
			if tl, _ := req["top_logprobs"].(float64); tl > 5 {
				t.Errorf("top_logprobs %v reached the upstream", tl)
			}
			if cl := res.Upstream.Header.Get("Content-Length"); cl != "" && cl != strconv.Itoa(len(got)) {
				t.Errorf("content-length %s for a %d-byte body", cl, len(got))
			}
			if res.Status != 200 {
				t.Errorf("status %d", res.Status)
			}
		})
	}
}

// TestBufferedJSONResponse: a non-streamed completion comes back rewritten
// with a content-length that matches (Envoy rejects a replaced BUFFERED body
// otherwise), with and without a mode override, and gzip-encoded.
func TestBufferedJSONResponse(t *testing.T) {
	cases := []struct {
		name     string
		respMode procv3.ProcessingMode_BodySendMode
		override bool
		gzip     bool
	}{
		{"buffered", mBuffered, false, false},
		{"override-from-streamed", mStreamed, true, false},
		{"streamed-no-override", mStreamed, false, false},
		{"buffered-gzip", mBuffered, false, true},
		{"duplex", mDuplex, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, testConfig(func(p *config.Processing) { p.IdentityEncoding = false }), verdictScorer(scoring.Allow))
			up := &envoytest.Upstream{Seed: 9, Gzip: tc.gzip}
			ec := envoyConfig(mBuffered, tc.respMode)
			ec.AllowModeOverride = tc.override
			ec.AllowContentLengthHeader = true
			hdr := http.Header{"Content-Type": {"application/json"}}
			if tc.gzip {
				hdr.Set("Accept-Encoding", "gzip")
			}
			res, err := envoytest.New(h.client, ec).Do(context.Background(), &envoytest.Exchange{
				Body:   []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"logprobs":true,"top_logprobs":5,"max_tokens":6}`),
				Header: hdr, Upstream: up, ResponseChunker: envoytest.Fixed(100),
			})
			if err != nil {
				t.Fatal(err)
			}
			noViolations(t, res)
			if res.Status != 200 {
				t.Fatalf("status %d", res.Status)
			}
			if cl := res.Header.Get("Content-Length"); cl != "" && cl != strconv.Itoa(len(res.Body)) {
				t.Errorf("content-length %s for a %d-byte body", cl, len(res.Body))
			}
			if tc.override && res.ModeOverrides != 1 {
				t.Errorf("mode overrides honoured: %d, want 1", res.ModeOverrides)
			}
			if !realMutate() {
				return
			}
			if res.Header.Get("Content-Encoding") != "" {
				t.Errorf("content-encoding %q left on a decoded body", res.Header.Get("Content-Encoding"))
			}
			var doc struct {
				Choices []struct {
					Logprobs struct {
						Content []struct {
							Logprob float64 `json:"logprob"`
							Top     []any   `json:"top_logprobs"`
						} `json:"content"`
					} `json:"logprobs"`
				} `json:"choices"`
			}
			if err := json.Unmarshal(res.Body, &doc); err != nil {
				t.Fatalf("client body: %v: %.200s", err, res.Body)
			}
			for _, c := range doc.Choices[0].Logprobs.Content {
				if s := strconv.FormatFloat(c.Logprob, 'f', -1, 64); len(s) > len("-00.00") {
					t.Errorf("logprob %s not rounded", s)
				}
			}
		})
	}
}
