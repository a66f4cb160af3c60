package server

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/internal/redisproc"
)

func chatRequest(t *testing.T, st extprocv3.ExternalProcessor_ProcessClient, token string) *extprocv3.ProcessingResponse {
	t.Helper()
	attrs, err := structpb.NewStruct(map[string]any{"source.address": "198.51.100.77:5000"})
	if err != nil {
		t.Fatal(err)
	}
	h := &extprocv3.ProcessingRequest{
		Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
			Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
				{Key: ":method", RawValue: []byte("POST")},
				{Key: ":path", RawValue: []byte("/v1/chat/completions")},
				{Key: "authorization", RawValue: []byte("Bearer " + token)},
				{Key: "content-type", RawValue: []byte("application/json")},
			}},
		}},
		Attributes: map[string]*structpb.Struct{attrNamespace: attrs},
	}
	if r := roundTrip(t, st, h); r.GetRequestHeaders() == nil {
		t.Fatalf("reply to request headers is %T", r.GetResponse())
	}
	body := `{"model":"m","messages":[{"role":"user","content":"what is the capital of Portugal and why"}]}`
	return roundTrip(t, st, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
		RequestBody: &extprocv3.HttpBody{Body: []byte(body), EndOfStream: true}}})
}

// TestReplicatedServers: two servers in replicated mode share one real
// redis-server; a session's requests alternate between them, each read
// prefetched at the request headers, and the second server scores the
// session's history. Every goroutine ends with Drain.
func TestReplicatedServers(t *testing.T) {
	leakCheck(t)
	rs := redisproc.Require(t, redisproc.Options{})
	yaml := "scoring:\n  secret: server-test-secret-0123456789\n  redis:\n    addrs: [\"" + rs.Addr() + "\"]\n    key_prefix: \"srv:\"\n"
	a, b := start(t, parse(t, yaml), Options{}), start(t, parse(t, yaml), Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var session string
	for i, s := range []*Server{a, b, a, b} {
		st := openStream(t, ctx, dial(t, s.GRPCAddr()))
		r := chatRequest(t, st, "sk-server-replicas")
		_ = st.CloseSend()
		session = r.GetDynamicMetadata().GetFields()["distillguard"].GetStructValue().GetFields()["session"].GetStringValue()
		if session == "" {
			t.Fatalf("request %d: no session in the reply metadata", i)
		}
		if err := s.Engine().Flush(); err != nil {
			t.Fatal(err)
		}
	}
	d, err := b.Engine().Session(session)
	if err != nil {
		t.Fatal(err)
	}
	if d.Requests != 4 {
		t.Errorf("second server counts %d requests of the session, want 4", d.Requests)
	}
	_, body := get(t, "http://"+a.AdminAddr()+"/metrics")
	if !strings.Contains(body, `distillguard_redis_calls_total{op="get",result="ok"}`) {
		t.Errorf("/metrics has no successful Redis reads")
	}
	if out, err := rs.CLI("--raw", "EXISTS", "srv:{"+session+"}:s"); err != nil || strings.TrimSpace(out) != "1" {
		t.Errorf("session blob not in Redis: %q %v", out, err)
	}
}

// TestReplicatedModeNeedsASecret: without scoring.secret the configuration
// is refused with a message that says why.
func TestReplicatedModeNeedsASecret(t *testing.T) {
	_, err := config.Parse([]byte("scoring:\n  redis:\n    addrs: [\"127.0.0.1:6379\"]\n"))
	if err == nil || !strings.Contains(err.Error(), "needs scoring.secret") {
		t.Fatalf("config error %v, want one asking for scoring.secret", err)
	}
}

// stubStream is the gRPC side of one ext_proc stream as extproc's loop
// sees it: RecvMsg hands out queued messages, Send records replies. It
// stands in for the transport, not for Redis or Envoy.
type stubStream struct {
	extprocv3.ExternalProcessor_ProcessServer
	in   []*extprocv3.ProcessingRequest
	sent int
}

func (s *stubStream) RecvMsg(m any) error {
	proto.Merge(m.(*extprocv3.ProcessingRequest), s.in[0])
	s.in = s.in[1:]
	return nil
}

func (s *stubStream) Send(*extprocv3.ProcessingResponse) error { s.sent++; return nil }

// TestPrefetchStartsAfterTheHeadersReply: the session read is prepared
// from the request headers but reaches Redis only once the reply to them
// is sent, or, when the next message comes first (FULL_DUPLEX_STREAMED),
// before that message is handed on; never twice.
func TestPrefetchStartsAfterTheHeadersReply(t *testing.T) {
	rs := redisproc.Require(t, redisproc.Options{})
	yaml := "scoring:\n  secret: server-test-secret-0123456789\n  redis:\n    addrs: [\"" + rs.Addr() + "\"]\n    key_prefix: \"pf:\"\n"
	srv := start(t, parse(t, yaml), Options{})
	gets := func() int {
		out, err := rs.CLI("INFO", "commandstats")
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(out, "\n") {
			// The session read: one MGET of the blob and the standing key.
			if rest, ok := strings.CutPrefix(l, "cmdstat_mget:calls="); ok {
				n, _ := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
				return n
			}
		}
		return 0
	}
	waitGets := func(want int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for gets() < want && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if got := gets(); got != want {
			t.Fatalf("redis MGET calls %d, want %d", got, want)
		}
	}
	hdr := func(token string) *extprocv3.ProcessingRequest {
		return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
			Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "authorization", RawValue: []byte("Bearer " + token)}}},
		}}}
	}
	body := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{EndOfStream: true}}}
	// The first exchange with Redis reads the aggregate snapshot (a GET
	// too): done before counting.
	if err := srv.Engine().Flush(); err != nil {
		t.Fatal(err)
	}
	base := gets()

	// Headers, reply, body.
	st := &stubStream{in: []*extprocv3.ProcessingRequest{hdr("sk-pf-1"), body}}
	ps := &prefetchStream{ExternalProcessor_ProcessServer: st, eng: srv.Engine()}
	if err := ps.RecvMsg(&extprocv3.ProcessingRequest{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if got := gets(); got != base {
		t.Fatalf("a session read reached Redis before the headers reply (%d calls)", got-base)
	}
	if err := ps.Send(&extprocv3.ProcessingResponse{}); err != nil {
		t.Fatal(err)
	}
	waitGets(base + 1)
	if err := ps.RecvMsg(&extprocv3.ProcessingRequest{}); err != nil {
		t.Fatal(err)
	}
	_ = ps.Send(&extprocv3.ProcessingResponse{})
	time.Sleep(50 * time.Millisecond)
	if got := gets(); got != base+1 {
		t.Fatalf("the read was started again: %d calls", got-base)
	}

	// Headers, then the body before any reply: the read starts with it.
	st = &stubStream{in: []*extprocv3.ProcessingRequest{hdr("sk-pf-2"), body}}
	ps = &prefetchStream{ExternalProcessor_ProcessServer: st, eng: srv.Engine()}
	for range 2 {
		if err := ps.RecvMsg(&extprocv3.ProcessingRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	waitGets(base + 2)
	if st.sent != 0 {
		t.Fatalf("stub sent %d replies", st.sent)
	}
}
