package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/distillguard/distillguard/internal/redisproc"
)

// Replicated mode against in-memory scoring. RunReplicated starts two
// distillguard child processes with scoring on and the same secret, one
// keeping its state in process and one in replicated mode on a real
// redis-server, runs alternating rounds of the same workload (sessions
// that come back, so the session read finds state), and reports the
// latency of the request-headers and request-body messages (the ones the
// session read is on) of both, their ratios, and the Redis commands per
// request (INFO commandstats over the replicated rounds).

// ReplicatedConfig configures RunReplicated.
type ReplicatedConfig struct {
	// Distillguard is the binary's argv with the {grpc}, {admin} and
	// {config} placeholders (as for the matrix).
	Distillguard ServerSpec
	// RedisAddr is a running Redis; empty starts a redis-server
	// (internal/redisproc) for the run.
	RedisAddr   string
	Rounds      int
	Warmup      time.Duration
	Duration    time.Duration
	Concurrency int
	Conns       int
	// Sessions is the pool of session keys the exchanges draw from.
	Sessions int
	// Rate is an open-loop message rate over all streams (0: closed
	// loop, which on a machine the servers and the load generator share
	// measures CPU contention as much as latency).
	Rate float64
	// ExchangeRate paces exchanges instead (LoadConfig.ExchangeRate):
	// the request body follows the headers reply at once, as Envoy sends
	// it, so the part of the session read the headers round trip does not
	// hide is in the body's latency.
	ExchangeRate float64
	// Noop, when set (this binary's serve-noop argv), adds the read floor
	// to the rounds (readfloor.go, serve-read-floor): a processor that
	// does nothing but refuse each request, without and with
	// distillguard's one session read per request on the same Redis. What
	// the read alone adds bounds from below what replicated mode can add.
	Noop ServerSpec
	// WriteDelay sets scoring.redis.write_delay of the replicated server
	// (negative: the configured default).
	WriteDelay time.Duration
	Seed       uint64
	Prompts    []string
	OutDir     string
	Log        io.Writer
}

// ReplicatedReport is RunReplicated's result.
type ReplicatedReport struct {
	Settings struct {
		Rounds      int     `json:"rounds"`
		DurationSec float64 `json:"duration_s"`
		Concurrency int     `json:"concurrency"`
		Sessions    int     `json:"sessions"`
		Rate        float64 `json:"rate_msgs_per_s"`
		ExchRate    float64 `json:"rate_exchanges_per_s,omitempty"`
		Redis       string  `json:"redis"`
	} `json:"settings"`
	Machine Machine `json:"machine"`
	// ByKind[server][kind] for servers "in-memory" and "replicated" (and
	// "floor" and "floor+read" with ReplicatedConfig.Noop).
	ByKind    map[string]map[string]Percentiles `json:"latency_by_kind"`
	Exchanges map[string]uint64                 `json:"exchanges"`
	Errors    map[string]uint64                 `json:"errors"`
	// Ratios[kind] = replicated / in-memory p50 and p99.
	Ratios map[string][2]float64 `json:"ratios_p50_p99"`
	// FloorRatios[kind] = floor+read / floor p50 and p99 (with
	// ReplicatedConfig.Noop).
	FloorRatios map[string][2]float64 `json:"floor_ratios_p50_p99,omitempty"`
	// OpsPerRequest are the Redis commands per exchange by command, and
	// their total.
	OpsPerRequest map[string]float64 `json:"redis_ops_per_request"`
	// ReadsPerRequest are the socket reads Redis processed per exchange
	// (INFO stats total_reads_processed): its wake-ups, one per round trip
	// whatever a pipeline holds, the request path's and the write
	// batches'.
	ReadsPerRequest float64 `json:"redis_reads_per_request"`
	WriteDelay      string  `json:"write_delay"`
	LoadAvg         float64 `json:"load_avg"`
}

const (
	nameInMemory   = "in-memory"
	nameReplicated = "replicated"
	nameFloor      = "floor"
	nameReadFloor  = "floor+read"
	benchSecret    = "bench-secret-0123456789abcdef0123456789abcdef"
)

