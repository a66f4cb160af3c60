package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/extproc/envoytest"
	"github.com/distillguard/distillguard/internal/traffic"
	"github.com/distillguard/distillguard/scoring"
)

// DetectionParams configure the detection replay.
type DetectionParams struct {
	// Scale multiplies the generated accounts (traffic.Options.Scale).
	Scale     float64
	CorpusDir string
	// Families restricts the traffic to these families; empty means all.
	Families []string
	// Addr is an external ext_proc server; empty starts one in-process.
	// Several, comma-separated, are replicas: request i goes to the
	// i-th mod N (as Envoy spreads streams over a cluster's hosts).
	Addr   string
	Config *config.Config
	// NewServer builds a substitute processor for the in-process server
	// (served through server.New with the production gRPC settings); nil
	// means distillguard itself (extproc with the scoring engine). now is
	// the simulated clock: the time of the request being replayed. Tests
	// substitute a fake.
	NewServer func(cfg *config.Config, now func() time.Time) (extprocv3.ExternalProcessorServer, func(), error)
	// Timeout bounds one request's exchange with the server.
	Timeout time.Duration
	// Variant selects the generator's content variant (traffic.Options.Variant):
	// 0 tuned, 1 held out.
	Variant int
	// Replicas > 1 replays over that many in-process replicas in
	// replicated mode, sharing the Redis at RedisAddr, each request sent
	// to the next replica in turn (replicas.go).
	Replicas  int
	RedisAddr string
}

// outcome is the server's answer to one replayed request.
type outcome struct {
	verdict scoring.Verdict
	score   float64
	session string
	status  int // immediate response status, 0 when forwarded
	tagged  bool
}

// envoyClient drives an ext_proc server the way Envoy's ext_proc filter
// does with the configuration in envoy/envoy.yaml: one gRPC stream per HTTP
// request; request headers with the request.time and source.address
// attributes and the protocol configuration; then the whole request body in
// one message (BUFFERED). The verdict comes from the dynamic metadata of the
// replies, or from an immediate response. The messages are envoytest's.
type envoyClient struct {
	c       extprocv3.ExternalProcessorClient
	timeout time.Duration
}

func (e *envoyClient) send(ctx context.Context, r *traffic.Request) (outcome, error) {
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	st, err := e.c.Process(ctx)
	if err != nil {
		return outcome{}, err
	}
	hdrs := envoytest.RequestHeaders(envoyHeaders(r), false)
	hdrs.Attributes = envoytest.Attributes(r.Time, r.SourceAddress)
	// Sent with the first message of each stream
	// (ProcessingRequest.protocol_config).
	hdrs.ProtocolConfig = envoytest.ProtocolConfig(filterv3.ProcessingMode_BUFFERED, filterv3.ProcessingMode_STREAMED)
	if err := st.Send(hdrs); err != nil {
		return outcome{}, fmt.Errorf("send headers: %w", err)
	}
	resp, err := st.Recv()
	if err != nil {
		return outcome{}, fmt.Errorf("headers reply: %w", err)
	}
	var d envoytest.Decision
	if ended := d.Read(resp); !ended {
		if _, ok := resp.Response.(*extprocv3.ProcessingResponse_RequestHeaders); !ok {
			return outcomeOf(&d), fmt.Errorf("unexpected reply to request headers: %T", resp.Response)
		}
		if err := st.Send(envoytest.RequestBody(r.Body, true)); err != nil {
			return outcomeOf(&d), fmt.Errorf("send body: %w", err)
		}
		resp, err = st.Recv()
		if err != nil {
			return outcomeOf(&d), fmt.Errorf("body reply: %w", err)
		}
		if ended := d.Read(resp); !ended {
			if _, ok := resp.Response.(*extprocv3.ProcessingResponse_RequestBody); !ok {
				return outcomeOf(&d), fmt.Errorf("unexpected reply to request body: %T", resp.Response)
			}
		}
	}
	out := outcomeOf(&d)
	// The upstream exchange is not simulated: end the stream as Envoy does
	// when the request is over, and let the server finish cleanly.
	if err := st.CloseSend(); err != nil {
		return out, err
	}
	for {
		if _, err := st.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return out, fmt.Errorf("closing stream: %w", err)
		}
	}
}

// outcomeOf is the replay's view of a decision: the verdict when the
// metadata names one, else, for a request answered immediately, the verdict
// its status stands for (429 throttle, anything else block).
func outcomeOf(d *envoytest.Decision) outcome {
	out := outcome{score: d.Score, session: d.Session}
	if v, err := scoring.ParseVerdict(d.Verdict); err == nil && d.Tagged {
		out.verdict, out.tagged = v, true
	}
	if d.Rejected {
		out.status = d.Status
		if !out.tagged {
			switch out.status {
			case 429:
				out.verdict = scoring.Throttle
			default:
				out.verdict = scoring.Block
			}
		}
	}
	return out
}

