package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// Server names in reports.
const (
	NameNoop         = "noop"
	NameDistillguard = "distillguard"
)

// MatrixConfig configures RunMatrix.
type MatrixConfig struct {
	Scenarios []Scenario
	// Rounds per server: noop, distillguard, noop, distillguard, ... so
	// that drift of the machine falls on both alike.
	Rounds   int
	Warmup   time.Duration
	Duration time.Duration
	Conns    int
	Seed     uint64
	// Noop and Distillguard start the servers; the distillguard spec's
	// Config is replaced by each scenario's.
	Noop         ServerSpec
	Distillguard ServerSpec
	OutDir       string
	// Profile names a scenario during whose first distillguard round CPU
	// and allocation profiles of the server are captured (the server must
	// serve net/http/pprof on its admin address).
	Profile string
	// FloorTime is how long the in-process rewrite floor is measured per
	// scenario; 0 skips it.
	FloorTime time.Duration
	Prompts   []string
	// Log receives a line per round; Bar, when set, a live progress bar
	// (for a terminal).
	Log io.Writer
	Bar io.Writer
}

// RunMatrix runs every scenario against both servers and returns the report.
func RunMatrix(ctx context.Context, mc MatrixConfig) (*Report, error) {
	if mc.Rounds < 1 {
		mc.Rounds = 1
	}
	if mc.Log == nil {
		mc.Log = io.Discard
	}
	if err := os.MkdirAll(mc.OutDir, 0o755); err != nil {
		return nil, err
	}
	rep := &Report{
		Machine: DescribeMachine(),
		Started: time.Now().UTC(),
		Settings: Settings{
			Rounds: mc.Rounds, WarmupSec: mc.Warmup.Seconds(), DurationSec: mc.Duration.Seconds(),
			Conns: mc.Conns, Seed: mc.Seed,
			NoopCommand: mc.Noop.Argv, DistillguardCommand: mc.Distillguard.Argv,
		},
	}
	total := len(mc.Scenarios) * mc.Rounds * 2
	step := 0
	for _, sc := range mc.Scenarios {
		sr, err := runScenario(ctx, &mc, sc, &step, total)
		if err != nil {
			return rep, fmt.Errorf("scenario %s: %w", sc.Name, err)
		}
		rep.Scenarios = append(rep.Scenarios, sr)
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
	}
	rep.Finished = time.Now().UTC()
	return rep, nil
}

// serverRun accumulates one server's rounds in a scenario.
type serverRun struct {
	hist      Hist
	byKind    [numKinds]Hist
	lag       Hist
	messages  uint64
	exchanges uint64
	errors    uint64
	rejected  uint64
	elapsed   time.Duration
	cpu       time.Duration
	clientCPU time.Duration
	mallocs   uint64
	allocsOK  bool
	idleRSS   int64
	peakRSS   int64
	// steadyRSS is the largest per-round median of the RSS samples.
	steadyRSS int64
	// heapInuse and stackInuse are the largest end-of-window readings, to
	// tell what the RSS is made of.
	heapInuse, stackInuse int64
	samples               []string
}

