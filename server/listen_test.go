package server

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/distillguard/distillguard/config"
)

// TestListenerExposure: loopback and unix sockets are quiet; a TCP
// listener beyond loopback without TLS gets one WARN line and the gauge.
func TestListenerExposure(t *testing.T) {
	leakCheck(t)
	cases := []struct {
		name, addr string
		warn       bool
	}{
		{"loopback", "127.0.0.1:0", false},
		{"unix", "unix://" + filepath.Join(t.TempDir(), "dg.sock"), false},
		{"all interfaces", "0.0.0.0:0", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var logs syncBuffer
			cfg := parse(t, "")
			cfg.Server.GRPCAddr, cfg.Server.AdminAddr = tc.addr, "127.0.0.1:0"
			reg := prometheus.NewRegistry()
			s, err := New(cfg, Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil)), Registry: reg})
			if err != nil {
				t.Fatal(err)
			}
			s.Start()
			defer s.Close()
			if n := strings.Count(logs.String(), "listens beyond loopback without TLS"); n != map[bool]int{true: 1, false: 0}[tc.warn] {
				t.Errorf("%d warnings:\n%s", n, logs.String())
			}
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			got := -1.0
			for _, mf := range mfs {
				if mf.GetName() == "distillguard_grpc_plaintext_exposed" {
					got = mf.GetMetric()[0].GetGauge().GetValue()
				}
			}
			if got != map[bool]float64{true: 1, false: 0}[tc.warn] {
				t.Errorf("distillguard_grpc_plaintext_exposed = %v", got)
			}
			if strings.HasPrefix(tc.addr, "unix:") {
				// Envoy reaches a unix socket with a pipe address.
				path := strings.TrimPrefix(tc.addr, "unix://")
				cc, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					t.Fatal(err)
				}
				defer cc.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				st := openStream(t, ctx, cc)
				if r := roundTrip(t, st, headersMsg()); r.GetRequestHeaders() == nil {
					t.Fatalf("reply %T over the unix socket", r.GetResponse())
				}
				_ = st.CloseSend()
			}
		})
	}
}

// TestListenUnixStaleSocket: a socket file left by an earlier run is
// replaced; a socket in use, or a file that is not a socket, is an error.
func TestListenUnixStaleSocket(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "s.sock")
	l, err := net.Listen("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Listen("unix://" + p); err == nil {
		t.Fatal("listened on a socket in use")
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	l2, err := Listen("unix:" + p)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l2.Close()
	f := filepath.Join(dir, "file")
	os.WriteFile(f, nil, 0o600)
	if _, err := Listen("unix://" + f); err == nil {
		t.Fatal("replaced a regular file")
	}
}

// TestLargeRequestGets413: an 18 MiB BUFFERED request (above max_body_bytes,
// below max_message_bytes) is received and answered 413, not reset with
// ResourceExhausted.
func TestLargeRequestGets413(t *testing.T) {
	leakCheck(t)
	s := start(t, config.Default(), Options{})
	cc := dial(t, s.GRPCAddr(), grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st := openStream(t, ctx, cc)
	hdr := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
		Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			{Key: ":method", RawValue: []byte("POST")}, {Key: ":path", RawValue: []byte("/v1/chat/completions")},
			{Key: "authorization", RawValue: []byte("Bearer k")}}}}}}
	if r := roundTrip(t, st, hdr); r.GetRequestHeaders() == nil {
		t.Fatalf("reply %T", r.GetResponse())
	}
	body := append([]byte(`{"messages":[{"role":"user","content":"`), bytes.Repeat([]byte("a"), 18<<20)...)
	r := roundTrip(t, st, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: body, EndOfStream: true}}})
	if ir := r.GetImmediateResponse(); ir == nil || ir.GetStatus().GetCode() != 413 {
		t.Fatalf("reply %v, want a 413", r)
	}
	_ = st.CloseSend()
}
