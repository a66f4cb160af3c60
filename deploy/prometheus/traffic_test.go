package prometheus

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	procv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/distillguard/distillguard/deploy/internal/testtool"
	"github.com/distillguard/distillguard/extproc/envoytest"
	"github.com/distillguard/distillguard/internal/redisproc"
)

// testConfig lowers the verdict thresholds so a handful of requests walk a
// session through every tier; everything else is the embedded default.
const testConfig = `
scoring:
  secret: "metrics-test-secret-0123456789abcdef0123456789abcdef"
  thresholds: {degrade: 0.05, throttle: 0.3, block: 0.5, hysteresis: 0.01}
  # Standing after one clean request, so that an identity can earn it and
  # lose it again within the traffic below.
  standing: {requests: 1, age: 1ns}
  # The benign user is an application the provider trusts (never in
  # probation) with the usual thresholds: its answers are rewritten at
  # allow.
  trusted:
    - name: internal-app
      header: x-tenant
      values: [internal-app]
      thresholds: {degrade: 0.3, throttle: 0.6, block: 0.8, hysteresis: 0.1}
`

// scrape is what the server exported after the traffic below.
type scrape struct {
	families map[string]*dto.MetricFamily
	verdicts map[string]int // requests decided, by verdict, as the metadata said
	log      string
}

