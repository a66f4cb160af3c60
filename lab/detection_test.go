package lab

import (
	"context"
	"encoding/json"
	"errors"
	"hash/fnv"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/extproc/keys"
	"github.com/distillguard/distillguard/internal/corpus/corpustest"
	"github.com/distillguard/distillguard/internal/traffic"
)

// countingProcessor is a fake ext_proc server with a rule simple enough to
// predict exactly: per authorization header, requests after the 50th are
// degraded and after the 100th blocked (403). It checks that every stream
// looks like Envoy's and records what it saw.
type countingProcessor struct {
	extprocv3.UnimplementedExternalProcessorServer
	mu       sync.Mutex
	counts   map[string]int
	problems []string
	streams  int
}

func (f *countingProcessor) problem(s string) {
	f.mu.Lock()
	f.problems = append(f.problems, s)
	f.mu.Unlock()
}

func (f *countingProcessor) Process(st extprocv3.ExternalProcessor_ProcessServer) error {
	req, err := st.Recv()
	if err != nil {
		return err
	}
	hs := req.GetRequestHeaders()
	if hs == nil {
		f.problem("first message is not request headers")
		return errors.New("want headers")
	}
	if req.GetProtocolConfig() == nil {
		f.problem("no protocol_config on the first message")
	}
	attrs := req.GetAttributes()[keys.AttributeNamespace].GetFields()
	if _, err := time.Parse(time.RFC3339Nano, attrs[keys.RequestTime].GetStringValue()); err != nil {
		f.problem("request.time: " + err.Error())
	}
	if attrs[keys.SourceAddress].GetStringValue() == "" {
		f.problem("no source.address")
	}
	var auth, path string
	for _, h := range hs.GetHeaders().GetHeaders() {
		switch h.GetKey() {
		case "authorization":
			auth = string(h.GetRawValue())
		case ":path":
			path = string(h.GetRawValue())
		}
	}
	if path == "" {
		f.problem("no :path")
	}
	if err := st.Send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{}}}); err != nil {
		return err
	}
	req, err = st.Recv()
	if err != nil {
		return err
	}
	body := req.GetRequestBody()
	if body == nil || !body.GetEndOfStream() || !json.Valid(body.GetBody()) {
		f.problem("second message is not the whole JSON body")
	}
	f.mu.Lock()
	f.streams++
	f.counts[auth]++
	n := f.counts[auth]
	f.mu.Unlock()
	verdict := "allow"
	switch {
	case n > 100:
		verdict = "block"
	case n > 50:
		verdict = "degrade"
	}
	h := fnv.New64a()
	h.Write([]byte(auth))
	md, err := structpb.NewStruct(map[string]any{keys.MetadataNamespace: map[string]any{
		keys.Verdict: verdict, keys.Score: float64(n) / 200, keys.Session: strconv.FormatUint(h.Sum64(), 16),
	}})
	if err != nil {
		return err
	}
	resp := &extprocv3.ProcessingResponse{DynamicMetadata: md}
	if verdict == "block" {
		resp.Response = &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocv3.ImmediateResponse{
			Status: &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden},
		}}
	} else {
		resp.Response = &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{}}
	}
	if err := st.Send(resp); err != nil {
		return err
	}
	for {
		if _, err := st.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func TestDetectionReplayAgainstFake(t *testing.T) {
	dir := corpustest.Require(t)
	fake := &countingProcessor{counts: map[string]int{}}
	p := DetectionParams{
		Scale:     0.05,
		CorpusDir: dir,
		Families:  []string{"benign-chat", "attack-sweep", "attack-distributed"},
		Config:    config.Default(),
		NewServer: func(*config.Config, func() time.Time) (extprocv3.ExternalProcessorServer, func(), error) {
			return fake, func() {}, nil
		},
	}
	sec, err := RunDetection(context.Background(), 3, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(fake.problems) > 0 {
		t.Fatalf("the server saw non-Envoy streams: %q", fake.problems[:min(5, len(fake.problems))])
	}
	rep := &Report{Sections: []Section{sec}}
	fam := findTable(t, rep, "Per family")
	if len(fam.Rows) != 3 {
		t.Fatalf("per-family rows = %d, want 3", len(fam.Rows))
	}
	want := []struct{ row, col, val string }{
		// benign-chat accounts send at most 20 requests: never flagged.
		{"benign-chat", "accounts flagged", "0.0%"},
		{"benign-chat", "median requests to first flag", "—"},
		// attack-sweep accounts send 100 to 300: all flagged at the 51st.
		{"attack-sweep", "accounts flagged", "100.0%"},
		{"attack-sweep", "median requests to first flag", "51"},
		{"attack-sweep", "p90 requests to first flag", "51"},
		{"attack-distributed", "accounts flagged", "0.0%"},
	}
	for _, w := range want {
		if got := cellOf(t, fam, w.row, w.col); got != w.val {
			t.Errorf("%s / %s = %q, want %q", w.row, w.col, got, w.val)
		}
	}
	// Every account maps to one server session.
	for _, r := range fam.Rows {
		if cellOf(t, fam, r[0], "accounts") != cellOf(t, fam, r[0], "server sessions") {
			t.Errorf("%s: accounts %s, server sessions %s", r[0], cellOf(t, fam, r[0], "accounts"), cellOf(t, fam, r[0], "server sessions"))
		}
	}
	// Blocks come back as immediate responses and are counted as blocks.
	var sweepBlocked int
	fake.mu.Lock()
	for _, n := range fake.counts {
		if n > 100 {
			sweepBlocked++
		}
	}
	streams := fake.streams
	fake.mu.Unlock()
	if got := cellOf(t, fam, "attack-sweep", "accounts blocked"); got == "0.0%" && sweepBlocked > 0 {
		t.Errorf("attack-sweep blocked = %q with %d accounts past 100 requests", got, sweepBlocked)
	}
	benign := findTable(t, rep, "Benign families")
	if got := cellOf(t, benign, "benign-chat", "false-flag rate (accounts)"); got != "0.00%" {
		t.Errorf("benign-chat false-flag rate = %q", got)
	}
	dist := findTable(t, rep, "Distributed campaign")
	if got := cellOf(t, dist, "attack-distributed", "campaign requests until first flag"); got != "never" {
		t.Errorf("campaign requests until first flag = %q, want never", got)
	}
	var total int
	for _, r := range fam.Rows {
		n, _ := strconv.Atoi(cellOf(t, fam, r[0], "requests"))
		total += n
	}
	if total != streams {
		t.Errorf("report counts %d requests, server saw %d streams", total, streams)
	}
	if !strings.Contains(string(rep.Markdown()), "](detection.svg)") {
		t.Error("no detection figure")
	}
}

// TestLabWithRealServer runs the detection replay through the real
// in-process server and checks the report's structure and the replay's
// bookkeeping. The scorer's verdicts themselves are the scoring package's
// business; only their accounting is checked here.
func TestLabWithRealServer(t *testing.T) {
	dir := corpustest.Require(t)
	if testing.Short() {
		t.Skip("runs the small lab")
	}
	o := smallOptions(ExpDetection)
	o.Scale = 0.05
	o.CorpusDir = dir
	rep, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	md := string(rep.Markdown())
	for _, want := range []string{
		"## 2. Detection replay",
		"### Per family", "### Benign families: false positives", "### Distributed campaign", "](detection.svg)",
		"in-process distillguard ext_proc server",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	reqs, err := traffic.Generate(traffic.Options{CorpusDir: dir, Seed: o.Seed, Scale: o.Scale})
	if err != nil {
		t.Fatal(err)
	}
	accounts := map[string]map[string]bool{}
	requests := map[string]int{}
	for _, r := range reqs {
		if accounts[r.Family] == nil {
			accounts[r.Family] = map[string]bool{}
		}
		accounts[r.Family][r.Account] = true
		requests[r.Family]++
	}
	fam := findTable(t, rep, "Per family")
	if len(fam.Rows) != len(accounts) {
		t.Errorf("%d family rows, traffic has %d families", len(fam.Rows), len(accounts))
	}
	for _, r := range fam.Rows {
		name := r[0]
		if got, want := cellOf(t, fam, name, "accounts"), strconv.Itoa(len(accounts[name])); got != want {
			t.Errorf("%s: accounts %s, want %s", name, got, want)
		}
		if got, want := cellOf(t, fam, name, "requests"), strconv.Itoa(requests[name]); got != want {
			t.Errorf("%s: requests %s, want %s", name, got, want)
		}
		// The verdict counts add up to the requests.
		var sum int
		for _, f := range strings.Split(cellOf(t, fam, name, "allow / degrade / throttle / block"), " / ") {
			n, err := strconv.Atoi(f)
			if err != nil {
				t.Fatal(err)
			}
			sum += n
		}
		if sum != requests[name] {
			t.Errorf("%s: verdicts add up to %d of %d requests", name, sum, requests[name])
		}
		// Every request carried the metadata, so every account has a session.
		if cellOf(t, fam, name, "server sessions") == "0" {
			t.Errorf("%s: no server sessions reported", name)
		}
	}
	if strings.Contains(md, "carried no verdict metadata") {
		t.Error("some replies carried no verdict metadata")
	}
	if err := rep.Write(t.TempDir()); err != nil {
		t.Fatal(err)
	}
}

// TestDetectionEvalThroughServer runs the evaluation through the real
// in-process server at a small scale: both variants, two secrets, every
// table filled, benign families never throttled.
func TestDetectionEvalThroughServer(t *testing.T) {
	dir := corpustest.Require(t)
	p := DetectionEvalParams{Scale: 0.05, CorpusDir: dir, Secrets: 2,
		Families: []string{"benign-chat", "benign-agent", "benign-rag", "attack-logitbias", "attack-diffuse"}}
	sec, err := RunDetectionEval(context.Background(), 11, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	rep := &Report{Sections: []Section{sec}}
	fam := findTable(t, rep, "Per family")
	if len(fam.Rows) != len(p.Families) {
		t.Fatalf("per-family rows = %d, want %d", len(fam.Rows), len(p.Families))
	}
	for _, name := range []string{"benign-chat", "benign-agent", "benign-rag"} {
		for _, col := range []string{"throttled or blocked (tuned)", "throttled or blocked (held out)"} {
			if got := cellOf(t, fam, name, col); got != "0.0%" {
				t.Errorf("%s / %s = %q, want 0.0%%", name, col, got)
			}
		}
	}
	if got := cellOf(t, fam, "attack-logitbias", "flagged (held out)"); got != "100.0%" {
		t.Errorf("attack-logitbias flagged (held out) = %q", got)
	}
	findTable(t, rep, "Precision and recall by tier")
	th := findTable(t, rep, "Over the degrade threshold")
	if len(th.Rows) < 8 {
		t.Errorf("threshold table has %d rows", len(th.Rows))
	}
	spread := findTable(t, rep, "Flagged share across 2 secrets")
	if len(spread.Rows) != len(p.Families) {
		t.Errorf("spread rows = %d", len(spread.Rows))
	}
}
