package lab

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/internal/redisproc"
	"github.com/distillguard/distillguard/internal/traffic"
	"github.com/distillguard/distillguard/server"
)

// Replicated replays. Platform teams run distillguard as N replicas behind
// Envoy, which spreads ext_proc streams over them, each stream on any
// replica. The replay does the same: N in-process servers (server.New, as
// in production) in replicated mode share one real Redis, and request i
// goes to replica i mod N.
//
// The servers are deterministic (Options.Seed): no background flusher
// runs, and the replay decides when replicas exchange state, as time
// would in production. A replica writes what a request changed right
// after it (production writes sessions as soon as the previous batch is
// done, well before a client's next request arrives), and pulls the other
// replicas' cross-account deltas once per flush_interval of simulated
// time: requests closer together than that see the same, slightly stale,
// cross-account view, as they would in production.

// replicaSet is the replicas of one replay.
type replicaSet struct {
	srvs     []*server.Server
	clients  []*envoyClient
	closers  []func()
	lastPull []time.Time
	interval time.Duration
	where    string
}

// labReplicaSecret is the secret of a replicated replay whose
// configuration sets none: replicas must share one.
const labReplicaSecret = "lab-replicas-0123456789abcdef0123456789abcdef"

func startReplicas(p DetectionParams, seed uint64, now func() time.Time, timeout time.Duration) (*replicaSet, error) {
	if p.RedisAddr == "" {
		return nil, fmt.Errorf("a replicated replay needs a Redis address")
	}
	base := p.Config
	if base == nil {
		base = config.Default()
	}
	rs := &replicaSet{lastPull: make([]time.Time, p.Replicas)}
	// A key prefix per replay: replays sharing a Redis never mix.
	prefix := fmt.Sprintf("lab:%d:%d:%d:%d:", seed, p.Variant, p.Replicas, time.Now().UnixNano())
	for i := 0; i < p.Replicas; i++ {
		cfg := *base
		cfg.Scoring.Redis.Addrs = []string{p.RedisAddr}
		cfg.Scoring.Redis.KeyPrefix = prefix
		if cfg.Scoring.Secret == "" && cfg.Scoring.SecretFile == "" {
			cfg.Scoring.Secret = labReplicaSecret
		}
		srv, stop, err := startServerFull(p, &cfg, now)
		if err != nil {
			rs.stop()
			return nil, fmt.Errorf("replica %d: %w", i, err)
		}
		rs.srvs = append(rs.srvs, srv)
		rs.closers = append(rs.closers, stop)
		conn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			rs.stop()
			return nil, err
		}
		rs.closers = append(rs.closers, func() { conn.Close() })
		rs.clients = append(rs.clients, &envoyClient{c: extprocv3.NewExternalProcessorClient(conn), timeout: timeout})
		rs.interval = cfg.Scoring.Redis.FlushInterval
	}
	if rs.interval <= 0 {
		rs.interval = 20 * time.Millisecond
	}
	rs.where = fmt.Sprintf("%d in-process distillguard replicas (server.New) in replicated mode sharing Redis at %s, round-robin per request", p.Replicas, p.RedisAddr)
	return rs, nil
}

// send replays request i on replica i mod N.
func (rs *replicaSet) send(ctx context.Context, i int, r *traffic.Request) (outcome, error) {
	k := i % len(rs.srvs)
	eng := rs.srvs[k].Engine()
	if eng != nil && r.Time.Sub(rs.lastPull[k]) >= rs.interval {
		if err := flush(ctx, eng); err != nil {
			return outcome{}, fmt.Errorf("replica %d: %w", k, err)
		}
		rs.lastPull[k] = r.Time
	}
	out, err := rs.clients[k].send(ctx, r)
	if err != nil {
		return out, fmt.Errorf("replica %d: %w", k, err)
	}
	if eng != nil {
		if err := flush(ctx, eng); err != nil {
			return out, fmt.Errorf("replica %d: %w", k, err)
		}
	}
	return out, nil
}

