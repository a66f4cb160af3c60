package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// NameEcho names the echo processor (NewEcho) in reports.
const NameEcho = "echo"

// The floors comparison puts distillguard beside two floors under the same
// load: the no-op processor (an empty reply per message: gRPC and the
// network stack) and the echo processor (every response body chunk
// replaced by itself: carrying the bytes back, no parsing), plus the
// figure without any ext_proc at all (the upstream's own token schedule).
// Per message it reports latency and throughput; per stream, with the
// upstream pacing tokens, the time to last token each one leaves and the
// latency added per token over the no-ext_proc schedule.

// FloorsConfig configures RunFloors.
type FloorsConfig struct {
	Scenarios []Scenario
	// Rounds per server: noop, echo, distillguard, noop, ... so that drift
	// of the machine falls on all three alike.
	Rounds   int
	Warmup   time.Duration
	Duration time.Duration
	Conns    int
	Seed     uint64
	// TokenInterval paces the stream scenarios' paced pass (0 skips it):
	// the upstream sends a token every TokenInterval.
	TokenInterval time.Duration
	// PacedConcurrency is the paced pass's concurrency (default: the
	// scenario's).
	PacedConcurrency int
	Noop, Echo       ServerSpec
	Distillguard     ServerSpec // Config replaced by each scenario's
	OutDir           string
	Log              io.Writer
}

// FloorServer is one server's figures in one scenario.
type FloorServer struct {
	Messages      uint64  `json:"messages"`
	Exchanges     uint64  `json:"exchanges"`
	Errors        uint64  `json:"errors"`
	BodiesSkipped uint64  `json:"bodies_skipped"`
	MsgP50us      float64 `json:"message_p50_us"`
	MsgP99us      float64 `json:"message_p99_us"`
	MsgsPerSec    float64 `json:"messages_per_sec"`
	ExchPerSec    float64 `json:"exchanges_per_sec"`
	// StreamP50us and StreamP99us are the closed-loop per-exchange
	// completion times (response headers to last reply).
	StreamP50us float64 `json:"stream_p50_us"`
	StreamP99us float64 `json:"stream_p99_us"`
	// TTLT*: the paced pass's time to last token (the mean is exact, the
	// percentiles within the histogram's bucket precision, about 1%);
	// AddedPerTokenUs is the mean minus the no-ext_proc schedule, per body
	// chunk.
	TTLTMeanus      float64 `json:"ttlt_mean_us,omitempty"`
	TTLTp50us       float64 `json:"ttlt_p50_us,omitempty"`
	TTLTp99us       float64 `json:"ttlt_p99_us,omitempty"`
	AddedPerTokenUs float64 `json:"added_per_token_us,omitempty"`

	hist, streams, ttlt Hist
	elapsed             time.Duration
}

// FloorScenario is one scenario's comparison.
type FloorScenario struct {
	Name        string                  `json:"name"`
	Description string                  `json:"description"`
	Concurrency int                     `json:"concurrency"`
	Chunks      float64                 `json:"body_chunks"`
	Servers     map[string]*FloorServer `json:"servers"`
	// NoExtProcTTLTus is the paced stream's time to last token without any
	// ext_proc filter: (chunks-1) token intervals.
	NoExtProcTTLTus float64 `json:"no_ext_proc_ttlt_us,omitempty"`
}

// FloorsReport is RunFloors' result.
type FloorsReport struct {
	Machine       Machine          `json:"machine"`
	Started       time.Time        `json:"started"`
	Rounds        int              `json:"rounds"`
	DurationSec   float64          `json:"duration_sec"`
	TokenInterval time.Duration    `json:"token_interval_ns"`
	Scenarios     []*FloorScenario `json:"scenarios"`
}

// BodyChunks is the average number of response body chunks per exchange.
func (w *Workload) BodyChunks() float64 { return w.Messages() - 3 }