// RunReplicated runs the comparison.
func RunReplicated(ctx context.Context, rc ReplicatedConfig) (*ReplicatedReport, error) {
	if rc.Rounds < 1 {
		rc.Rounds = 1
	}
	if rc.Log == nil {
		rc.Log = io.Discard
	}
	if rc.Concurrency <= 0 {
		rc.Concurrency = 32
	}
	if rc.Sessions <= 0 {
		rc.Sessions = 4096
	}
	addr := rc.RedisAddr
	if addr == "" {
		srv, err := redisproc.Start(redisproc.Options{})
		if err != nil {
			return nil, fmt.Errorf("redis-server: %w", err)
		}
		defer srv.Stop()
		addr = srv.Addr()
	}
	if err := CheckLoopback(addr); err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	dir := filepath.Join(rc.OutDir, "servers", "replicated")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	base := "scoring:\n  secret: " + benchSecret + "\n"
	writeDelay, writeDelayYAML := "default", ""
	if rc.WriteDelay >= 0 {
		writeDelay = rc.WriteDelay.String()
		writeDelayYAML = "    write_delay: " + writeDelay + "\n"
	}
	mem := rc.Distillguard
	mem.Name, mem.Config = nameInMemory, []byte(base)
	rep := rc.Distillguard
	rep.Name, rep.Config = nameReplicated, []byte(base+"  redis:\n    addrs: [\""+addr+"\"]\n    key_prefix: \"bench:\"\n"+writeDelayYAML)
	cm, err := StartChild(ctx, mem, dir)
	if err != nil {
		return nil, err
	}
	defer cm.Stop()
	cr, err := StartChild(ctx, rep, dir)
	if err != nil {
		return nil, err
	}
	defer cr.Stop()
	children := []*Child{cm, cr}
	if len(rc.Noop.Argv) > 0 {
		for _, spec := range []ServerSpec{
			rc.Noop.Serving(nameFloor, "serve-read-floor"),
			rc.Noop.Serving(nameReadFloor, "serve-read-floor", "-redis", addr, "-sessions", strconv.Itoa(rc.Sessions)),
		} {
			c, err := StartChild(ctx, spec, dir)
			if err != nil {
				return nil, err
			}
			defer c.Stop()
			children = append(children, c)
		}
	}

	cl, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
	if err != nil {
		return nil, fmt.Errorf("redis client: %w", err)
	}
	defer cl.Close()

	wl, err := BuildWorkload(withPrompts(WorkloadSpec{Kind: KindStream, Mix: []MixEntry{{Alternatives: 5, Weight: 1}}, Tokens: 8}, rc.Prompts), rc.Seed)
	if err != nil {
		return nil, err
	}
	out := &ReplicatedReport{
		ByKind: map[string]map[string]Percentiles{}, Exchanges: map[string]uint64{}, Errors: map[string]uint64{},
		Ratios: map[string][2]float64{}, OpsPerRequest: map[string]float64{},
	}
	out.Settings.Rounds, out.Settings.DurationSec, out.Settings.Concurrency = rc.Rounds, rc.Duration.Seconds(), rc.Concurrency
	out.Settings.Sessions, out.Settings.Redis, out.Settings.Rate, out.Settings.ExchRate = rc.Sessions, addr, rc.Rate, rc.ExchangeRate
	out.WriteDelay = writeDelay
	out.Machine = DescribeMachine()
	hists := map[string]*[numKinds]Hist{}
	for _, c := range children {
		hists[c.Name] = &[numKinds]Hist{}
	}
	var repExchanges uint64
	ops := map[string]int64{}
	for round := 1; round <= rc.Rounds; round++ {
		for _, c := range children {
			// Commands are counted over the measurement window alone.
			var before, after map[string]int64
			var statErr error
			onWindow := func(start bool) {
				if c != cr {
					return
				}
				m, err := commandStats(ctx, cl)
				if err != nil {
					statErr = err
				}
				if start {
					before = m
				} else {
					after = m
				}
			}
			res, err := Run(ctx, LoadConfig{
				Addr: c.GRPCAddr, Conns: rc.Conns, Concurrency: rc.Concurrency, Warmup: rc.Warmup, Duration: rc.Duration,
				Mode: Streamed, Workload: wl, Seed: rc.Seed + uint64(round), Sessions: rc.Sessions, OnWindow: onWindow, Rate: rc.Rate, ExchangeRate: rc.ExchangeRate,
			})
			if err != nil {
				return nil, err
			}
			if statErr != nil {
				return nil, fmt.Errorf("redis INFO commandstats: %w", statErr)
			}
			if c == cr {
				for k, v := range after {
					ops[k] += v - before[k]
				}
				repExchanges += res.Exchanges
			}
			for k := range hists[c.Name] {
				if res.ByKind[k] != nil {
					hists[c.Name][k].Merge(res.ByKind[k])
				}
			}
			out.Exchanges[c.Name] += res.Exchanges
			out.Errors[c.Name] += res.Errors
			fmt.Fprintf(rc.Log, "round %d/%d %-10s %8d exchanges  request_body p50 %8s p99 %8s  errors %d\n", round, rc.Rounds, c.Name,
				res.Exchanges, fmtDur(res.ByKind[KindReqBody].Quantile(0.5)), fmtDur(res.ByKind[KindReqBody].Quantile(0.99)), res.Errors)
		}
	}
	for name, hs := range hists {
		out.ByKind[name] = map[string]Percentiles{}
		for k := range hs {
			if hs[k].Count > 0 {
				out.ByKind[name][KindName(k)] = summarize(&hs[k])
			}
		}
	}
	for _, k := range []int{KindReqHeaders, KindReqBody} {
		if x, ok := ratioP50P99(out.ByKind[nameInMemory][KindName(k)], out.ByKind[nameReplicated][KindName(k)]); ok {
			out.Ratios[KindName(k)] = x
		}
		if x, ok := ratioP50P99(out.ByKind[nameFloor][KindName(k)], out.ByKind[nameReadFloor][KindName(k)]); ok {
			if out.FloorRatios == nil {
				out.FloorRatios = map[string][2]float64{}
			}
			out.FloorRatios[KindName(k)] = x
		}
	}
	if repExchanges > 0 {
		// Redis counts the commands a script runs under their own names:
		// the GET and SET inside each EVALSHA are not round trips.
		ops["get"] -= ops["evalsha"]
		ops["set"] = max(ops["set"]-ops["evalsha"], 0)
		total := 0.0
		// Each end of a window reads INFO commandstats then INFO stats,
		// whose count includes its own read: two reads per round are
		// this process's (the end's two; the start's precede its count).
		out.ReadsPerRequest = float64(ops[readsKey]-2*int64(rc.Rounds)) / float64(repExchanges)
		delete(ops, readsKey)
		for k, v := range ops {
			if v <= 0 || k == "info" {
				continue
			}
			out.OpsPerRequest[k] = float64(v) / float64(repExchanges)
			total += out.OpsPerRequest[k]
		}
		out.OpsPerRequest["total"] = total
	}
	out.LoadAvg = loadAvg()
	var errs uint64
	for _, n := range out.Errors {
		errs += n
	}
	if errs > 0 {
		return out, errors.New("replicated comparison: some messages failed (see the report)")
	}
	return out, nil
}

