package envoy

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/extproc/envoytest"
	"github.com/distillguard/distillguard/server"
)

// The end-to-end test runs envoy.yaml in a real Envoy in front of the real
// distillguard binary and a mock OpenAI-compatible upstream. It needs an
// `envoy` binary on PATH (make e2e); without one it skips.

// portRewrites maps the fixed ports of envoy.yaml to free local ones.
type portRewrites struct {
	Listener, Admin, Upstream, Processor int
}

// rewriteBootstrap points envoy.yaml at the test's ports and binds the
// listener to loopback only.
func rewriteBootstrap(src []byte, p portRewrites) []byte {
	s := string(src)
	s = strings.ReplaceAll(s, "address: 0.0.0.0, port_value: 10000", fmt.Sprintf("address: 127.0.0.1, port_value: %d", p.Listener))
	s = strings.ReplaceAll(s, "port_value: 9901", fmt.Sprintf("port_value: %d", p.Admin))
	s = strings.ReplaceAll(s, "port_value: 8000", fmt.Sprintf("port_value: %d", p.Upstream))
	s = strings.ReplaceAll(s, "port_value: 50051", fmt.Sprintf("port_value: %d", p.Processor))
	return []byte(s)
}

// TestRewriteBootstrap keeps the e2e harness honest where Envoy is absent:
// the rewritten bootstrap still validates and every port moved.
func TestRewriteBootstrap(t *testing.T) {
	src, err := os.ReadFile("envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := portRewrites{Listener: 20001, Admin: 20002, Upstream: 20003, Processor: 20004}
	out := rewriteBootstrap(src, p)
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		for _, old := range []string{"10000", "9901", "8000", "50051", "0.0.0.0"} {
			if strings.Contains(line, old) {
				t.Errorf("rewritten bootstrap still uses %s: %q", old, line)
			}
		}
	}
	path := filepath.Join(t.TempDir(), "e2e.yaml")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	bs, err := loadBootstrap(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := validateTree(bs, "bootstrap"); err != nil {
		t.Fatal(err)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// lockedBuffer collects a child process's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startProcess(t *testing.T, name string, args ...string) *lockedBuffer {
	t.Helper()
	out := &lockedBuffer{}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, out)
		}
	})
	return out
}

func waitHTTP(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s not ready within 30s", url)
}

// e2eConfig is what the end-to-end distillguard runs with: the embedded
// default, with the test's client a trusted tenant (by a header it sends)
// at the default thresholds, so that it is out of probation and its
// answers show the allow tier's rewrite (a fresh identity would get text
// only; a logit_bias request could degrade it).
const e2eConfig = `
scoring:
  secret: "e2e-test-secret-0123456789abcdef0123456789abcdef"
  trusted:
    - name: e2e
      header: x-e2e-tenant
      values: [e2e]
      thresholds: {degrade: 0.95, throttle: 0.97, block: 0.99, hysteresis: 0.01}
`

