package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// The test binary doubles as a server child: with BENCH_TEST_CHILD=noop it
// serves the no-op processor on the addresses given, so the child-process
// machinery is tested without building anything.
func TestMain(m *testing.M) {
	if os.Getenv("BENCH_TEST_CHILD") == "noop" {
		fs := flag.NewFlagSet("child", flag.ExitOnError)
		g := fs.String("grpc-addr", "", "")
		a := fs.String("admin-addr", "", "")
		_ = fs.String("config", "", "")
		p := fs.Bool("pprof", false, "")
		_ = fs.Parse(os.Args[1:])
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		if err := Serve(ctx, ServeOptions{GRPCAddr: *g, AdminAddr: *a, Pprof: *p, Processor: NewNoop()}); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func childSpec(name string) ServerSpec {
	return ServerSpec{Name: name, Argv: []string{os.Args[0], "-grpc-addr", "{grpc}", "-admin-addr", "{admin}", "-config", "{config}", "-pprof"}}
}

func TestChildLifecycle(t *testing.T) {
	t.Setenv("BENCH_TEST_CHILD", "noop")
	dir := t.TempDir()
	spec := childSpec("noop")
	spec.Config = []byte("x: 1\n")
	c, err := StartChild(context.Background(), spec, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	if b, err := os.ReadFile(filepath.Join(dir, "noop.yaml")); err != nil || string(b) != "x: 1\n" {
		t.Errorf("config file not written: %v", err)
	}
	if c.IdleRSS < 1<<20 {
		t.Errorf("idle RSS %d bytes: not read from /proc", c.IdleRSS)
	}
	m0, err := c.Runtime()
	if err != nil {
		t.Fatal(err)
	}
	if m0.StackInuse <= 0 || m0.HeapInuse <= 0 {
		t.Errorf("runtime stats %+v", m0)
	}
	s0, _ := c.Sample()
	wl, _ := BuildWorkload(WorkloadSpec{Kind: KindStream, Tokens: 10}, 1)
	res, err := Run(context.Background(), LoadConfig{Addr: c.GRPCAddr, Concurrency: 4, Duration: 300 * time.Millisecond, Workload: wl})
	if err != nil || res.Errors != 0 {
		t.Fatalf("%v %v", err, res.ErrorSamples)
	}
	m1, _ := c.Runtime()
	s1, _ := c.Sample()
	if m1.Mallocs <= m0.Mallocs {
		t.Errorf("mallocs did not grow: %d -> %d", m0, m1)
	}
	if s1.CPU <= s0.CPU {
		t.Errorf("server CPU did not grow: %v -> %v", s0.CPU, s1.CPU)
	}
	// The gRPC health service answers, as Envoy's health check needs.
	cc, err := grpc.NewClient(c.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	hr, err := healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health check: %v %v", hr, err)
	}
	cpu, allocs := filepath.Join(dir, "cpu.pprof"), filepath.Join(dir, "allocs.pprof")
	if err := c.Profile(context.Background(), 1, cpu, allocs); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{cpu, allocs} {
		if st, err := os.Stat(f); err != nil || st.Size() == 0 {
			t.Errorf("profile %s missing", f)
		}
	}
	c.Stop()
	select {
	case <-c.exited:
	default:
		t.Fatal("child still running after Stop")
	}
}

func TestChildThatFailsToStart(t *testing.T) {
	t.Setenv("BENCH_TEST_CHILD", "")
	spec := ServerSpec{Name: "bad", Argv: []string{"/bin/sh", "-c", "echo broken config >&2; exit 3"}}
	_, err := StartChild(context.Background(), spec, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "broken config") {
		t.Errorf("error %v does not carry the child's output", err)
	}
}

// TestMatrixAA runs the whole matrix path (children, rounds, report, plots)
// with the no-op processor on both sides: an A/A run.
func TestMatrixAA(t *testing.T) {
	t.Setenv("BENCH_TEST_CHILD", "noop")
	out := t.TempDir()
	scs, err := SelectScenarios(DefaultScenarios(2000), "default-top5,open-loop-top5,json-100k")
	if err != nil {
		t.Fatal(err)
	}
	for i := range scs {
		scs[i].Concurrency = 4
	}
	var log bytes.Buffer
	rep, err := RunMatrix(context.Background(), MatrixConfig{
		Scenarios: scs, Rounds: 2, Warmup: 50 * time.Millisecond, Duration: 250 * time.Millisecond,
		Noop: childSpec("x"), Distillguard: childSpec("y"), OutDir: out, Log: &log, Seed: 1,
		Profile: "default-top5", FloorTime: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(log.String(), "round "); n != 12 {
		t.Errorf("%d round lines, want 12:\n%s", n, log.String())
	}
	if rep.Errors() != 0 {
		t.Fatalf("errors in an A/A run")
	}
	for _, s := range rep.Scenarios {
		for name, sv := range s.Servers {
			if sv.Messages == 0 || sv.MsgsPerSec <= 0 || sv.Latency.P50 <= 0 || sv.CPUPerMsgUs <= 0 || sv.AllocsPerMsg == nil || sv.PeakRSSKiB <= 0 {
				t.Errorf("%s/%s: incomplete result %+v", s.Scenario.Name, name, sv)
			}
		}
		if s.Ratios.P50 <= 0 || s.Ratios.Throughput <= 0 || s.Floor == nil {
			t.Errorf("%s: ratios %+v floor %v", s.Scenario.Name, s.Ratios, s.Floor)
		}
		if s.PairSpread == nil || s.PairSpread.Throughput[0] <= 0 || s.PairSpread.Throughput[0] > s.PairSpread.Throughput[1] {
			t.Errorf("%s: pair spread %+v", s.Scenario.Name, s.PairSpread)
		}
		if len(s.Rounds) != 4 || s.Rounds[0].Server != NameNoop || s.Rounds[1].Server != NameDistillguard || s.Rounds[2].Server != NameNoop {
			t.Errorf("%s: rounds do not alternate: %+v", s.Scenario.Name, s.Rounds)
		}
	}
	if p := rep.Scenarios[1].Servers[NameNoop].SendLag; p == nil && rep.Scenarios[1].Scenario.Rate > 0 {
		t.Log("open loop never late (fine on an idle machine)")
	}
	var md, js bytes.Buffer
	if err := rep.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back.Scenarios) != 3 {
		t.Fatalf("JSON does not round-trip: %v", err)
	}
	if len(back.Scenarios[0].Servers[NameNoop].Latency.Bucket) == 0 {
		t.Error("JSON lacks the latency buckets")
	}
	for _, want := range []string{"| default-top5 | noop |", "| default-top5 | *ratio* |", "Targets:", rep.Machine.GoVersion} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown lacks %q", want)
		}
	}
	if err := rep.WritePlots(out); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"latency-cdf.svg", "cdf-json-100k.svg", "default-top5-cpu.pprof", "default-top5-allocs.pprof"} {
		b, err := os.ReadFile(filepath.Join(out, f))
		if err != nil || len(b) == 0 {
			t.Errorf("%s missing: %v", f, err)
		}
		if strings.HasSuffix(f, ".svg") && !bytes.Contains(b, []byte("<svg")) {
			t.Errorf("%s is not an SVG", f)
		}
	}
}

// TestServing: another mode of the same binary keeps the binary and the
// address flags and never shares the original's argv.
func TestServing(t *testing.T) {
	noop := ServerSpec{Name: NameNoop, Argv: []string{"/bin/b", "serve-noop", "-grpc-addr", "{grpc}", "-admin-addr", "{admin}"}}
	got := noop.Serving("floor+read", "serve-read-floor", "-redis", "127.0.0.1:1")
	want := []string{"/bin/b", "serve-read-floor", "-redis", "127.0.0.1:1", "-grpc-addr", "{grpc}", "-admin-addr", "{admin}"}
	if got.Name != "floor+read" || !slices.Equal(got.Argv, want) {
		t.Errorf("Serving: %s %q, want %q", got.Name, got.Argv, want)
	}
	got.Argv[1] = "changed"
	if noop.Argv[1] != "serve-noop" || noop.Name != NameNoop {
		t.Errorf("the original changed: %s %q", noop.Name, noop.Argv)
	}
}
