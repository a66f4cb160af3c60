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
		"-c", "4", "-sessions", "64", "-read-floor", "-out", out}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr.String())
	}
	for _, row := range []string{"| request_body | **replicated / in-memory** |", "| request_headers | **floor+read / floor** |", "read alone (floor+read - floor)"} {
		if !strings.Contains(stdout.String(), row) {
			t.Errorf("no %q on stdout:\n%s", row, stdout.String())
		}
	}
	var rep bench.ReplicatedReport
	b, err := os.ReadFile(filepath.Join(out, "replicated.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"replicated", "in-memory", "floor", "floor+read"} {
		if rep.ByKind[s]["request_body"].Count == 0 || rep.Errors[s] != 0 {
			t.Fatalf("%s: no request_body latencies or errors: %+v, errors %v", s, rep.ByKind[s], rep.Errors)
		}
	}
	if _, ok := rep.FloorRatios["request_headers"]; !ok {
		t.Errorf("no floor ratios: %+v", rep.FloorRatios)
	}
	// One session read per request, one write for the request and one for
	// the output tokens its response reported (ObserveResponse marks the
	// session dirty again at the end of the body).
	if g, w := rep.OpsPerRequest["mget"], rep.OpsPerRequest["evalsha"]; g < 0.9 || g > 1.1 || w < 0.5 || w > 2.1 {
		t.Errorf("Redis commands per request: mget %.2f, evalsha %.2f", g, w)
	}
}
