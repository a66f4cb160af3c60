package extproc

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	procv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/extproc/envoytest"
	"github.com/distillguard/distillguard/extproc/keys"
	"github.com/distillguard/distillguard/scoring"
)

// Fuzz input layout: [reqMode, respMode, verdict, flags] then messages of
// [op, len, payload...]. op%7 picks the kind (request headers/body/trailers,
// response headers/body/trailers, or an empty request); op bit 3 is
// end_of_stream; bits 4-5 pick a header template; bit 6 sets
// observability_mode; bit 7 adds attributes. flags bit 0 sends
// protocol_config on the first message; bit 1 makes the scorer panic.

var fuzzPaths = []string{"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models",
	"/v1beta/models/g:streamGenerateContent", "/generate_stream", "/completion", "/api/chat",
	"/v1/messages", "/v1/projects/p/locations/l/publishers/google/models/m:generateContent", "/", "/api/generate"}
var fuzzTypes = []string{"text/event-stream", "application/json", "text/plain", "application/json; charset=utf-8", "application/x-ndjson"}
var fuzzEncodings = []string{"", "gzip", "br", "identity"}
var fuzzStatus = []string{"200", "200", "429", "x"}

type fuzzMsg struct {
	op      byte
	payload []byte
}

func encodeFuzz(reqMode, respMode procv3.ProcessingMode_BodySendMode, verdict, flags byte, msgs ...fuzzMsg) []byte {
	b := []byte{byte(reqMode), byte(respMode), verdict, flags}
	for _, m := range msgs {
		n := min(len(m.payload), 255)
		b = append(b, m.op, byte(n))
		b = append(b, m.payload[:n]...)
	}
	return b
}

const (
	opReqH = iota
	opReqB
	opReqT
	opRespH
	opRespB
	opRespT
	opEmpty
	opEOS = 1 << 3
)

func decodeFuzz(data []byte) (reqMode, respMode procv3.ProcessingMode_BodySendMode, verdict scoring.Verdict, flags byte, msgs []*extprocv3.ProcessingRequest, ok bool) {
	if len(data) < 4 {
		return
	}
	reqMode = procv3.ProcessingMode_BodySendMode(data[0] % 6)
	respMode = procv3.ProcessingMode_BodySendMode(data[1] % 6)
	verdict = scoring.Verdict(data[2] % 5) // 4 is out of range on purpose
	flags = data[3]
	data = data[4:]
	for len(data) >= 2 && len(msgs) < 64 {
		op, n := data[0], int(data[1])
		data = data[2:]
		n = min(n, len(data))
		payload := data[:n]
		data = data[n:]
		eos := op&opEOS != 0
		tmpl := int(op>>4) & 3
		hv := func(k, v string) *corev3.HeaderValue { return &corev3.HeaderValue{Key: k, RawValue: []byte(v)} }
		var m *extprocv3.ProcessingRequest
		switch op % 7 {
		case opReqH:
			h := &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
				// The flags' high bits pick the other formats' paths.
				hv(":path", fuzzPaths[(tmpl|int(flags>>4)<<2)%len(fuzzPaths)]), hv(":method", "POST"), hv("content-type", "application/json"), hv("authorization", "Bearer fuzz"),
				hv("accept-encoding", "gzip"), hv("content-length", "12"), hv("content-encoding", fuzzEncodings[tmpl]),
				hv("authorization", string(payload)),
			}}
			m = &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: h, EndOfStream: eos}}}
		case opReqB:
			m = &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: payload, EndOfStream: eos}}}
		case opReqT:
			m = &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestTrailers{RequestTrailers: &extprocv3.HttpTrailers{}}}
		case opRespH:
			h := &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
				hv(":status", fuzzStatus[int(op>>6)&3]), hv("content-type", fuzzTypes[(tmpl+4*int(flags>>7))%len(fuzzTypes)]),
				hv("content-encoding", fuzzEncodings[(tmpl+int(len(payload)))&3]), hv("content-length", "99"),
			}}
			m = &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{Headers: h, EndOfStream: eos}}}
		case opRespB:
			m = &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: payload, EndOfStream: eos}}}
		case opRespT:
			m = &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: &extprocv3.HttpTrailers{}}}
		default:
			m = &extprocv3.ProcessingRequest{}
		}
		if op&0x40 != 0 && op%7 == opRespB {
			m.ObservabilityMode = true
		}
		if op&0x80 != 0 {
			m.Attributes = map[string]*structpb.Struct{keys.AttributeNamespace: {Fields: map[string]*structpb.Value{
				keys.RequestTime: structpb.NewStringValue(string(payload)), keys.SourceAddress: structpb.NewStringValue("10.1.2.3:4"),
			}}}
		}
		if len(msgs) == 0 && flags&1 != 0 {
			m.ProtocolConfig = &extprocv3.ProtocolConfiguration{RequestBodyMode: reqMode, ResponseBodyMode: respMode}
		}
		msgs = append(msgs, m)
	}
	return reqMode, respMode, verdict, flags, msgs, len(msgs) > 0
}