func runScenario(ctx context.Context, mc *MatrixConfig, sc Scenario, step *int, total int) (*ScenarioReport, error) {
	wl, err := BuildWorkload(withPrompts(sc.Workload, mc.Prompts), mc.Seed)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(mc.OutDir, "servers", sc.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	noopSpec := mc.Noop
	noopSpec.Name = NameNoop
	dgSpec := mc.Distillguard
	dgSpec.Name = NameDistillguard
	dgSpec.Config = []byte(sc.Config)
	noop, err := StartChild(ctx, noopSpec, dir)
	if err != nil {
		return nil, err
	}
	defer noop.Stop()
	dg, err := StartChild(ctx, dgSpec, dir)
	if err != nil {
		return nil, err
	}
	defer dg.Stop()

	runs := map[string]*serverRun{
		NameNoop:         {idleRSS: noop.IdleRSS, allocsOK: true},
		NameDistillguard: {idleRSS: dg.IdleRSS, allocsOK: true},
	}
	sr := &ScenarioReport{Scenario: sc, Servers: map[string]*ServerResult{}, LoadAvg: loadAvg()}
	for round := 1; round <= mc.Rounds; round++ {
		for _, c := range []*Child{noop, dg} {
			*step++
			profile := mc.Profile == sc.Name && c == dg && round == 1
			res, err := runRound(ctx, mc, sc, wl, c, runs[c.Name], profile)
			if err != nil {
				return nil, err
			}
			sr.Rounds = append(sr.Rounds, RoundSummary{
				Server: c.Name, Round: round, MsgsPerSec: res.MessagesPerSec(),
				P50us: us(res.Latency.Quantile(0.5)), P99us: us(res.Latency.Quantile(0.99)), Errors: res.Errors,
			})
			fmt.Fprintf(mc.Log, "[%3d/%d] %-20s %-12s round %d/%d %9.0f msg/s  p50 %8s  p99 %8s  errors %d\n",
				*step, total, sc.Name, c.Name, round, mc.Rounds, res.MessagesPerSec(),
				fmtDur(res.Latency.Quantile(0.5)), fmtDur(res.Latency.Quantile(0.99)), res.Errors)
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
		}
	}
	for name, r := range runs {
		sr.Servers[name] = r.result(sc.Concurrency)
	}
	sr.Ratios = ratios(sr.Servers[NameNoop], sr.Servers[NameDistillguard])
	sr.PairSpread = pairSpread(sr.Rounds)
	if mc.FloorTime > 0 {
		p, err := sc.outputPolicy()
		if err != nil {
			return nil, err
		}
		f := RewriteFloor(wl, p, mc.FloorTime)
		sr.Floor = &f
	}
	return sr, nil
}

func withPrompts(s WorkloadSpec, prompts []string) WorkloadSpec {
	if len(prompts) > 0 {
		s.Prompts = prompts
	}
	return s
}

// runRound runs one load round against c and folds it into acc.
func runRound(ctx context.Context, mc *MatrixConfig, sc Scenario, wl *Workload, c *Child, acc *serverRun, profile bool) (*LoadResult, error) {
	var (
		s0, s1   ProcSample
		m0, m1   RuntimeStats
		mErr     error
		sampErr  error
		peak     int64
		rss      []int64
		stopSamp = make(chan struct{})
		sampDone = make(chan struct{})
		profDone = make(chan error, 1)
	)
	// RSS is sampled from the window's start to its end by a goroutine
	// owned by this round.
	sampler := func() {
		defer close(sampDone)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if s, err := c.Sample(); err == nil {
				peak = max(peak, s.RSS)
				if len(rss) < 100000 {
					rss = append(rss, s.RSS)
				}
			}
			select {
			case <-stopSamp:
				return
			case <-t.C:
			}
		}
	}
	var once sync.Once
	onWindow := func(start bool) {
		if start {
			s0, sampErr = c.Sample()
			m0, mErr = c.Runtime()
			go sampler()
			if profile {
				secs := max(int(mc.Duration.Seconds())-1, 1)
				go func() {
					profDone <- c.Profile(ctx, secs,
						filepath.Join(mc.OutDir, sc.Name+"-cpu.pprof"),
						filepath.Join(mc.OutDir, sc.Name+"-allocs.pprof"))
				}()
			}
			return
		}
		once.Do(func() {
			var err error
			s1, err = c.Sample()
			sampErr = errors.Join(sampErr, err)
			var e2 error
			m1, e2 = c.Runtime()
			mErr = errors.Join(mErr, e2)
			close(stopSamp)
			<-sampDone
		})
	}
	var bar func(time.Duration, uint64, uint64)
	if mc.Bar != nil {
		bar = func(in time.Duration, msgs, errs uint64) {
			drawBar(mc.Bar, fmt.Sprintf("%s %s", sc.Name, c.Name), in, mc.Duration, msgs, errs)
		}
	}
	res, err := Run(ctx, LoadConfig{
		Addr: c.GRPCAddr, Conns: mc.Conns, Concurrency: sc.Concurrency,
		Warmup: mc.Warmup, Duration: mc.Duration, Rate: sc.Rate, Mode: sc.Mode,
		Workload: wl, Seed: mc.Seed, DistinctSessions: sc.DistinctSessions,
		OnWindow: onWindow, Progress: bar,
	})
	if mc.Bar != nil {
		clearBar(mc.Bar)
	}
	if err != nil {
		return nil, err
	}
	if profile {
		if perr := <-profDone; perr != nil {
			fmt.Fprintf(mc.Log, "profile %s: %v\n", sc.Name, perr)
		}
	}
	if sampErr != nil {
		return nil, fmt.Errorf("%s: /proc: %w", c.Name, sampErr)
	}
	acc.hist.Merge(res.Latency)
	for k := range acc.byKind {
		acc.byKind[k].Merge(res.ByKind[k])
	}
	acc.lag.Merge(res.SendLag)
	acc.messages += res.Messages
	acc.exchanges += res.Exchanges
	acc.errors += res.Errors
	acc.rejected += res.Rejected
	acc.elapsed += res.Elapsed
	acc.cpu += s1.CPU - s0.CPU
	acc.clientCPU += res.ClientCPU
	if mErr != nil || m1.Mallocs < m0.Mallocs {
		acc.allocsOK = false
	} else {
		acc.mallocs += m1.Mallocs - m0.Mallocs
		acc.heapInuse = max(acc.heapInuse, m1.HeapInuse)
		acc.stackInuse = max(acc.stackInuse, m1.StackInuse)
	}
	acc.peakRSS = max(acc.peakRSS, peak)
	if len(rss) > 0 {
		slices.Sort(rss)
		acc.steadyRSS = max(acc.steadyRSS, rss[len(rss)/2])
	}
	if len(acc.samples) < 10 {
		acc.samples = append(acc.samples, res.ErrorSamples...)
	}
	return res, nil
}