// RunFloors runs every scenario against noop, echo and distillguard.
func RunFloors(ctx context.Context, fc FloorsConfig) (*FloorsReport, error) {
	if fc.Rounds < 1 {
		fc.Rounds = 1
	}
	if fc.Log == nil {
		fc.Log = io.Discard
	}
	rep := &FloorsReport{Machine: DescribeMachine(), Started: time.Now().UTC(), Rounds: fc.Rounds,
		DurationSec: fc.Duration.Seconds(), TokenInterval: fc.TokenInterval}
	for _, sc := range fc.Scenarios {
		fs, err := runFloorScenario(ctx, &fc, sc)
		if err != nil {
			return rep, fmt.Errorf("scenario %s: %w", sc.Name, err)
		}
		rep.Scenarios = append(rep.Scenarios, fs)
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
	}
	return rep, nil
}

func runFloorScenario(ctx context.Context, fc *FloorsConfig, sc Scenario) (*FloorScenario, error) {
	wl, err := BuildWorkload(sc.Workload, fc.Seed)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(fc.OutDir, "servers", sc.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	specs := []ServerSpec{fc.Noop, fc.Echo, fc.Distillguard}
	specs[0].Name, specs[1].Name, specs[2].Name = NameNoop, NameEcho, NameDistillguard
	specs[2].Config = []byte(sc.Config)
	children := make([]*Child, 0, len(specs))
	defer func() {
		for _, c := range children {
			c.Stop()
		}
	}()
	for _, s := range specs {
		c, err := StartChild(ctx, s, dir)
		if err != nil {
			return nil, err
		}
		children = append(children, c)
	}
	out := &FloorScenario{Name: sc.Name, Description: sc.Description, Concurrency: sc.Concurrency,
		Chunks: wl.BodyChunks(), Servers: map[string]*FloorServer{}}
	for _, c := range children {
		out.Servers[c.Name] = &FloorServer{}
	}
	paced := fc.TokenInterval > 0 && sc.Workload.Kind == KindStream && sc.Rate == 0
	for round := 1; round <= fc.Rounds; round++ {
		for _, c := range children {
			acc := out.Servers[c.Name]
			res, err := Run(ctx, LoadConfig{Addr: c.GRPCAddr, Conns: fc.Conns, Concurrency: sc.Concurrency,
				Warmup: fc.Warmup, Duration: fc.Duration, Rate: sc.Rate, Mode: sc.Mode, Workload: wl, Seed: fc.Seed,
				DistinctSessions: sc.DistinctSessions})
			if err != nil {
				return nil, err
			}
			acc.Messages += res.Messages
			acc.Exchanges += res.Exchanges
			acc.Errors += res.Errors
			acc.BodiesSkipped += res.BodiesSkipped
			acc.elapsed += res.Elapsed
			acc.hist.Merge(res.Latency)
			acc.streams.Merge(res.Streams)
			fmt.Fprintf(fc.Log, "%-16s %-12s round %d/%d %9.0f msg/s %7.0f exch/s  p50 %8s  stream p50 %8s  skipped %d  errors %d\n",
				sc.Name, c.Name, round, fc.Rounds, res.MessagesPerSec(), float64(res.Exchanges)/res.Elapsed.Seconds(),
				fmtDur(res.Latency.Quantile(0.5)), fmtDur(res.Streams.Quantile(0.5)), res.BodiesSkipped, res.Errors)
			if paced {
				conc := sc.Concurrency
				if fc.PacedConcurrency > 0 {
					conc = fc.PacedConcurrency
				}
				pr, err := Run(ctx, LoadConfig{Addr: c.GRPCAddr, Conns: fc.Conns, Concurrency: conc,
					Warmup: fc.Warmup, Duration: fc.Duration, Mode: sc.Mode, Workload: wl, Seed: fc.Seed + 1,
					TokenInterval: fc.TokenInterval})
				if err != nil {
					return nil, err
				}
				acc.Errors += pr.Errors
				acc.ttlt.Merge(pr.Streams)
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
		}
	}
	if paced {
		out.NoExtProcTTLTus = us(time.Duration(out.Chunks-1) * fc.TokenInterval)
	}
	for _, s := range out.Servers {
		s.MsgP50us, s.MsgP99us = us(s.hist.Quantile(0.5)), us(s.hist.Quantile(0.99))
		s.StreamP50us, s.StreamP99us = us(s.streams.Quantile(0.5)), us(s.streams.Quantile(0.99))
		if secs := s.elapsed.Seconds(); secs > 0 {
			s.MsgsPerSec, s.ExchPerSec = float64(s.Messages)/secs, float64(s.Exchanges)/secs
		}
		if paced {
			s.TTLTMeanus = us(s.ttlt.Mean())
			s.TTLTp50us, s.TTLTp99us = us(s.ttlt.Quantile(0.5)), us(s.ttlt.Quantile(0.99))
			if out.Chunks > 0 {
				s.AddedPerTokenUs = (s.TTLTMeanus - out.NoExtProcTTLTus) / out.Chunks
			}
		}
	}
	return out, nil
}

// WriteMarkdown writes the comparison as tables: per message and per
// stream, with distillguard's ratios to both floors.
func (r *FloorsReport) WriteMarkdown(w io.Writer) error {
	fmt.Fprintf(w, "## distillguard beside its floors\n\n%s, %d CPUs, load average %.2f; %d rounds of %.1fs per server, alternating noop, echo, distillguard.\n\n",
		r.Machine.CPU, r.Machine.Cores, loadAvg(), r.Rounds, r.DurationSec)
	fmt.Fprintln(w, "| scenario | server | msg p50 | msg p99 | msg/s | exch/s | stream p50 | bodies skipped | p50 / echo | p50 / noop | exch/s / noop | stream p50 / noop |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, s := range r.Scenarios {
		noop, echo := s.Servers[NameNoop], s.Servers[NameEcho]
		for _, name := range []string{NameNoop, NameEcho, NameDistillguard} {
			v := s.Servers[name]
			fmt.Fprintf(w, "| %s | %s | %s | %s | %.0f | %.0f | %s | %d | %s | %s | %s | %s |\n", s.Name, name,
				fmtUs(v.MsgP50us), fmtUs(v.MsgP99us), v.MsgsPerSec, v.ExchPerSec, fmtUs(v.StreamP50us), v.BodiesSkipped,
				fmtRatio(ratio(v.MsgP50us, echo.MsgP50us)), fmtRatio(ratio(v.MsgP50us, noop.MsgP50us)),
				fmtRatio(ratio(v.ExchPerSec, noop.ExchPerSec)), fmtRatio(ratio(v.StreamP50us, noop.StreamP50us)))
		}
	}
	if r.TokenInterval <= 0 {
		return nil
	}
	fmt.Fprintf(w, "\nMean time to last token with the upstream sending a token every %v (paced pass; p99 in brackets).\n"+
		"Added per token is over the no-ext_proc schedule, (chunks - 1) intervals, and includes the load generator's own timer overshoot, which noop shows:\n\n", r.TokenInterval)
	fmt.Fprintln(w, "| scenario | no ext_proc | noop | echo | distillguard | added per token: noop | echo | distillguard |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
	for _, s := range r.Scenarios {
		if s.NoExtProcTTLTus == 0 {
			continue
		}
		n, e, d := s.Servers[NameNoop], s.Servers[NameEcho], s.Servers[NameDistillguard]
		cell := func(v *FloorServer) string { return fmtUs(v.TTLTMeanus) + " (" + fmtUs(v.TTLTp99us) + ")" }
		_, err := fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %.1f µs | %.1f µs | %.1f µs |\n", s.Name, fmtUs(s.NoExtProcTTLTus),
			cell(n), cell(e), cell(d), n.AddedPerTokenUs, e.AddedPerTokenUs, d.AddedPerTokenUs)
		if err != nil {
			return err
		}
	}
	return nil
}