// TestE2EConfigEmulated runs the end-to-end exchange where no Envoy runs
// it: the same configuration and request through the server assembly and
// the Envoy emulation configured as envoy.yaml configures the filter. The
// trusted client is allowed, logit_bias never reaches the upstream, and
// its logprobs arrive rounded, not stripped.
func TestE2EConfigEmulated(t *testing.T) {
	c, err := config.Parse([]byte(e2eConfig))
	if err != nil {
		t.Fatal(err)
	}
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	al, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(c, server.Options{GRPCListener: gl, AdminListener: al})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	defer srv.Close()
	cc, err := grpc.NewClient(gl.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	em := envoytest.New(extprocv3.NewExternalProcessorClient(cc), envoytest.ShippedConfig("192.0.2.30"))
	up := &envoytest.Upstream{Seed: 7}
	body := `{"model":"m","stream":true,"logprobs":true,"top_logprobs":20,"logit_bias":{"50256":-100},"max_tokens":12,"messages":[{"role":"user","content":"hello"}]}`
	res, err := em.Do(context.Background(), &envoytest.Exchange{
		Header: http.Header{"Content-Type": {"application/json"}, "X-E2e-Tenant": {"e2e"}}, Body: []byte(body), Upstream: up,
		ResponseChunker: envoytest.Random(3, 40, false),
	})
	if err != nil {
		t.Fatal(err)
	}
	if v := res.Metadata["distillguard"].GetFields()["verdict"].GetStringValue(); v != "allow" {
		t.Fatalf("verdict %q, want allow", v)
	}
	if bytes.Contains(res.Upstream.Body, []byte("logit_bias")) {
		t.Error("logit_bias reached the upstream")
	}
	nums := regexp.MustCompile(`"logprob":\s*(-?[0-9.eE+-]+)`).FindAllSubmatch(res.Body, -1)
	if len(nums) == 0 {
		t.Fatalf("no logprobs reached the client: %s", res.Body)
	}
	for _, m := range nums {
		if i := bytes.IndexByte(m[1], '.'); i >= 0 && len(m[1])-i-1 > 2 {
			t.Errorf("logprob %s has more than 2 decimals", m[1])
		}
	}
}

func TestE2EWithEnvoy(t *testing.T) {
	envoyBin, err := exec.LookPath("envoy")
	if err != nil {
		t.Skip("envoy is not on PATH; the end-to-end test needs a real Envoy (make e2e)")
	}
	if testing.Short() {
		t.Skip("end-to-end test skipped in -short mode")
	}
	decimalsRE := regexp.MustCompile(`"logprob":\s*(-?[0-9.eE+-]+)`)
	dir := t.TempDir()
	up := &envoytest.Upstream{Seed: 7}
	upSrv := httptest.NewServer(up)
	defer upSrv.Close()

	p := portRewrites{Listener: freePort(t), Admin: freePort(t), Upstream: upSrv.Listener.Addr().(*net.TCPAddr).Port, Processor: freePort(t)}
	adminDG := freePort(t)
	bin := filepath.Join(dir, "distillguard")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/distillguard").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	dgCfg := filepath.Join(dir, "distillguard.yaml")
	if err := os.WriteFile(dgCfg, []byte(e2eConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	startProcess(t, bin, "-config", dgCfg, "-grpc-addr", fmt.Sprintf("127.0.0.1:%d", p.Processor), "-admin-addr", fmt.Sprintf("127.0.0.1:%d", adminDG))
	waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", adminDG))

	src, err := os.ReadFile("envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "envoy.yaml")
	if err := os.WriteFile(cfgPath, rewriteBootstrap(src, p), 0o600); err != nil {
		t.Fatal(err)
	}
	envoyLog := startProcess(t, envoyBin, "-c", cfgPath, "--log-level", "warn", "--base-id", strconv.Itoa(p.Admin))
	waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/ready", p.Admin))
	base := fmt.Sprintf("http://127.0.0.1:%d", p.Listener)

	// 1. Streamed chat with logprobs and logit_bias.
	body := `{"model":"m","stream":true,"logprobs":true,"top_logprobs":20,"logit_bias":{"50256":-100},"max_tokens":12,"messages":[{"role":"user","content":"hello"}]}`
	post, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, base+"/v1/chat/completions", strings.NewReader(body))
	post.Header.Set("content-type", "application/json")
	post.Header.Set("x-e2e-tenant", "e2e")
	resp, err := http.DefaultClient.Do(post)
	if err != nil {
		t.Fatal(err)
	}
	stream, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, stream)
	}
	got, _ := up.LastRequest()
	var upReq map[string]any
	if err := json.Unmarshal(got.Body, &upReq); err != nil {
		t.Fatal(err)
	}
	if _, ok := upReq["logit_bias"]; ok {
		t.Error("logit_bias reached the upstream")
	}
	if n, _ := upReq["top_logprobs"].(float64); n > 5 {
		t.Errorf("upstream saw top_logprobs %v", n)
	}
	if cl := got.Header.Get("Content-Length"); cl != "" && cl != strconv.Itoa(len(got.Body)) {
		t.Errorf("upstream content-length %s for %d bytes", cl, len(got.Body))
	}
	events, logprobs := 0, 0
	sc := bufio.NewScanner(bytes.NewReader(stream))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "data:") || strings.Contains(line, "[DONE]") {
			continue
		}
		events++
		var ev struct {
			Choices []struct {
				Logprobs *struct {
					Content []struct {
						TopLogprobs []json.RawMessage `json:"top_logprobs"`
					} `json:"content"`
				} `json:"logprobs"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(strings.TrimSpace(strings.TrimPrefix(line, "data:"))), &ev); err != nil {
			t.Fatalf("client got a corrupted event %q: %v", line, err)
		}
		for _, c := range ev.Choices {
			if c.Logprobs == nil {
				continue
			}
			for _, e := range c.Logprobs.Content {
				if len(e.TopLogprobs) > 5 {
					t.Errorf("%d alternatives reached the client", len(e.TopLogprobs))
				}
			}
		}
		for _, m := range decimalsRE.FindAllStringSubmatch(line, -1) {
			logprobs++
			if i := strings.IndexByte(m[1], '.'); i >= 0 && len(m[1])-i-1 > 2 {
				t.Errorf("logprob %s has more than 2 decimals", m[1])
			}
		}
	}
	if events == 0 {
		t.Fatal("no events reached the client")
	}
	if logprobs == 0 {
		t.Fatal("no logprobs reached the client: the allow tier rounds them, it does not strip them")
	}

	// 2. Non-streamed JSON, gzip to the client by Envoy's compressor.
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, base+"/v1/chat/completions",
		strings.NewReader(`{"model":"m","logprobs":true,"top_logprobs":8,"max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("content-type", "application/json")
	req.Header.Set("accept-encoding", "gzip")
	req.Header.Set("x-e2e-tenant", "e2e")
	resp, err = http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		if raw, err = io.ReadAll(zr); err != nil {
			t.Fatal(err)
		}
	}
	var full map[string]any
	if err := json.Unmarshal(raw, &full); err != nil {
		t.Fatalf("non-streamed response is not JSON: %v\n%s", err, raw)
	}
	for _, m := range decimalsRE.FindAllStringSubmatch(string(raw), -1) {
		if i := strings.IndexByte(m[1], '.'); i >= 0 && len(m[1])-i-1 > 2 {
			t.Errorf("logprob %s has more than 2 decimals", m[1])
		}
	}

	// 3. The verdict reached Envoy's access log as dynamic metadata.
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(envoyLog.String(), `"verdict":"allow"`) {
		if time.Now().After(deadline) {
			t.Fatalf("access log has no distillguard verdict:\n%s", envoyLog)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
