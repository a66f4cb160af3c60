package extproc

import (
	"bytes"
	"context"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/proto"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/extproc/envoytest"
	"github.com/distillguard/distillguard/scoring"
)

// checkReplyReuse plays msgs on two streams of srv: one as Process drives
// it (reply trees reused across messages, output scratch handed back to the
// server's pool after each message), one that never reuses anything. Every
// message must get the same replies from both: reuse may not leak a field
// of an earlier reply (metadata, a header mutation, a cleared body, an
// end_of_stream) into a later one, nor a pooled buffer's old bytes.
func checkReplyReuse(t *testing.T, srv *Server, msgs []*extprocv3.ProcessingRequest) {
	t.Helper()
	reused := srv.newStream(context.Background())
	defer reused.release()
	fresh := srv.newStream(context.Background())
	defer fresh.release()
	for i, m := range msgs {
		got := cloneReplies(reused.handle(m))
		reused.sent()
		want := cloneReplies(fresh.handle(m))
		// The next message gets new reply trees and a new output buffer
		// (an empty non-nil one is never taken from the pool).
		fresh.replies = nil
		fresh.scratch.buf, fresh.scratch.box = []byte{}, nil
		if len(got) != len(want) {
			t.Fatalf("message %d: %d replies with reuse, %d without", i, len(got), len(want))
		}
		for k := range got {
			if !proto.Equal(got[k], want[k]) {
				t.Fatalf("message %d reply %d differs with reuse:\n got %v\nwant %v", i, k, got[k], want[k])
			}
		}
	}
}

func cloneReplies(rs []*extprocv3.ProcessingResponse) []*extprocv3.ProcessingResponse {
	out := make([]*extprocv3.ProcessingResponse, len(rs))
	for i, r := range rs {
		out[i] = proto.Clone(r).(*extprocv3.ProcessingResponse)
	}
	return out
}

// TestReplyReuse runs exchanges through every path that builds body
// replies (held and released request chunks with metadata, rewritten and
// untouched SSE events, a cut event, a buffered JSON body with
// content-length, FULL_DUPLEX_STREAMED releases larger than 64 KiB, i.e.
// more replies per message than a stream keeps, trailers) with and without
// reuse.
func TestReplyReuse(t *testing.T) {
	requireRealMutate(t)
	g := envoytest.NewGen(3)
	events := g.ChatStream(envoytest.Options{Tokens: 6, Logprobs: true, TopLogprobs: 5})
	sse := envoytest.Join(events)
	plain := envoytest.Join(g.ChatStream(envoytest.Options{Tokens: 4}))
	js := g.ChatCompletion(envoytest.Options{Tokens: 8, Logprobs: true, TopLogprobs: 3})
	big := bytes.Repeat(append(bytes.Clone(events[1]), events[2]...), 300) // > 128 KiB of SSE
	reqJSON := []byte(`{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}],"logprobs":true,"top_logprobs":20,"logit_bias":{"5":1}}`)
	chat := []string{":path", "/v1/chat/completions", ":method", "POST", "content-type", "application/json", "content-length", "120", "accept-encoding", "gzip", "authorization", "Bearer t"}
	sseHdr := []string{":status", "200", "content-type", "text/event-stream"}

	type tc struct {
		name    string
		mode    *extprocv3.ProtocolConfiguration
		verdict scoring.Verdict
		msgs    []*extprocv3.ProcessingRequest
	}
	var streamedSSE []*extprocv3.ProcessingRequest
	streamedSSE = append(streamedSSE, envoytest.RequestHeaders(envoytest.HeaderMap(chat...), false), envoytest.RequestBody(reqJSON[:30], false), envoytest.RequestBody(reqJSON[30:], true), envoytest.ResponseHeaders(envoytest.HeaderMap(sseHdr...), false))
	for _, e := range events {
		streamedSSE = append(streamedSSE, envoytest.ResponseBody(e, false))
	}
	streamedSSE = append(streamedSSE, envoytest.ResponseBody(nil, true))
	cases := []tc{
		{"streamed", &extprocv3.ProtocolConfiguration{RequestBodyMode: mStreamed, ResponseBodyMode: mStreamed}, scoring.Allow, streamedSSE},
		{"streamed-degrade", &extprocv3.ProtocolConfiguration{RequestBodyMode: mStreamed, ResponseBodyMode: mStreamed}, scoring.Degrade, streamedSSE},
		{"split-events", &extprocv3.ProtocolConfiguration{RequestBodyMode: mBuffered, ResponseBodyMode: mStreamed}, scoring.Allow, []*extprocv3.ProcessingRequest{
			envoytest.RequestHeaders(envoytest.HeaderMap(chat...), false), envoytest.RequestBody(reqJSON, true), envoytest.ResponseHeaders(envoytest.HeaderMap(sseHdr...), false),
			envoytest.ResponseBody(sse[:17], false), envoytest.ResponseBody(sse[17:400], false), envoytest.ResponseBody(plain, false), envoytest.ResponseBody(sse[400:], false),
			envoytest.ResponseTrailers(nil),
		}},
		{"buffered-json", &extprocv3.ProtocolConfiguration{RequestBodyMode: mBuffered, ResponseBodyMode: mBuffered}, scoring.Allow, []*extprocv3.ProcessingRequest{
			envoytest.RequestHeaders(envoytest.HeaderMap(chat...), false), envoytest.RequestBody(reqJSON, true),
			envoytest.ResponseHeaders(envoytest.HeaderMap(":status", "200", "content-type", "application/json", "content-length", "999"), false), envoytest.ResponseBody(js, true),
		}},
		{"duplex-large", &extprocv3.ProtocolConfiguration{RequestBodyMode: mDuplex, ResponseBodyMode: mDuplex}, scoring.Allow, []*extprocv3.ProcessingRequest{
			envoytest.RequestHeaders(envoytest.HeaderMap(chat...), false), envoytest.RequestBody(reqJSON[:50], false), envoytest.RequestBody(reqJSON[50:], true), envoytest.ResponseHeaders(envoytest.HeaderMap(sseHdr...), false),
			envoytest.ResponseBody(big, false), envoytest.ResponseBody(events[3], false), envoytest.ResponseBody(big, true),
		}},
		{"rejected", &extprocv3.ProtocolConfiguration{RequestBodyMode: mStreamed, ResponseBodyMode: mStreamed}, scoring.Block, []*extprocv3.ProcessingRequest{
			envoytest.RequestHeaders(envoytest.HeaderMap(chat...), false), envoytest.RequestBody(reqJSON[:30], false), envoytest.RequestBody(reqJSON[30:], true), envoytest.RequestBody([]byte("late"), true),
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := testConfig(nil)
			srv, err := New(Options{Config: func() *config.Config { return cfg }, Scorer: verdictScorer(c.verdict)})
			if err != nil {
				t.Fatal(err)
			}
			msgs := make([]*extprocv3.ProcessingRequest, len(c.msgs))
			for i, m := range c.msgs {
				msgs[i] = proto.Clone(m).(*extprocv3.ProcessingRequest)
			}
			msgs[0].ProtocolConfig = c.mode
			checkReplyReuse(t, srv, msgs)
		})
	}
}