func (r *serverRun) result(concurrency int) *ServerResult {
	out := &ServerResult{
		Messages: r.messages, Exchanges: r.exchanges, Errors: r.errors, Rejected: r.rejected,
		Seconds:      r.elapsed.Seconds(),
		Latency:      summarize(&r.hist),
		ByKind:       map[string]Percentiles{},
		IdleRSSKiB:   float64(r.idleRSS) / 1024,
		PeakRSSKiB:   float64(r.peakRSS) / 1024,
		SteadyRSSKiB: float64(r.steadyRSS) / 1024,
		ErrorSamples: r.samples,
		hist:         &r.hist,
	}
	for k := range r.byKind {
		if r.byKind[k].Count > 0 {
			out.ByKind[KindName(k)] = summarize(&r.byKind[k])
		}
	}
	if r.lag.Count > 0 {
		p := summarize(&r.lag)
		out.SendLag = &p
	}
	if r.elapsed > 0 {
		out.MsgsPerSec = float64(r.messages) / r.elapsed.Seconds()
	}
	if r.messages > 0 {
		out.CPUPerMsgUs = us(r.cpu) / float64(r.messages)
		out.ClientCPUPerMsgUs = us(r.clientCPU) / float64(r.messages)
		if r.allocsOK {
			a := float64(r.mallocs) / float64(r.messages)
			out.AllocsPerMsg = &a
		}
	}
	if concurrency > 0 {
		out.RSSPerStreamKiB = float64(max(r.steadyRSS-r.idleRSS, 0)) / 1024 / float64(concurrency)
		out.PeakRSSPerStreamKiB = float64(max(r.peakRSS-r.idleRSS, 0)) / 1024 / float64(concurrency)
		out.HeapInuseKiB = float64(r.heapInuse) / 1024
		out.StackInuseKiB = float64(r.stackInuse) / 1024
	}
	return out
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.0fµs", float64(d)/1e3)
	}
}

// pairSpread is the range of distillguard/noop ratios over round pairs
// (noop round i, distillguard round i): how much of a ratio is noise.
func pairSpread(rounds []RoundSummary) *Spread {
	byRound := map[int]map[string]RoundSummary{}
	for _, r := range rounds {
		if byRound[r.Round] == nil {
			byRound[r.Round] = map[string]RoundSummary{}
		}
		byRound[r.Round][r.Server] = r
	}
	var sp *Spread
	for _, m := range byRound {
		n, okN := m[NameNoop]
		d, okD := m[NameDistillguard]
		if !okN || !okD || n.MsgsPerSec == 0 || n.P50us == 0 || n.P99us == 0 {
			continue
		}
		t, p50, p99 := d.MsgsPerSec/n.MsgsPerSec, d.P50us/n.P50us, d.P99us/n.P99us
		if sp == nil {
			sp = &Spread{Throughput: [2]float64{t, t}, P50: [2]float64{p50, p50}, P99: [2]float64{p99, p99}}
			continue
		}
		sp.Throughput = [2]float64{min(sp.Throughput[0], t), max(sp.Throughput[1], t)}
		sp.P50 = [2]float64{min(sp.P50[0], p50), max(sp.P50[1], p50)}
		sp.P99 = [2]float64{min(sp.P99[0], p99), max(sp.P99[1], p99)}
	}
	return sp
}

// loadAvg is the 1-minute load average (/proc/loadavg), or -1: a busy
// machine makes every number noisier, so the report says how busy it was.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1
	}
	var v float64
	if _, err := fmt.Sscanf(f[0], "%g", &v); err != nil {
		return -1
	}
	return v
}
