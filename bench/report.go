package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Report is the result of a matrix run, written as JSON and markdown.
type Report struct {
	Machine   Machine           `json:"machine"`
	Started   time.Time         `json:"started"`
	Finished  time.Time         `json:"finished"`
	Settings  Settings          `json:"settings"`
	Scenarios []*ScenarioReport `json:"scenarios"`
}

// Machine describes where the numbers were measured.
type Machine struct {
	CPU       string `json:"cpu"`
	Cores     int    `json:"cores"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
	Kernel    string `json:"kernel,omitempty"`
}

// Settings are the run parameters.
type Settings struct {
	Rounds              int      `json:"rounds"`
	WarmupSec           float64  `json:"warmup_s"`
	DurationSec         float64  `json:"duration_s"`
	Conns               int      `json:"conns"`
	Seed                uint64   `json:"seed"`
	NoopCommand         []string `json:"noop_command"`
	DistillguardCommand []string `json:"distillguard_command"`
}

// ScenarioReport is one scenario's results.
type ScenarioReport struct {
	Scenario Scenario                 `json:"scenario"`
	Servers  map[string]*ServerResult `json:"servers"`
	Ratios   Ratios                   `json:"ratios"`
	Floor    *FloorResult             `json:"rewrite_floor,omitempty"`
	Rounds   []RoundSummary           `json:"rounds"`
	// PairSpread is the min-max of the ratios over round pairs.
	PairSpread *Spread `json:"pair_spread,omitempty"`
	// LoadAvg is the machine's 1-minute load average when the scenario
	// started.
	LoadAvg float64 `json:"load_avg"`
}

// Spread is the [min, max] of per-round-pair ratios.
type Spread struct {
	Throughput [2]float64 `json:"throughput"`
	P50        [2]float64 `json:"p50"`
	P99        [2]float64 `json:"p99"`
}

// RoundSummary is one round, for judging run-to-run spread.
type RoundSummary struct {
	Server     string  `json:"server"`
	Round      int     `json:"round"`
	MsgsPerSec float64 `json:"msgs_per_s"`
	P50us      float64 `json:"p50_us"`
	P99us      float64 `json:"p99_us"`
	Errors     uint64  `json:"errors"`
}

// Percentiles of a latency distribution, in microseconds.
type Percentiles struct {
	Count  uint64     `json:"count"`
	P50    float64    `json:"p50_us"`
	P90    float64    `json:"p90_us"`
	P99    float64    `json:"p99_us"`
	P999   float64    `json:"p99_9_us"`
	Max    float64    `json:"max_us"`
	Mean   float64    `json:"mean_us"`
	Bucket [][2]int64 `json:"buckets_ns,omitempty"`
}

func summarize(h *Hist) Percentiles {
	return Percentiles{
		Count: h.Count,
		P50:   us(h.Quantile(0.5)), P90: us(h.Quantile(0.9)), P99: us(h.Quantile(0.99)), P999: us(h.Quantile(0.999)),
		Max: us(time.Duration(h.Max)), Mean: us(h.Mean()),
	}
}

// ServerResult is one server's aggregate over a scenario's rounds.
type ServerResult struct {
	Messages   uint64                 `json:"messages"`
	Exchanges  uint64                 `json:"exchanges"`
	Errors     uint64                 `json:"errors"`
	Rejected   uint64                 `json:"rejected"`
	Seconds    float64                `json:"seconds"`
	MsgsPerSec float64                `json:"msgs_per_s"`
	Latency    Percentiles            `json:"latency"`
	ByKind     map[string]Percentiles `json:"latency_by_kind"`
	// SendLag is how late open-loop sends were against their schedule
	// (only when sends were late).
	SendLag           *Percentiles `json:"send_lag,omitempty"`
	CPUPerMsgUs       float64      `json:"server_cpu_per_msg_us"`
	ClientCPUPerMsgUs float64      `json:"client_cpu_per_msg_us"`
	AllocsPerMsg      *float64     `json:"server_allocs_per_msg,omitempty"`
	IdleRSSKiB        float64      `json:"idle_rss_kib"`
	PeakRSSKiB        float64      `json:"peak_rss_kib"`
	SteadyRSSKiB      float64      `json:"steady_rss_kib"`
	// RSSPerStreamKiB is (steady RSS - idle RSS) / streams, steady being
	// the median of the samples taken every 100ms in a window;
	// PeakRSSPerStreamKiB uses the largest sample instead.
	RSSPerStreamKiB     float64 `json:"rss_per_stream_kib"`
	PeakRSSPerStreamKiB float64 `json:"peak_rss_per_stream_kib"`
	// HeapInuseKiB and StackInuseKiB are the Go runtime's heap and
	// goroutine-stack figures at the end of a window (largest over rounds).
	HeapInuseKiB  float64  `json:"heap_inuse_kib"`
	StackInuseKiB float64  `json:"stack_inuse_kib"`
	ErrorSamples  []string `json:"error_samples,omitempty"`

	hist *Hist
}

// Ratios are distillguard / noop.
type Ratios struct {
	P50          float64  `json:"p50"`
	P90          float64  `json:"p90"`
	P99          float64  `json:"p99"`
	P999         float64  `json:"p99_9"`
	Throughput   float64  `json:"throughput"`
	CPUPerMsg    float64  `json:"cpu_per_msg"`
	AllocsPerMsg *float64 `json:"allocs_per_msg,omitempty"`
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

func ratios(noop, dg *ServerResult) Ratios {
	r := Ratios{
		P50:        ratio(dg.Latency.P50, noop.Latency.P50),
		P90:        ratio(dg.Latency.P90, noop.Latency.P90),
		P99:        ratio(dg.Latency.P99, noop.Latency.P99),
		P999:       ratio(dg.Latency.P999, noop.Latency.P999),
		Throughput: ratio(dg.MsgsPerSec, noop.MsgsPerSec),
		CPUPerMsg:  ratio(dg.CPUPerMsgUs, noop.CPUPerMsgUs),
	}
	if dg.AllocsPerMsg != nil && noop.AllocsPerMsg != nil {
		a := ratio(*dg.AllocsPerMsg, *noop.AllocsPerMsg)
		r.AllocsPerMsg = &a
	}
	return r
}

// DescribeMachine reads the CPU model from /proc/cpuinfo and the kernel
// release.
func DescribeMachine() Machine {
	m := Machine{CPU: "unknown", Cores: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		m.CPU = cpuModel(f)
		f.Close()
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// cpuModel returns the first "model name" of /proc/cpuinfo text.
func cpuModel(r io.Reader) string {
	sc := bufio.NewScanner(io.LimitReader(r, 4<<20))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			if v = strings.TrimSpace(v); v != "" {
				return v
			}
		}
	}
	return "unknown"
}

// WriteJSON writes the report, with each server's latency buckets so the
// CDFs can be redrawn.
func (r *Report) WriteJSON(w io.Writer) error {
	for _, s := range r.Scenarios {
		for _, sv := range s.Servers {
			if sv.hist != nil {
				sv.Latency.Bucket = sv.hist.Buckets()
			}
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// The published goals: distillguard/noop ratios for the headline scenario,
// and RSS per concurrent stream for the many-streams scenario.
const (
	TargetP50             = 1.10 // p50 latency ratio, at most
	TargetP99             = 1.25 // p99 latency ratio, at most
	TargetThroughput      = 0.90 // throughput ratio, at least
	TargetRSSPerStreamKiB = 16.0 // KiB per stream, at most
)

func fmtUs(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2f s", v/1e6)
	case v >= 1000:
		return fmt.Sprintf("%.2f ms", v/1000)
	default:
		return fmt.Sprintf("%.0f µs", v)
	}
}

func fmtRatio(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "–"
	}
	return fmt.Sprintf("%.2fx", v)
}

func passFail(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

// WriteMarkdown writes the README performance table.
func (r *Report) WriteMarkdown(w io.Writer) error {
	b := &strings.Builder{}
	m := r.Machine
	fmt.Fprintf(b, "Measured on %s, %d cores, %s, Linux %s; %d alternating rounds of %gs (after %gs warm-up) per server and scenario. ",
		m.CPU, m.Cores, m.GoVersion, m.Kernel, r.Settings.Rounds, r.Settings.DurationSec, r.Settings.WarmupSec)
	b.WriteString("The load generator runs on the same cores. Latency is per ext_proc message, send to reply; " +
		"noop is a processor that returns empty replies; CPU, allocations and RSS are the server process's " +
		"(RSS/stream: median RSS in the window minus idle RSS, over concurrent streams).\n\n")
	busiest := 0.0
	for _, s := range r.Scenarios {
		busiest = max(busiest, s.LoadAvg)
	}
	if busiest > float64(m.Cores) {
		fmt.Fprintf(b, "**The machine was shared and busy during this run (load average up to %.1f on %d cores): "+
			"latency and throughput ratios are unreliable; CPU and allocations per message are the steadier columns.**\n\n", busiest, m.Cores)
	}
	b.WriteString("| scenario | server | p50 | p90 | p99 | p99.9 | msg/s | CPU/msg | allocs/msg | RSS/stream | errors |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, s := range r.Scenarios {
		for _, name := range []string{NameNoop, NameDistillguard} {
			sv := s.Servers[name]
			if sv == nil {
				continue
			}
			allocs := "–"
			if sv.AllocsPerMsg != nil {
				allocs = fmt.Sprintf("%.1f", *sv.AllocsPerMsg)
			}
			fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %.0f | %.1f µs | %s | %.1f KiB | %d |\n",
				s.Scenario.Name, name, fmtUs(sv.Latency.P50), fmtUs(sv.Latency.P90), fmtUs(sv.Latency.P99), fmtUs(sv.Latency.P999),
				sv.MsgsPerSec, sv.CPUPerMsgUs, allocs, sv.RSSPerStreamKiB, sv.Errors)
		}
		q := s.Ratios
		allocs := "–"
		if q.AllocsPerMsg != nil {
			allocs = fmtRatio(*q.AllocsPerMsg)
		}
		fmt.Fprintf(b, "| %s | *ratio* | %s | %s | %s | %s | %s | %s | %s | | |\n",
			s.Scenario.Name, fmtRatio(q.P50), fmtRatio(q.P90), fmtRatio(q.P99), fmtRatio(q.P999),
			fmtRatio(q.Throughput), fmtRatio(q.CPUPerMsg), allocs)
	}

	b.WriteString("\nScenarios:\n\n")
	for _, s := range r.Scenarios {
		sc := s.Scenario
		load := "closed loop"
		if sc.Rate > 0 {
			load = fmt.Sprintf("open loop, %.0f msg/s", sc.Rate)
		}
		fmt.Fprintf(b, "- **%s**: %s; %s, %d concurrent streams, %s.", sc.Name, sc.Description, sc.ModeName, sc.Concurrency, load)
		if sp := s.PairSpread; sp != nil {
			fmt.Fprintf(b, " Ratios per round pair: p50 %.2f–%.2fx, p99 %.2f–%.2fx, throughput %.2f–%.2fx.",
				sp.P50[0], sp.P50[1], sp.P99[0], sp.P99[1], sp.Throughput[0], sp.Throughput[1])
		}
		if s.LoadAvg >= 0 {
			fmt.Fprintf(b, " Load average at start %.1f.", s.LoadAvg)
		}
		if f := s.Floor; f != nil {
			fmt.Fprintf(b, " Rewrite alone, in process: %.2f µs CPU/msg, %.1f allocs/msg.", f.NsPerMsg/1000, f.AllocsPerMsg)
		}
		if dg := s.Servers[NameDistillguard]; dg != nil && dg.Rejected > 0 {
			fmt.Fprintf(b, " distillguard rejected %d exchanges.", dg.Rejected)
		}
		b.WriteString("\n")
	}

	var lines []string
	for _, s := range r.Scenarios {
		if s.Scenario.Headline {
			q := s.Ratios
			lines = append(lines,
				fmt.Sprintf("- %s p50 %s (target <= %.2fx): %s", s.Scenario.Name, fmtRatio(q.P50), TargetP50, passFail(q.P50 <= TargetP50)),
				fmt.Sprintf("- %s p99 %s (target <= %.2fx): %s", s.Scenario.Name, fmtRatio(q.P99), TargetP99, passFail(q.P99 <= TargetP99)),
				fmt.Sprintf("- %s throughput %s (target >= %.2fx): %s", s.Scenario.Name, fmtRatio(q.Throughput), TargetThroughput, passFail(q.Throughput >= TargetThroughput)))
		}
		if dg, noop := s.Servers[NameDistillguard], s.Servers[NameNoop]; s.Scenario.RSS && dg != nil && noop != nil {
			n := float64(s.Scenario.Concurrency)
			lines = append(lines, fmt.Sprintf("- %s: distillguard RSS %.1f KiB per concurrent stream (target <= %.0f KiB): %s; %d errors. "+
				"For scale, per stream: noop RSS %.1f KiB; goroutine stacks %.1f KiB (noop %.1f), Go heap in use %.1f KiB (noop %.1f).",
				s.Scenario.Name, dg.RSSPerStreamKiB, TargetRSSPerStreamKiB, passFail(dg.RSSPerStreamKiB <= TargetRSSPerStreamKiB), dg.Errors,
				noop.RSSPerStreamKiB, dg.StackInuseKiB/n, noop.StackInuseKiB/n, dg.HeapInuseKiB/n, noop.HeapInuseKiB/n))
		}
	}
	if len(lines) > 0 {
		b.WriteString("\nTargets:\n\n" + strings.Join(lines, "\n") + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Errors is the number of failed messages over all scenarios and servers.
func (r *Report) Errors() uint64 {
	var n uint64
	for _, s := range r.Scenarios {
		for _, sv := range s.Servers {
			n += sv.Errors
		}
	}
	return n
}

// TargetsMet reports whether the headline and many-streams scenarios in the
// report meet the targets (a report without them meets them vacuously).
func (r *Report) TargetsMet() bool {
	for _, s := range r.Scenarios {
		q := s.Ratios
		if s.Scenario.Headline && !(q.P50 <= TargetP50 && q.P99 <= TargetP99 && q.Throughput >= TargetThroughput) {
			return false
		}
		if dg := s.Servers[NameDistillguard]; s.Scenario.RSS && dg != nil && dg.RSSPerStreamKiB > TargetRSSPerStreamKiB {
			return false
		}
	}
	return true
}

// WritePlots draws one latency CDF per scenario (cdf-<name>.svg) and copies
// the headline scenario's to latency-cdf.svg.
func (r *Report) WritePlots(dir string) error {
	for _, s := range r.Scenarios {
		noop, dg := s.Servers[NameNoop], s.Servers[NameDistillguard]
		if noop == nil || dg == nil {
			continue
		}
		title := fmt.Sprintf("%s: %s, %d streams", s.Scenario.Name, s.Scenario.ModeName, s.Scenario.Concurrency)
		names := []string{NameNoop, NameDistillguard}
		hists := []*Hist{noop.hist, dg.hist}
		if err := PlotCDF(filepath.Join(dir, "cdf-"+s.Scenario.Name+".svg"), title, names, hists); err != nil {
			return err
		}
		if s.Scenario.Headline {
			if err := PlotCDF(filepath.Join(dir, "latency-cdf.svg"), title, names, hists); err != nil {
				return err
			}
		}
	}
	return nil
}
