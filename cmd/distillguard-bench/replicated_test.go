package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/distillguard/distillguard/bench"
	"github.com/distillguard/distillguard/internal/redisproc"
)

// TestReplicatedCommand runs the replicated comparison end to end: both
// distillguard servers as children (serve-distillguard mode), one of them
// on a real redis-server.
func TestReplicatedCommand(t *testing.T) {
	srv := redisproc.Require(t, redisproc.Options{})
	t.Setenv("DISTILLGUARD_BENCH_AS_MAIN", "1")
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	code := runMain([]string{"replicated", "-redis", srv.Addr(), "-rounds", "1", "-warmup", "50ms", "-duration", "400ms",
		"-c", "4", "-sessions", "64", "-out", out}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "| request_body | **ratio** |") {
		t.Errorf("no table on stdout:\n%s", stdout.String())
	}
	var rep bench.ReplicatedReport
	b, err := os.ReadFile(filepath.Join(out, "replicated.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.ByKind["replicated"]["request_body"].Count == 0 || rep.ByKind["in-memory"]["request_body"].Count == 0 {
		t.Fatalf("no request_body latencies: %+v", rep.ByKind)
	}
	// One session read per request, one write for the request and one for
	// the output tokens its response reported (ObserveResponse marks the
	// session dirty again at the end of the body).
	if g, w := rep.OpsPerRequest["mget"], rep.OpsPerRequest["evalsha"]; g < 0.9 || g > 1.1 || w < 0.5 || w > 2.1 {
		t.Errorf("Redis commands per request: mget %.2f, evalsha %.2f", g, w)
	}
}
