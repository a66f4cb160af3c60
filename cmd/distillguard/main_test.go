package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// syncBuffer collects the server's log lines from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type harness struct {
	addrs listening
	sigs  chan os.Signal
	done  chan error
	log   *syncBuffer
}

func start(t *testing.T, args ...string) *harness {
	t.Helper()
	o, err := parseFlags(append([]string{"-grpc-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0"}, args...), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{sigs: make(chan os.Signal, 4), done: make(chan error, 1), log: &syncBuffer{}}
	ready := make(chan listening, 1)
	go func() { h.done <- run(context.Background(), o, h.sigs, h.log, ready) }()
	select {
	case h.addrs = <-ready:
	case err := <-h.done:
		t.Fatalf("server exited before serving: %v\n%s", err, h.log)
	case <-time.After(10 * time.Second):
		t.Fatal("server did not start")
	}
	t.Cleanup(func() {
		select {
		case h.sigs <- syscall.SIGTERM:
		default:
		}
		select {
		case <-h.done:
		case <-time.After(30 * time.Second):
			t.Error("server did not stop")
		}
	})
	return h
}

func (h *harness) stop(t *testing.T) error {
	t.Helper()
	h.sigs <- syscall.SIGTERM
	select {
	case err := <-h.done:
		h.done <- err // let Cleanup see it too
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("server did not drain")
		return nil
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func dial(t *testing.T, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func headersMsg() *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
		RequestHeaders: &extprocv3.HttpHeaders{
			Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
				{Key: ":method", RawValue: []byte("GET")},
				{Key: ":path", RawValue: []byte("/v1/models")},
			}},
			EndOfStream: true,
		}}}
}