// ratioP50P99 is b over a at p50 and p99, when a has both.
func ratioP50P99(a, b Percentiles) ([2]float64, bool) {
	if a.P50 <= 0 || a.P99 <= 0 {
		return [2]float64{}, false
	}
	return [2]float64{b.P50 / a.P50, b.P99 / a.P99}, true
}

// readsKey holds, in commandStats' map, Redis's socket reads.
const readsKey = "(reads)"

// commandStats reads INFO commandstats (calls per command) and INFO
// stats' total_reads_processed (under readsKey).
func commandStats(ctx context.Context, c rueidis.Client) (map[string]int64, error) {
	s, err := c.Do(ctx, c.B().Info().Section("commandstats").Build()).ToString()
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	stats, err := c.Do(ctx, c.B().Info().Section("stats").Build()).ToString()
	if err != nil {
		return nil, err
	}
	for line := range strings.SplitSeq(stats, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_reads_processed:"); ok {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil {
				out[readsKey] = n
			}
		}
	}
	for line := range strings.SplitSeq(s, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		calls, _, _ := strings.Cut(strings.TrimPrefix(rest, "calls="), ",")
		n, err := strconv.ParseInt(calls, 10, 64)
		if err == nil {
			out[strings.TrimPrefix(name, "cmdstat_")] = n
		}
	}
	return out, nil
}

