package bench

import (
	"context"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

func TestEnvoyConfigRewrite(t *testing.T) {
	base, err := os.ReadFile("../envoy/envoy.yaml")
	if err != nil {
		t.Skipf("envoy/envoy.yaml: %v", err)
	}
	got, err := envoyConfig(base, "127.0.0.1:20001", "127.0.0.1:20002", "127.0.0.1:20003", "127.0.0.1:20004")
	if err != nil {
		t.Fatal(err)
	}
	s := string(got)
	for _, p := range []string{"20001", "20002", "20003", "20004"} {
		if !strings.Contains(s, "port_value: "+p) {
			t.Errorf("port %s not set", p)
		}
	}
	for _, old := range []string{"port_value: 10000", "port_value: 8000", "port_value: 50051", "port_value: 9901", "0.0.0.0"} {
		if strings.Contains(s, old) {
			t.Errorf("%q left in the rewritten config", old)
		}
	}
	if _, err := envoyConfig([]byte("static_resources: {}\n"), "a:1", "b:2", "c:3", "d:4"); err == nil {
		t.Error("a config without the expected ports must be an error")
	}
}

func TestMockUpstreamTimesTokens(t *testing.T) {
	g := &gen{r: newRand(1)}
	events := g.streamEvents(5, 5)
	srv := httptest.NewServer(mockUpstream(events, 10*time.Millisecond))
	defer srv.Close()
	var ttft, gaps []time.Duration
	if err := streamOnce(context.Background(), srv.Client(), srv.URL, []byte("{}"), &ttft, &gaps); err != nil {
		t.Fatal(err)
	}
	if len(ttft) != 1 || len(gaps) != len(events)-1 {
		t.Fatalf("%d first-token times, %d gaps for %d events", len(ttft), len(gaps), len(events))
	}
	// Individual gaps can collapse when the client reads several events at
	// once under load; the time from the request to the last token cannot
	// be shorter than the upstream's pacing.
	total := ttft[0]
	for _, g := range gaps {
		if g < 0 {
			t.Errorf("negative gap %v", g)
		}
		total += g
	}
	if min := time.Duration(len(events)-1) * 10 * time.Millisecond; total < min {
		t.Errorf("last token %v after the request, before the upstream's pacing allows (%v)", total, min)
	}
}

func TestRunE2EWithoutEnvoy(t *testing.T) {
	rep, err := RunE2E(context.Background(), E2EConfig{})
	if rep != nil || err != nil {
		t.Errorf("without envoy: %v %v", rep, err)
	}
}
