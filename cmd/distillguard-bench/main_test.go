package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/distillguard/distillguard/bench"
)

// With DISTILLGUARD_BENCH_AS_MAIN set the test binary is the command, so
// `run` can start it again as its serve-noop and serve-distillguard
// children.
func TestMain(m *testing.M) {
	if os.Getenv("DISTILLGUARD_BENCH_AS_MAIN") == "1" {
		os.Exit(runMain(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func TestUsageAndErrors(t *testing.T) {
	cases := []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"help"}, 0, "commands:"},
		{[]string{"nope"}, 2, "unknown command"},
		{[]string{"run", "-list"}, 0, "default-top5"},
		{[]string{"run", "-scenarios", "nope"}, 1, "unknown scenario"},
		{[]string{"run", "-bogus"}, 2, "flag provided but not defined"},
		{[]string{"load", "-mode", "sideways"}, 1, "want streamed or duplex"},
		{[]string{"load", "-addr", "192.0.2.1:1"}, 1, "not a loopback address"},
		{[]string{"serve-noop", "-grpc-addr", "0.0.0.0:0"}, 1, "not a loopback address"},
		{[]string{"serve-read-floor", "-redis", "192.0.2.1:6379"}, 1, "not a loopback address"},
		{[]string{"serve-read-floor", "-grpc-addr", "0.0.0.0:0"}, 1, "not a loopback address"},
	}
	for _, tc := range cases {
		var out, errb bytes.Buffer
		code := runMain(tc.args, &out, &errb)
		if code != tc.code || !strings.Contains(out.String()+errb.String(), tc.out) {
			t.Errorf("%v: exit %d, output %q %q; want %d and %q", tc.args, code, out.String(), errb.String(), tc.code, tc.out)
		}
	}
}

func TestE2ESkipsWithoutEnvoy(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	var out bytes.Buffer
	if code := runMain([]string{"e2e"}, &out, &out); code != 0 || !strings.Contains(out.String(), "skipping") {
		t.Errorf("exit %d: %s", code, out.String())
	}
}

// TestRunCommand runs the matrix command end to end with both servers as
// children of the command, and the real distillguard processor in its
// serve-distillguard mode.
func TestRunCommand(t *testing.T) {
	t.Setenv("DISTILLGUARD_BENCH_AS_MAIN", "1")
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	code := runMain([]string{"run", "-scenarios", "default-top5,embeddings-3072", "-rounds", "1", "-warmup", "50ms",
		"-duration", "300ms", "-floor", "10ms", "-out", out, "-profile", "default-top5"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "| default-top5 | *ratio* |") {
		t.Errorf("no table on stdout:\n%s", stdout.String())
	}
	var rep bench.Report
	b, err := os.ReadFile(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	for _, s := range rep.Scenarios {
		dg := s.Servers[bench.NameDistillguard]
		if dg == nil || dg.Messages == 0 || dg.Errors != 0 || dg.CPUPerMsgUs <= 0 {
			t.Errorf("%s: distillguard result %+v", s.Scenario.Name, dg)
		}
	}
	for _, f := range []string{"results.md", "latency-cdf.svg", "cdf-embeddings-3072.svg", "default-top5-cpu.pprof"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s missing", f)
		}
	}
}

func TestLoadCommand(t *testing.T) {
	t.Setenv("DISTILLGUARD_BENCH_AS_MAIN", "1")
	c, err := bench.StartChild(t.Context(), bench.ServerSpec{Name: "noop", Argv: []string{os.Args[0], "serve-noop", "-grpc-addr", "{grpc}", "-admin-addr", "{admin}"}}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	jsonOut := filepath.Join(t.TempDir(), "load.json")
	var out bytes.Buffer
	code := runMain([]string{"load", "-addr", c.GRPCAddr, "-c", "4", "-duration", "200ms", "-warmup", "20ms", "-mode", "duplex", "-mix", "0:1,20:1", "-json", jsonOut}, &out, &out)
	if code != 0 || !strings.Contains(out.String(), "latency p50") {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	var res struct {
		Messages uint64  `json:"messages"`
		P99      float64 `json:"p99_us"`
	}
	b, _ := os.ReadFile(jsonOut)
	if err := json.Unmarshal(b, &res); err != nil || res.Messages == 0 || res.P99 <= 0 {
		t.Errorf("json %s: %v", b, err)
	}
}