// driveServer starts the real distillguard binary, sends traffic through the
// Envoy emulation so that every verdict, rewrites, pass-throughs, a protocol
// error and both reload results happen, then scrapes /metrics.
func driveServer(t *testing.T) *scrape {
	t.Helper()
	dir := t.TempDir()
	bin := testtool.BuildServer(t, dir)
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(testConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := testtool.Start(t, bin, "-config", cfgPath, "-grpc-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0")

	conn, err := grpc.NewClient(srv.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := extprocv3.NewExternalProcessorClient(conn)
	envoy := envoytest.New(client, envoytest.ShippedConfig("192.0.2.10")) // as envoy/envoy.yaml configures the filter
	up := &envoytest.Upstream{Seed: 1}
	sc := &scrape{verdicts: map[string]int{}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	do := func(key, body string, chunker envoytest.Chunker) *envoytest.Result {
		t.Helper()
		h := http.Header{"Content-Type": {"application/json"}}
		if key != "" {
			h.Set("Authorization", "Bearer "+key)
		}
		if key == "benign-user" {
			h.Set("X-Tenant", "internal-app")
		}
		res, err := envoy.Do(ctx, &envoytest.Exchange{Header: h, Body: []byte(body), Upstream: up, ResponseChunker: chunker})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Violations) > 0 {
			t.Fatalf("protocol violations: %v", res.Violations)
		}
		if md := res.Metadata["distillguard"]; md != nil {
			sc.verdicts[md.GetFields()["verdict"].GetStringValue()]++
		}
		return res
	}

	// An ordinary user with a few alternatives: allowed, logprobs rounded.
	for i := range 3 {
		do("benign-user", fmt.Sprintf(`{"model":"m","stream":true,"logprobs":true,"top_logprobs":3,"messages":[{"role":"user","content":"Tell me about the history of the city number %d, its rivers and bridges."}]}`, i), envoytest.Random(uint64(i+1), 40, false))
	}
	do("benign-user", `{"model":"m","logprobs":true,"top_logprobs":2,"messages":[{"role":"user","content":"Summarise the plot of a short novel about sailing."}]}`, nil)
	// An identity that earns standing with two plain questions, then
	// probes: standing lost again.
	do("turncoat", `{"model":"m","messages":[{"role":"user","content":"What is a good name for a grey cat?"}]}`, nil)
	do("turncoat", `{"model":"m","messages":[{"role":"user","content":"What is a good name for a grey cat?"},{"role":"assistant","content":"Smokey."},{"role":"user","content":"And for a black one?"}]}`, nil)
	for i := range 3 {
		do("turncoat", fmt.Sprintf(`{"model":"m","logprobs":true,"top_logprobs":20,"logit_bias":{"%d":100},"messages":[{"role":"user","content":"Repeat token%d."}]}`, 3000+i, i), nil)
	}
	// A logit_bias prober with full logprobs, one template over and over:
	// degraded, throttled, then blocked.
	for i := range 30 {
		do("prober", fmt.Sprintf(`{"model":"m","stream":true,"logprobs":true,"top_logprobs":20,"n":4,"logit_bias":{"%d":100,"%d":-100},"messages":[{"role":"user","content":"Repeat the word token%d exactly once. Output: "}]}`, 1000+i, 2000+i, i), envoytest.Whole())
	}
	// A body the server refuses (400), counted by reason.
	do("broken-client", `{"model":"m","messages":[`, nil)
	do("broken-client", `{"model":"m","messages":[{"role":"user","content":"invalid UTF-8 \xff\xfe here"}]}`, nil)
	// Input the scorer repairs: a prompt of control characters.
	do("odd-client", `{"model":"m","messages":[{"role":"user","content":"`+strings.Repeat(`\u0001\u0002`, 64)+`"}]}`, nil)
	// A response the server passes through untouched (not JSON, not SSE),
	// counted by reason.
	plain := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("a plain-text answer"))
	})
	// (Asked by the trusted user with logprobs: a response nothing could
	// change is skipped at its headers and never looked at.)
	if _, err := envoy.Do(ctx, &envoytest.Exchange{Header: http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer benign-user"}, "X-Tenant": {"internal-app"}},
		Body: []byte(`{"model":"m","logprobs":true,"top_logprobs":2,"messages":[{"role":"user","content":"answer in plain text"}]}`), Upstream: plain}); err != nil {
		t.Fatal(err)
	}
	// A request nobody can be held to account for: no credential, and an
	// Envoy that sends no source.address (refused: unattributable).
	anonymous := envoytest.New(client, envoytest.Config{
		ProcessingMode:      &procv3.ProcessingMode{RequestBodyMode: procv3.ProcessingMode_BUFFERED, ResponseBodyMode: procv3.ProcessingMode_STREAMED},
		SendProtocolConfig:  true,
		ReceivingNamespaces: []string{"distillguard"},
	})
	if _, err := anonymous.Do(ctx, &envoytest.Exchange{Header: http.Header{"Content-Type": {"application/json"}},
		Body: []byte(`{"model":"m","messages":[{"role":"user","content":"who am I?"}]}`), Upstream: up}); err != nil {
		t.Fatal(err)
	}

	// A protocol violation: a ProcessingRequest with no request set.
	st, err := client.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&extprocv3.ProcessingRequest{}); err != nil {
		t.Fatal(err)
	}
	// The server counts it and carries on; closing our side ends the stream.
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := st.Recv(); err != nil {
			break
		}
	}

	// One good and one bad reload.
	sighup := func() {
		t.Helper()
		before := strings.Count(srv.Log(), "config reload")
		srv.Signal(t, syscall.SIGHUP)
		deadline := time.Now().Add(10 * time.Second)
		for strings.Count(srv.Log(), "config reload") == before {
			if time.Now().After(deadline) {
				t.Fatalf("no reload logged after SIGHUP\n%s", srv.Log())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	sighup()
	if err := os.WriteFile(cfgPath, []byte("scoring: {unknown_key: 1}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sighup()

	sc.families = scrapeMetrics(t, srv)
	sc.log = srv.Log()
	// Replicated mode's series: a second server on a real redis-server,
	// which is killed mid-traffic so that the fallbacks and the breaker
	// show.
	for name, f := range driveReplicated(t, bin, dir) {
		if _, ok := sc.families[name]; !ok {
			sc.families[name] = f
		}
	}
	return sc
}

func scrapeMetrics(t *testing.T, srv *testtool.Server) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := srv.Get(t, "/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics = %d", code)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// driveReplicated runs the binary in replicated mode against a real
// redis-server, sends traffic, kills Redis, sends more (scored on local
// state: fallbacks, the breaker opening) and scrapes /metrics.
func driveReplicated(t *testing.T, bin, dir string) map[string]*dto.MetricFamily {
	t.Helper()
	rs := redisproc.Require(t, redisproc.Options{})
	cfgPath := filepath.Join(dir, "replicated.yaml")
	cfg := "scoring:\n  secret: \"metrics-test-secret-0123456789abcdef0123456789abcdef\"\n  redis:\n    addrs: [\"" + rs.Addr() + "\"]\n    call_timeout: 20ms\n    breaker: {failures: 2, open_for: 1m}\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := testtool.Start(t, bin, "-config", cfgPath, "-grpc-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0")
	conn, err := grpc.NewClient(srv.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	envoy := envoytest.New(extprocv3.NewExternalProcessorClient(conn), envoytest.ShippedConfig("192.0.2.20"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	up := &envoytest.Upstream{Seed: 2}
	send := func(n int) {
		for i := range n {
			h := http.Header{"Content-Type": {"application/json"}, "Authorization": {fmt.Sprintf("Bearer replicated-%d", i)}}
			body := fmt.Sprintf(`{"model":"m","messages":[{"role":"user","content":"Question %d about rivers."}]}`, i)
			if _, err := envoy.Do(ctx, &envoytest.Exchange{Header: h, Body: []byte(body), Upstream: up}); err != nil {
				t.Fatal(err)
			}
		}
	}
	send(4)
	rs.Kill()
	send(8)
	return scrapeMetrics(t, srv)
}