func TestServesExtProcHealthAndAdmin(t *testing.T) {
	h := start(t)
	cc := dial(t, h.addrs.GRPC, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, svc := range []string{"", "envoy.service.ext_proc.v3.ExternalProcessor"} {
		resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health(%q) = %v", svc, resp.Status)
		}
	}
	st, err := extprocv3.NewExternalProcessorClient(cc).Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(headersMsg()); err != nil {
		t.Fatal(err)
	}
	reply, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if reply.GetRequestHeaders() == nil {
		t.Fatalf("reply to request headers is %T", reply.GetResponse())
	}
	_ = st.CloseSend()

	base := "http://" + h.addrs.Admin
	if code, body := get(t, base+"/healthz"); code != 200 || !strings.Contains(body, "ok") {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, _ := get(t, base+"/readyz"); code != 200 {
		t.Errorf("/readyz = %d", code)
	}
	code, body := get(t, base+"/metrics")
	if code != 200 || !strings.Contains(body, "distillguard_") || !strings.Contains(body, "go_goroutines") {
		t.Errorf("/metrics = %d, missing distillguard_ or go_ series", code)
	}
	if code, body := get(t, base+"/v1/sessions?top=5"); code != 200 || !strings.Contains(body, "sessions") {
		t.Errorf("/v1/sessions = %d %q", code, body)
	}
	if code, _ := get(t, base+"/debug/pprof/"); code != 404 {
		t.Errorf("pprof served without -pprof: %d", code)
	}
	if err := h.stop(t); err != nil {
		t.Fatal(err)
	}
}

func TestReloadKeepsOldConfigOnError(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "c.yaml")
	write := func(s string) {
		if err := os.WriteFile(cfgPath, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("log: {level: info}\n")
	h := start(t, "-config", cfgPath)
	metric := func() string {
		_, body := get(t, "http://"+h.addrs.Admin+"/metrics")
		var lines []string
		for _, l := range strings.Split(body, "\n") {
			if strings.HasPrefix(l, "distillguard_config_reloads") {
				lines = append(lines, l)
			}
		}
		return strings.Join(lines, "\n")
	}
	write("log: {level: info}\nnot_a_key: 1\n")
	h.sigs <- syscall.SIGHUP
	waitFor(t, func() bool { return strings.Contains(metric(), `result="error"`) })
	if !strings.Contains(h.log.String(), "keeping the running config") || !strings.Contains(h.log.String(), "not_a_key") {
		t.Errorf("bad reload not explained in the log:\n%s", h.log)
	}
	write("log: {level: info}\nprocessing: {max_held_bytes: 2048}\n")
	h.sigs <- syscall.SIGHUP
	waitFor(t, func() bool { return strings.Contains(metric(), `result="ok"`) })
	if err := h.stop(t); err != nil {
		t.Fatal(err)
	}
}

// TestReloadNamesRestartOnlySettings checks the reload warning: silent for
// settings a swap applies, one line naming exactly the restart-only keys
// otherwise, and the swap still happens.
func TestReloadNamesRestartOnlySettings(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "c.yaml")
	write := func(s string) {
		if err := os.WriteFile(cfgPath, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("scoring: {secret: one}\n")
	h := start(t, "-config", cfgPath)
	reloaded := func(n int) {
		t.Helper()
		waitFor(t, func() bool { return strings.Count(h.log.String(), `"msg":"config reloaded"`) == n })
	}
	const warning = `"msg":"config reload: these settings take effect after a restart"`

	write("scoring: {secret: one}\nprocessing: {max_held_bytes: 2048}\nserver: {drain_grace: 5s}\n")
	h.sigs <- syscall.SIGHUP
	reloaded(1)
	if strings.Contains(h.log.String(), warning) {
		t.Errorf("reloadable change warned about:\n%s", h.log)
	}

	write("scoring: {secret: two}\nprocessing: {max_held_bytes: 2048, max_message_bytes: 134217728}\nserver: {drain_grace: 5s}\n")
	h.sigs <- syscall.SIGHUP
	reloaded(2)
	want := warning + `,"restart_required":["processing.max_message_bytes","scoring.secret"]`
	if n := strings.Count(h.log.String(), warning); n != 1 || !strings.Contains(h.log.String(), want) {
		t.Errorf("want one warning %s, got:\n%s", want, h.log)
	}
	if err := h.stop(t); err != nil {
		t.Fatal(err)
	}
}

func TestDrainWaitsForInFlightStreams(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(cfgPath, []byte("server: {drain_grace: 20s}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := start(t, "-config", cfgPath)
	cc := dial(t, h.addrs.GRPC, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := extprocv3.NewExternalProcessorClient(cc).Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(headersMsg()); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	h.sigs <- syscall.SIGTERM
	waitFor(t, func() bool {
		resp, err := http.Get("http://" + h.addrs.Admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	// The stream opened before SIGTERM still works while draining.
	if err := st.Send(headersMsg()); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatalf("in-flight stream cut during drain: %v", err)
	}
	select {
	case err := <-h.done:
		t.Fatalf("server exited with a stream in flight: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	_ = st.CloseSend()
	_, _ = st.Recv() // io.EOF once the server ends the stream
	select {
	case err := <-h.done:
		if err != nil {
			t.Fatalf("drain returned %v", err)
		}
		h.done <- nil
	case <-time.After(20 * time.Second):
		t.Fatal("server did not exit after the last stream ended")
	}
}

func TestCheckConfig(t *testing.T) {
	var out, errb bytes.Buffer
	if rc := runMain([]string{"-check-config"}, &out, &errb); rc != 0 || !strings.Contains(out.String(), "config ok") {
		t.Fatalf("default: rc=%d out=%q err=%q", rc, out.String(), errb.String())
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("policies:\n  default:\n    allow:\n      output: {round_decimal: 2}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	errb.Reset()
	if rc := runMain([]string{"-check-config", "-config", bad}, &out, &errb); rc != 1 || !strings.Contains(errb.String(), "round_decimal") {
		t.Fatalf("bad: rc=%d err=%q", rc, errb.String())
	}
	if rc := runMain([]string{"-no-such-flag"}, &out, &errb); rc != 2 {
		t.Fatalf("unknown flag: rc=%d", rc)
	}
	if rc := runMain([]string{"-check-config", "-tls-cert", "x.pem"}, &out, &errb); rc != 1 {
		t.Fatalf("cert without key accepted: rc=%d", rc)
	}
	// A partial policy: the table shows what every tier does, inherited
	// tiers included, and a negative setting is an error, not "ok".
	partial := filepath.Join(t.TempDir(), "partial.yaml")
	if err := os.WriteFile(partial, []byte("policies:\n  default:\n    allow:\n      output: {round_decimals: 3}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if rc := runMain([]string{"-check-config", "-config", partial}, &out, &errb); rc != 0 {
		t.Fatalf("partial: rc=%d err=%q", rc, errb.String())
	}
	for _, want := range []string{"config ok (" + partial + ")", "grpc 127.0.0.1:50051", "rounded to 3 decimals", "429 rate_limit_error", "403 permission_error", "throttle", "block"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("-check-config output lacks %q:\n%s", want, out.String())
		}
	}
	neg := filepath.Join(t.TempDir(), "neg.yaml")
	if err := os.WriteFile(neg, []byte("policies:\n  default:\n    allow:\n      output: {round_decimals: -5}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	errb.Reset()
	if rc := runMain([]string{"-check-config", "-config", neg}, &out, &errb); rc != 1 || !strings.Contains(errb.String(), "round_decimals") {
		t.Fatalf("negative round_decimals: rc=%d err=%q", rc, errb.String())
	}
}

func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := newCA(t)
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", ca.Raw)
	srvCert, srvKey := leaf(t, ca, caKey, "server", true)
	writePEM(t, filepath.Join(dir, "srv.pem"), "CERTIFICATE", srvCert)
	writeKey(t, filepath.Join(dir, "srv.key"), srvKey)
	h := start(t, "-tls-cert", filepath.Join(dir, "srv.pem"), "-tls-key", filepath.Join(dir, "srv.key"),
		"-tls-client-ca", filepath.Join(dir, "ca.pem"))

	pool := x509.NewCertPool()
	pool.AddCert(ca)
	check := func(certs []tls.Certificate) error {
		cc := dial(t, h.addrs.GRPC, credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1", Certificates: certs}))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	if err := check(nil); err == nil {
		t.Fatal("client without a certificate accepted under mTLS")
	}
	cliCert, cliKey := leaf(t, ca, caKey, "envoy", false)
	if err := check([]tls.Certificate{{Certificate: [][]byte{cliCert}, PrivateKey: cliKey}}); err != nil {
		t.Fatalf("client with a CA-signed certificate refused: %v", err)
	}
	// Plaintext must not work on a TLS port.
	cc := dial(t, h.addrs.GRPC, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err == nil {
		t.Fatal("plaintext client accepted on the TLS port")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

func leaf(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string, server bool) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeKey(t *testing.T, path string, key *ecdsa.PrivateKey) {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, path, "EC PRIVATE KEY", der)
}