func replyMatches(req *extprocv3.ProcessingRequest, r *extprocv3.ProcessingResponse) bool {
	if r.GetImmediateResponse() != nil {
		return true
	}
	switch req.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		return r.GetRequestHeaders() != nil
	case *extprocv3.ProcessingRequest_RequestBody:
		return r.GetRequestBody() != nil
	case *extprocv3.ProcessingRequest_RequestTrailers:
		return r.GetRequestTrailers() != nil
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		return r.GetResponseHeaders() != nil
	case *extprocv3.ProcessingRequest_ResponseBody:
		return r.GetResponseBody() != nil
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		return r.GetResponseTrailers() != nil
	}
	return false
}

// FuzzStateMachine feeds arbitrary ProcessingRequest sequences to the
// per-stream state machine: it must never panic, answer exactly one reply
// of the matching kind per message in the non-duplex modes, none in
// observability mode, and keep streamed_response chunks within 64 KiB.
func FuzzStateMachine(f *testing.F) {
	g := envoytest.NewGen(1)
	sse := envoytest.Join(g.ChatStream(envoytest.Options{Tokens: 2, Logprobs: true, TopLogprobs: 2}))
	js := g.ChatCompletion(envoytest.Options{Tokens: 2, Logprobs: true, TopLogprobs: 2})
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	zw.Write(sse[:200])
	zw.Close()
	req := []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"logprobs":true,"top_logprobs":9,"logit_bias":{"1":2}}`)
	for _, modes := range [][2]procv3.ProcessingMode_BodySendMode{{mBuffered, mStreamed}, {mStreamed, mBuffered}, {mDuplex, mDuplex}, {mPartial, mPartial}, {mNone, mNone}} {
		f.Add(encodeFuzz(modes[0], modes[1], 0, 1,
			fuzzMsg{opReqH, []byte("Bearer k")}, fuzzMsg{opReqB, req[:40]}, fuzzMsg{opReqB | opEOS, req[40:]},
			fuzzMsg{opRespH, nil}, fuzzMsg{opRespB, sse[:100]}, fuzzMsg{opRespB, sse[100:255]}, fuzzMsg{opRespB | opEOS, nil}))
		f.Add(encodeFuzz(modes[0], modes[1], 1, 0,
			fuzzMsg{opReqH | opEOS | 0x80, []byte("2026-01-01T00:00:00Z")},
			fuzzMsg{opRespH | 0x10, nil}, fuzzMsg{opRespB, js[:255]}, fuzzMsg{opRespT, nil}))
		f.Add(encodeFuzz(modes[0], modes[1], 2, 1, fuzzMsg{opReqH, nil}, fuzzMsg{opReqB | opEOS, req}))
		f.Add(encodeFuzz(modes[0], modes[1], 0, 3,
			fuzzMsg{opReqH | opEOS, nil}, fuzzMsg{opRespH | 0x10, []byte("x")}, fuzzMsg{opRespB, zb.Bytes()}, fuzzMsg{opRespT, nil}, fuzzMsg{opEmpty, nil}))
	}
	// Ollama's /api/generate answered in NDJSON (flags 0x81: path 11,
	// content-type 4), Gemini's stream in SSE (flags 0x11: path 4).
	ollamaReq := []byte(`{"model":"m","prompt":"hi","logprobs":true,"top_logprobs":9}`)
	ndjson := []byte(`{"response":"a","done":false,"logprobs":[{"token":"a","logprob":-0.123456,"top_logprobs":[{"token":"a","logprob":-0.123456}]}]}` + "\n" + `{"done":true,"eval_count":1}` + "\n")
	geminiReq := []byte(`{"contents":[{"parts":[{"text":"hi"}]}],"generationConfig":{"responseLogprobs":true,"logprobs":9}}`)
	gem := []byte("data: {\"candidates\":[{\"avgLogprobs\":-0.3141592,\"logprobsResult\":{\"chosenCandidates\":[{\"token\":\"a\",\"logProbability\":-0.3141592}]}}]}\r\n\r\n")
	for _, modes := range [][2]procv3.ProcessingMode_BodySendMode{{mBuffered, mStreamed}, {mDuplex, mDuplex}} {
		f.Add(encodeFuzz(modes[0], modes[1], 0, 0x81,
			fuzzMsg{opReqH | 0x30, []byte("Bearer k")}, fuzzMsg{opReqB | opEOS, ollamaReq},
			fuzzMsg{opRespH, nil}, fuzzMsg{opRespB, ndjson[:50]}, fuzzMsg{opRespB | opEOS, ndjson[50:]}))
		f.Add(encodeFuzz(modes[0], modes[1], 0, 0x11,
			fuzzMsg{opReqH, []byte("Bearer k")}, fuzzMsg{opReqB | opEOS, geminiReq},
			fuzzMsg{opRespH, nil}, fuzzMsg{opRespB, gem[:70]}, fuzzMsg{opRespB | opEOS, gem[70:]}))
	}
	cfg := testConfig(func(p *config.Processing) {
		p.MaxHeldBytes, p.MaxBodyBytes, p.MaxDecompressedBytes = 128, 512, 2048
	})
	f.Fuzz(func(t *testing.T, data []byte) {
		reqMode, respMode, verdict, flags, msgs, ok := decodeFuzz(data)
		if !ok {
			return
		}
		sc := &fakeScorer{decision: scoring.Decision{Verdict: verdict, Session: "s"}, panics: flags&2 != 0}
		srv, err := New(Options{Config: func() *config.Config { return cfg }, Scorer: sc})
		if err != nil {
			t.Fatal(err)
		}
		// Reply trees and output buffers reused across messages give the
		// same replies as fresh ones.
		checkReplyReuse(t, srv, msgs)
		st := srv.newStream(context.Background())
		defer st.release()
		if flags&1 == 0 {
			// Without protocol_config the configured modes apply.
			reqMode, respMode = st.reqMode, st.respMode
		}
		observed := false
		for i, m := range msgs {
			replies := st.handle(m)
			observed = observed || m.GetObservabilityMode()
			for _, r := range replies {
				if sr := commonOfReply(r).GetBodyMutation().GetStreamedResponse(); sr != nil && len(sr.GetBody()) > maxStreamedChunk {
					t.Fatalf("message %d: streamed_response of %d bytes", i, len(sr.GetBody()))
				}
			}
			switch {
			case observed:
				if len(replies) != 0 {
					t.Fatalf("message %d: %d replies in observability mode", i, len(replies))
				}
			case m.GetRequest() == nil:
				if len(replies) != 0 {
					t.Fatalf("message %d: reply to an empty request", i)
				}
			case !streamedMode(reqMode) && !streamedMode(respMode):
				if len(replies) != 1 || !replyMatches(m, replies[0]) {
					t.Fatalf("message %d (%T): replies %s", i, m.GetRequest(), describe(replies))
				}
			}
		}
	})
}

func commonOfReply(r *extprocv3.ProcessingResponse) *extprocv3.CommonResponse {
	if b := r.GetRequestBody(); b != nil {
		return b.GetResponse()
	}
	return r.GetResponseBody().GetResponse()
}

func describe(rs []*extprocv3.ProcessingResponse) string {
	var b bytes.Buffer
	for _, r := range rs {
		fmt.Fprintf(&b, "%T ", r.GetResponse())
	}
	return fmt.Sprintf("%d: %s", len(rs), b.String())
}
