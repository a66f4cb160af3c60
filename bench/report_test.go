package bench

import (
	"bytes"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/distillguard/distillguard/internal/golden"
)

func TestCPUModel(t *testing.T) {
	cases := []struct{ in, want string }{
		{"processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n", "AMD EPYC 7B13"},
		{"model name : Intel(R) Xeon(R)\nmodel name : other\n", "Intel(R) Xeon(R)"},
		{"model name\t:\nmodel name\t: second\n", "second"},
		{"nothing here", "unknown"},
		{"", "unknown"},
	}
	for _, tc := range cases {
		if got := cpuModel(strings.NewReader(tc.in)); got != tc.want {
			t.Errorf("cpuModel(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestScanMetrics(t *testing.T) {
	cases := []struct {
		in   string
		want uint64
		err  bool
	}{
		{"# TYPE go_memstats_mallocs_total counter\ngo_memstats_mallocs_total 12345\n", 12345, false},
		{"go_memstats_mallocs_total 1.5e+06\n", 1500000, false},
		{"# TYPE go_memstats_mallocs_total counter\ngo_memstats_mallocs_total_x 1\ngo_memstats_mallocs_total 7\n", 7, false},
		{"other 1\n", 0, true},
		{"go_memstats_mallocs_total -4\n", 0, true},
		{"garbage {{{\n", 0, true},
	}
	for _, tc := range cases {
		got, err := scanMetrics(strings.NewReader(tc.in), "go_memstats_mallocs_total")
		if (err != nil) != tc.err || (err == nil && uint64(got[0]) != tc.want) {
			t.Errorf("scanMetrics(%q) = %v, %v; want %d, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestScanMetricsSeveral(t *testing.T) {
	in := "# TYPE a gauge\na 2\n# TYPE b counter\nb 3\nc 4\n"
	v, err := scanMetrics(strings.NewReader(in), "a", "b", "c")
	if err != nil || v[0] != 2 || v[1] != 3 || v[2] != 4 {
		t.Errorf("got %v, %v", v, err)
	}
	if _, err := scanMetrics(strings.NewReader(in), "a", "missing"); err == nil {
		t.Error("a missing series must be an error")
	}
}

func FuzzScanMetrics(f *testing.F) {
	f.Add("# TYPE go_memstats_mallocs_total counter\ngo_memstats_mallocs_total 12345\n")
	f.Add("go_memstats_mallocs_total{a=\"b\"} 3\n")
	f.Add("go_memstats_mallocs_total NaN\n")
	f.Fuzz(func(t *testing.T, s string) {
		v, err := scanMetrics(strings.NewReader(s), "go_memstats_mallocs_total")
		if err == nil && !(v[0] >= 0 && v[0] <= 1<<63) {
			t.Fatalf("value %v out of range", v[0])
		}
	})
}

func syntheticHist(base time.Duration, n int) *Hist {
	h := &Hist{}
	for i := 1; i <= n; i++ {
		h.Add(base + time.Duration(i)*base/time.Duration(n))
	}
	return h
}

func syntheticReport() *Report {
	mk := func(base time.Duration, rate float64, cpu float64) *ServerResult {
		h := syntheticHist(base, 1000)
		allocs := 12.0
		return &ServerResult{Messages: 1000, Exchanges: 10, Seconds: 1, MsgsPerSec: rate, Latency: summarize(h),
			CPUPerMsgUs: cpu, AllocsPerMsg: &allocs, RSSPerStreamKiB: 9.5, hist: h}
	}
	var scs []*ScenarioReport
	for _, sc := range DefaultScenarios(8000) {
		if sc.Name != "default-top5" && sc.Name != "streams-1000" && sc.Name != "open-loop-top5" {
			continue
		}
		n, d := mk(100*time.Microsecond, 50000, 8), mk(105*time.Microsecond, 47000, 9)
		sr := &ScenarioReport{Scenario: sc, Servers: map[string]*ServerResult{NameNoop: n, NameDistillguard: d}, Ratios: ratios(n, d),
			Floor: &FloorResult{Messages: 100, NsPerMsg: 2500, AllocsPerMsg: 1}}
		scs = append(scs, sr)
	}
	return &Report{
		Machine:   Machine{CPU: "Test CPU", Cores: 2, GoVersion: "go1.26.8", OS: "linux/amd64", Kernel: "6.1"},
		Settings:  Settings{Rounds: 2, WarmupSec: 1, DurationSec: 3, Conns: 2, Seed: 1},
		Scenarios: scs,
	}
}

func TestMarkdownGolden(t *testing.T) {
	var b bytes.Buffer
	if err := syntheticReport().WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	golden.Check(t, filepath.Join("testdata", "results.md.golden"), b.Bytes(), *update)
}

func TestRatiosAndTargets(t *testing.T) {
	rep := syntheticReport()
	r := rep.Scenarios[0].Ratios
	if math.Abs(r.Throughput-0.94) > 0.001 || math.Abs(r.CPUPerMsg-9.0/8) > 0.001 || r.AllocsPerMsg == nil || *r.AllocsPerMsg != 1 {
		t.Errorf("ratios %+v", r)
	}
	if r.P50 < 1.03 || r.P50 > 1.07 {
		t.Errorf("p50 ratio %v, want about 1.05", r.P50)
	}
	if !rep.TargetsMet() {
		t.Error("targets should be met")
	}
	rep.Scenarios[0].Ratios.Throughput = 0.8
	if rep.TargetsMet() {
		t.Error("a throughput ratio of 0.8 must miss the target")
	}
	rep.Scenarios[0].Ratios.Throughput = 0.95
	rep.Scenarios[2].Servers[NameDistillguard].RSSPerStreamKiB = 40
	if rep.TargetsMet() {
		t.Error("40 KiB per stream must miss the target")
	}
	if !math.IsNaN(ratio(1, 0)) || fmtRatio(math.NaN()) != "–" {
		t.Error("division by zero must show as –")
	}
}

func TestPlotCDF(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/cdf.svg"
	if err := PlotCDF(path, "t", []string{"a", "b"}, []*Hist{syntheticHist(time.Millisecond, 500), syntheticHist(2*time.Millisecond, 500)}); err != nil {
		t.Fatal(err)
	}
	if err := PlotCDF(dir+"/empty.svg", "t", []string{"a"}, []*Hist{{}}); err != nil {
		t.Fatalf("an empty histogram must still plot: %v", err)
	}
	if nines(1, 1000) <= nines(0.999, 1000) || nines(0, 10) != 0 {
		t.Error("nines scale not increasing")
	}
}
