package server

import (
	"context"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
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