// markdownPair writes two servers' rows for one message kind and their
// ratio row.
func (r *ReplicatedReport) markdownPair(b *strings.Builder, kind, base, other string, x [2]float64) {
	for _, s := range []string{base, other} {
		p := r.ByKind[s][kind]
		fmt.Fprintf(b, "| %s | %s | %d | %.0f µs | %.0f µs | %.0f µs | %.0f µs |\n", kind, s, p.Count, p.P50, p.P90, p.P99, p.P999)
	}
	fmt.Fprintf(b, "| %s | **%s / %s** | | **%.2fx** | | **%.2fx** | |\n", kind, other, base, x[0], x[1])
}

// Markdown renders the report.
func (r *ReplicatedReport) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Replicated mode against in-memory scoring\n\n")
	load := "closed loop"
	switch {
	case r.Settings.ExchRate > 0:
		load = fmt.Sprintf("open loop at %.0f exchanges/s (each exchange's later messages sent on the previous reply, as Envoy sends them)", r.Settings.ExchRate)
	case r.Settings.Rate > 0:
		load = fmt.Sprintf("open loop at %.0f messages/s (every message paced)", r.Settings.Rate)
	}
	fmt.Fprintf(&b, "%d alternating rounds of %.0f s per server, %d concurrent streams over %d sessions, %s, top-5 8-token streams, scoring on; Redis at %s. Machine: %s; load average %.2f.\n\n",
		r.Settings.Rounds, r.Settings.DurationSec, r.Settings.Concurrency, r.Settings.Sessions, load, r.Settings.Redis, r.Machine.CPU, r.LoadAvg)
	fmt.Fprintf(&b, "| message | server | count | p50 | p90 | p99 | p99.9 |\n|---|---|--:|--:|--:|--:|--:|\n")
	for _, k := range []string{KindName(KindReqHeaders), KindName(KindReqBody)} {
		r.markdownPair(&b, k, nameInMemory, nameReplicated, r.Ratios[k])
		if x, ok := r.FloorRatios[k]; ok {
			r.markdownPair(&b, k, nameFloor, nameReadFloor, x)
		}
	}
	if len(r.FloorRatios) > 0 {
		fmt.Fprintf(&b, "\nAdded at p50 (the target is 10%% of in-memory): ")
		for i, k := range []string{KindName(KindReqHeaders), KindName(KindReqBody)} {
			m, p, n, f := r.ByKind[nameInMemory][k].P50, r.ByKind[nameReplicated][k].P50, r.ByKind[nameFloor][k].P50, r.ByKind[nameReadFloor][k].P50
			if i > 0 {
				b.WriteString("; ")
			}
			fmt.Fprintf(&b, "%s: replicated %+.0f µs, the read alone (floor+read - floor) %+.0f µs, target %.0f µs", k, p-m, f-n, m/10)
		}
		b.WriteString(".\n")
	}
	fmt.Fprintf(&b, "\nRedis commands per request sent by distillguard (INFO commandstats over the replicated windows, without the GET and SET each EVALSHA runs inside):")
	keys := make([]string, 0, len(r.OpsPerRequest))
	for k := range r.OpsPerRequest {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s %.2f;", k, r.OpsPerRequest[k])
	}
	fmt.Fprintf(&b, "\n\nRedis socket reads per request (INFO stats total_reads_processed: one per round trip, whatever a pipeline holds): %.2f; write_delay %s.", r.ReadsPerRequest, r.WriteDelay)
	b.WriteString("\n\nExchanges (errors):")
	for i, s := range []string{nameInMemory, nameReplicated, nameFloor, nameReadFloor} {
		if _, ok := r.Exchanges[s]; ok {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, " %s %d (%d)", s, r.Exchanges[s], r.Errors[s])
		}
	}
	b.WriteString(".\n")
	return b.String()
}