// envoyHeaders renders the request headers as Envoy sends them: pseudo
// headers first, then the client's headers (sorted, for a deterministic
// order), then what Envoy adds. Values go in raw_value, as Envoy sends them
// (HeaderValue.raw_value).
func envoyHeaders(r *traffic.Request) *corev3.HeaderMap {
	h := []*corev3.HeaderValue{
		envoytest.Header(":authority", "api.lab.invalid"),
		envoytest.Header(":path", r.Path),
		envoytest.Header(":method", cmpOr(r.Method, "POST")),
		envoytest.Header(":scheme", "https"),
	}
	names := make([]string, 0, len(r.Header))
	for k := range r.Header {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		h = append(h, envoytest.Header(k, r.Header[k]))
	}
	h = append(h,
		envoytest.Header("content-length", strconv.Itoa(len(r.Body))),
		envoytest.Header("x-forwarded-proto", "https"),
		envoytest.Header("x-request-id", fmt.Sprintf("00000000-0000-4000-8000-%012d", r.Seq)),
	)
	return &corev3.HeaderMap{Headers: h}
}

func cmpOr(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// accountStats follows one account through the replay.
type accountStats struct {
	family    string
	attack    bool
	requests  int
	firstFlag int // 1-based request count at the first flag; 0: never
	blocked   bool
	throttled bool    // throttled or blocked at least once
	peak      float64 // highest score the server reported
	flaggedN  int
	sessions  []string
}

type familyStats struct {
	name             string
	attack           bool
	accounts         []*accountStats
	requests         int
	flaggedRequests  int
	campaignFirst    int // family requests, in time order, until the first flag of any account
	untagged         int
	verdicts         [4]int
	distinctSessions int
}

// accountTally sums up a family's accounts.
type accountTally struct {
	n, flagged, blocked int
	firsts              []int // each flagged account's request count at its first flag
	sizes               []int // requests per account
}

func (f *familyStats) tally() accountTally {
	t := accountTally{n: len(f.accounts)}
	for _, a := range f.accounts {
		t.sizes = append(t.sizes, a.requests)
		if a.firstFlag > 0 {
			t.flagged++
			t.firsts = append(t.firsts, a.firstFlag)
		}
		if a.blocked {
			t.blocked++
		}
	}
	return t
}

// RunDetection replays generated traffic through an ext_proc server.
func RunDetection(ctx context.Context, seed uint64, p DetectionParams, prog *Task) (Section, error) {
	fams, total, where, err := replayDetection(ctx, seed, p, prog)
	if err != nil {
		return Section{}, err
	}
	return detectionSection(seed, p, where, total, fams), nil
}

// replayDetection replays the traffic and returns the statistics per
// family (in the generator's table order), the number of requests and a
// description of the server.
func replayDetection(ctx context.Context, seed uint64, p DetectionParams, prog *Task) ([]*familyStats, int, string, error) {
	reqs, err := traffic.Generate(traffic.Options{CorpusDir: p.CorpusDir, Seed: seed, Scale: p.Scale, Families: p.Families, Variant: p.Variant})
	if err != nil {
		return nil, 0, "", err
	}
	prog.Grow(len(reqs))
	addr := p.Addr
	where := "external server at " + addr
	// The in-process server's clock follows the replay, so nothing depends
	// on how fast the replay runs.
	var clock atomic.Int64
	now := func() time.Time { return time.Unix(0, clock.Load()).UTC() }
	if len(reqs) > 0 {
		clock.Store(reqs[0].Time.UnixNano())
	}
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	var rs *replicaSet
	if p.Replicas > 1 {
		if rs, err = startReplicas(p, seed, now, timeout); err != nil {
			return nil, 0, "", err
		}
		defer rs.stop()
		where = rs.where
	} else if addr == "" {
		a, stop, err := startServer(p, now)
		if err != nil {
			return nil, 0, "", err
		}
		defer stop()
		addr, where = a, "in-process distillguard ext_proc server (server.New, as cmd/distillguard assembles it)"
		if p.NewServer != nil {
			where = "in-process substitute server"
		}
	}
	var cls []*envoyClient
	if rs == nil {
		for _, a := range strings.Split(addr, ",") {
			conn, err := grpc.NewClient(strings.TrimSpace(a), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return nil, 0, "", err
			}
			defer conn.Close()
			cls = append(cls, &envoyClient{c: extprocv3.NewExternalProcessorClient(conn), timeout: timeout})
		}
		if len(cls) > 1 {
			where = fmt.Sprintf("%d external servers (%s), round-robin per request", len(cls), addr)
		}
	}

	accounts := map[string]*accountStats{}
	fams := map[string]*familyStats{}
	var famOrder []string
	for i := range reqs {
		r := &reqs[i]
		if i%512 == 0 && ctx.Err() != nil {
			return nil, 0, "", ctx.Err()
		}
		clock.Store(r.Time.UnixNano())
		var out outcome
		if rs != nil {
			out, err = rs.send(ctx, i, r)
		} else {
			out, err = cls[i%len(cls)].send(ctx, r)
		}
		if err != nil {
			return nil, 0, "", fmt.Errorf("request %d (%s): %w", r.Seq, r.Account, err)
		}
		f := fams[r.Family]
		if f == nil {
			f = &familyStats{name: r.Family, attack: r.Attack}
			fams[r.Family] = f
			famOrder = append(famOrder, r.Family)
		}
		a := accounts[r.Account]
		if a == nil {
			a = &accountStats{family: r.Family, attack: r.Attack}
			accounts[r.Account] = a
			f.accounts = append(f.accounts, a)
		}
		a.requests++
		f.requests++
		if !out.tagged {
			f.untagged++
		}
		f.verdicts[max(scoring.Allow, min(out.verdict, scoring.Block))]++
		if out.session != "" && !slices.Contains(a.sessions, out.session) {
			a.sessions = append(a.sessions, out.session)
		}
		if out.verdict >= scoring.Degrade {
			f.flaggedRequests++
			a.flaggedN++
			if a.firstFlag == 0 {
				a.firstFlag = a.requests
			}
			if f.campaignFirst == 0 {
				f.campaignFirst = f.requests
			}
		}
		if out.verdict == scoring.Block {
			a.blocked = true
		}
		if out.verdict >= scoring.Throttle {
			a.throttled = true
		}
		a.peak = max(a.peak, out.score)
		prog.Add(1)
	}
	// Families in the generator's table order, whatever arrived first.
	var ordered []*familyStats
	for _, fam := range traffic.Families() {
		if f := fams[fam.Name]; f != nil {
			ordered = append(ordered, f)
		}
	}
	for _, name := range famOrder {
		if !slices.ContainsFunc(ordered, func(f *familyStats) bool { return f.name == name }) {
			ordered = append(ordered, fams[name])
		}
	}
	for _, f := range ordered {
		seen := map[string]bool{}
		for _, a := range f.accounts {
			for _, s := range a.sessions {
				seen[s] = true
			}
		}
		f.distinctSessions = len(seen)
	}
	return ordered, len(reqs), where, nil
}

func quantileInt(v []int, q float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	// Nearest-rank quantile: the smallest value with at least q of the
	// sample at or below it.
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return float64(s[max(0, min(i, len(s)-1))])
}

func fmtCount(v float64) string {
	if math.IsNaN(v) {
		return "—"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

func detectionSection(seed uint64, p DetectionParams, where string, total int, fams []*familyStats) Section {
	s := Section{
		Title: "Detection replay",
		Intro: []string{
			"Labelled traffic from `internal/traffic` is replayed in simulated-time order through a real distillguard ext_proc " +
				"gRPC server, driven as Envoy drives it: one stream per request, request headers with the `request.time` (the " +
				"simulated clock) and `source.address` attributes, then the whole body (BUFFERED). The verdict is read from the " +
				"`distillguard` dynamic-metadata namespace of the reply, or from an immediate response (429 throttle, 403 block). " +
				"An account is flagged once any of its requests gets degrade or stronger.",
		},
		Params: [][2]string{
			{"seed", fmt.Sprint(seed)},
			{"traffic scale", fmt.Sprint(p.Scale)},
			{"requests replayed", itoa(total)},
			{"server", where},
		},
	}
	t1 := Table{
		Title: "Per family",
		Header: []string{"family", "kind", "accounts", "requests", "server sessions", "accounts flagged", "accounts blocked",
			"median requests to first flag", "p90 requests to first flag", "requests flagged", "allow / degrade / throttle / block"},
		Notes: []string{"\"server sessions\" counts the distinct session keys the server reported for the family's accounts " +
			"(one per account when the gateway derives sessions as the generator intends). Requests-to-first-flag quantiles are over flagged accounts."},
	}
	t2 := Table{
		Title:  "Benign families: false positives",
		Header: []string{"family", "accounts", "false-flag rate (accounts)", "false-block rate (accounts)", "requests flagged", "requests blocked"},
	}
	t3 := Table{
		Title:  "Distributed campaign",
		Header: []string{"family", "accounts", "accounts flagged", "campaign requests", "campaign requests until first flag", "median requests per account"},
	}
	fig := Figure{
		File:   "detection.svg",
		Title:  "Share of accounts flagged by their n-th request",
		XLabel: "requests sent by the account",
		YLabel: "share of accounts flagged",
		LogX:   true,
		YRange: [2]float64{0, 1.02},
	}
	var untagged int
	for _, f := range fams {
		untagged += f.untagged
		t := f.tally()
		kind := "benign"
		if f.attack {
			kind = "attack"
		}
		t1.Rows = append(t1.Rows, []string{f.name, kind, itoa(t.n), itoa(f.requests), itoa(f.distinctSessions),
			fmtPct(frac(t.flagged, t.n)), fmtPct(frac(t.blocked, t.n)), fmtCount(quantileInt(t.firsts, 0.5)), fmtCount(quantileInt(t.firsts, 0.9)),
			fmtPct(frac(f.flaggedRequests, f.requests)),
			fmt.Sprintf("%d / %d / %d / %d", f.verdicts[0], f.verdicts[1], f.verdicts[2], f.verdicts[3])})
		if !f.attack {
			t2.Rows = append(t2.Rows, []string{f.name, itoa(t.n), fmtPct2(frac(t.flagged, t.n)), fmtPct2(frac(t.blocked, t.n)),
				fmtPct2(frac(f.flaggedRequests, f.requests)), fmtPct2(frac(f.verdicts[scoring.Block], f.requests))})
		}
		if strings.Contains(f.name, "distributed") {
			first := "never"
			if f.campaignFirst > 0 {
				first = itoa(f.campaignFirst)
			}
			t3.Rows = append(t3.Rows, []string{f.name, itoa(t.n), fmtPct(frac(t.flagged, t.n)), itoa(f.requests), first, fmtCount(quantileInt(t.sizes, 0.5))})
		}
		fig.Series = append(fig.Series, detectionCurve(f))
	}
	if untagged > 0 {
		t1.Notes = append(t1.Notes, fmt.Sprintf("%d replies carried no verdict metadata; they count as allow unless rejected.", untagged))
	}
	s.Tables = []Table{t1, t2, t3}
	s.Figures = []Figure{fig}
	s.Findings = detectionFindings(fams)
	return s
}

func detectionFindings(fams []*familyStats) []string {
	var caught, missed, falseFlag, falseBlock []string
	for _, f := range fams {
		t := f.tally()
		switch {
		case f.attack && t.flagged > 0:
			caught = append(caught, fmt.Sprintf("%s %s (median %s requests)", f.name, fmtPct(frac(t.flagged, t.n)), fmtCount(quantileInt(t.firsts, 0.5))))
		case f.attack:
			missed = append(missed, f.name)
		}
		if !f.attack && t.flagged > 0 {
			falseFlag = append(falseFlag, fmt.Sprintf("%s %s of accounts, %s of requests", f.name, fmtPct(frac(t.flagged, t.n)), fmtPct(frac(f.flaggedRequests, f.requests))))
		}
		if !f.attack && t.blocked > 0 {
			falseBlock = append(falseBlock, fmt.Sprintf("%s %s", f.name, fmtPct(frac(t.blocked, t.n))))
		}
	}
	var out []string
	if len(caught) > 0 {
		out = append(out, "Attack accounts flagged: "+strings.Join(caught, "; ")+".")
	}
	if len(missed) > 0 {
		out = append(out, "Attack families never flagged: "+strings.Join(missed, ", ")+".")
	}
	if len(falseFlag) > 0 {
		out = append(out, "Benign families flagged (degrade or stronger): "+strings.Join(falseFlag, "; ")+".")
	} else {
		out = append(out, "No benign account was flagged.")
	}
	if len(falseBlock) > 0 {
		out = append(out, "Benign families blocked: "+strings.Join(falseBlock, "; ")+".")
	} else {
		out = append(out, "No benign account was blocked.")
	}
	return out
}

func frac(a, b int) float64 {
	if b == 0 {
		return math.NaN()
	}
	return float64(a) / float64(b)
}

// detectionCurve is the share of the family's accounts flagged within
// their first n requests, on a roughly geometric grid of n.
func detectionCurve(f *familyStats) Series {
	maxN := 0
	for _, a := range f.accounts {
		maxN = max(maxN, a.requests)
	}
	s := Series{Name: f.name}
	for n := 1; n <= maxN; n = max(n+1, n*5/4) {
		var k int
		for _, a := range f.accounts {
			if a.firstFlag > 0 && a.firstFlag <= n {
				k++
			}
		}
		s.X = append(s.X, float64(n))
		s.Y = append(s.Y, float64(k)/float64(len(f.accounts)))
	}
	return s
}