// flush exchanges a replica's state, retrying while Redis is slow (a
// loaded machine): a failed flush keeps everything queued, so retrying
// loses nothing, and the replay must not go on before the exchange.
func flush(ctx context.Context, eng interface{ Flush() error }) error {
	var err error
	for try := 0; try < 40; try++ {
		if err = eng.Flush(); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	return err
}

func (rs *replicaSet) stop() {
	for i := len(rs.closers) - 1; i >= 0; i-- {
		rs.closers[i]()
	}
}

// DetectionReplicasParams configure the replicated detection comparison.
type DetectionReplicasParams struct {
	Scale     float64
	CorpusDir string
	Families  []string
	Config    *config.Config
	// Replicas are the replica counts compared (default 1, 3, 5); 1 is
	// one process with in-memory state.
	Replicas []int
	// RedisAddr is the Redis the replicas share; empty starts a
	// redis-server (internal/redisproc) for the run.
	RedisAddr string
	Variant   int
}

// RunDetectionReplicas replays the same traffic with each replica count
// and compares every family's flagged share and median first flag with
// the one-process replay.
func RunDetectionReplicas(ctx context.Context, seed uint64, p DetectionReplicasParams, prog *Task) (Section, error) {
	counts := p.Replicas
	if len(counts) == 0 {
		counts = []int{1, 3, 5}
	}
	addr := p.RedisAddr
	if addr == "" {
		srv, err := redisproc.Start(redisproc.Options{})
		if err != nil {
			return Section{}, fmt.Errorf("redis-server for the replicated replay (give -redis host:port, or install redis-server): %w", err)
		}
		defer srv.Stop()
		addr = srv.Addr()
	}
	cfg := p.Config
	if cfg == nil {
		cfg = config.Default()
	}
	c := *cfg
	if c.Scoring.Secret == "" && c.Scoring.SecretFile == "" {
		// One process and the replicas hash alike.
		c.Scoring.Secret = labReplicaSecret
	}
	runs := make([][]familyRates, len(counts))
	total := 0
	for i, n := range counts {
		fams, reqs, _, err := replayDetection(ctx, seed, DetectionParams{
			Scale: p.Scale, CorpusDir: p.CorpusDir, Families: p.Families, Config: &c, Variant: p.Variant,
			Replicas: n, RedisAddr: addr,
		}, prog)
		if err != nil {
			return Section{}, fmt.Errorf("%d replicas: %w", n, err)
		}
		total += reqs
		runs[i] = ratesOf(fams)
	}
	return replicasSection(seed, p, counts, total, runs), nil
}

func replicasSection(seed uint64, p DetectionReplicasParams, counts []int, total int, runs [][]familyRates) Section {
	s := Section{
		Title: "Detection with replicas: one process against N replicas sharing Redis",
		Intro: []string{
			"The detection replay repeated with the traffic spread over N distillguard replicas, request by request round-robin, " +
				"as Envoy spreads ext_proc streams over a cluster's hosts. With N = 1 it is one process keeping its state in memory; " +
				"with N > 1 the replicas run in replicated mode (`scoring.redis.addrs`) on one real redis-server: sessions are read " +
				"from Redis on each request and written behind, cross-account deltas are exchanged through a shared log once per " +
				"`flush_interval` of simulated time.",
		},
		Params: [][2]string{
			{"seed", fmt.Sprint(seed)},
			{"traffic scale", fmt.Sprint(p.Scale)},
			{"variant", fmt.Sprint(p.Variant)},
			{"replica counts", strings.Trim(fmt.Sprint(counts), "[]")},
			{"requests replayed (all runs)", itoa(total)},
		},
	}
	header := []string{"family", "kind", "accounts"}
	for _, n := range counts {
		header = append(header, fmt.Sprintf("flagged, %d", n), fmt.Sprintf("median first flag, %d", n))
	}
	t := Table{Title: "Per family, by replica count", Header: header,
		Notes: []string{"Targets: every family's flagged share within 2 points of one process, and its median first flag within 10%."}}
	var worstRate, worstMedian float64
	var misses []string
	for fi, r := range runs[0] {
		kind := "benign"
		if r.attack {
			kind = "attack"
		}
		row := []string{r.name, kind, itoa(r.accounts)}
		for ci := range counts {
			x := runs[ci][fi]
			row = append(row, fmtPct(frac(x.flagged, x.accounts)), fmtCount(x.median))
			if ci == 0 {
				continue
			}
			d := math.Abs(frac(x.flagged, x.accounts) - frac(r.flagged, r.accounts))
			worstRate = math.Max(worstRate, d)
			if d > 0.02+1e-9 {
				misses = append(misses, fmt.Sprintf("%s with %d replicas: flagged %s against %s", r.name, counts[ci], fmtPct(frac(x.flagged, x.accounts)), fmtPct(frac(r.flagged, r.accounts))))
			}
			if r.median > 0 && !math.IsNaN(x.median) {
				m := math.Abs(x.median-r.median) / r.median
				worstMedian = math.Max(worstMedian, m)
				if m > 0.1+1e-9 && math.Abs(x.median-r.median) > 1 {
					misses = append(misses, fmt.Sprintf("%s with %d replicas: median first flag %s against %s", r.name, counts[ci], fmtCount(x.median), fmtCount(r.median)))
				}
			}
		}
		t.Rows = append(t.Rows, row)
	}
	s.Tables = []Table{t}
	s.Findings = []string{fmt.Sprintf("Across replica counts a family's flagged share moved by at most %.1f points and its median first flag by at most %.0f%%.", 100*worstRate, 100*worstMedian)}
	if len(misses) == 0 {
		s.Findings = append(s.Findings, "Every family is within the targets at every replica count.")
	} else {
		s.Findings = append(s.Findings, "Outside the targets: "+strings.Join(misses, "; ")+".")
	}
	return s
}
