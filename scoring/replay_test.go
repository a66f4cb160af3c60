package scoring

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/distillguard/distillguard/internal/corpus/corpustest"
	"github.com/distillguard/distillguard/internal/traffic"
	"github.com/distillguard/distillguard/mutate"
)

// fromTraffic turns a generated request into what the ext_proc server hands
// the scorer: headers, address, and the body fields mutate.ParseRequest
// extracts (the same parser and cap the server uses).
func fromTraffic(tr *traffic.Request) *Request {
	r := &Request{
		Time:          tr.Time,
		SourceAddress: tr.SourceAddress,
		Path:          tr.Path,
	}
	h := tr.Header
	r.Header = func(name string) string { return h[name] }
	switch tr.Path {
	case traffic.PathChat:
		r.Endpoint = "chat"
	case traffic.PathCompletions:
		r.Endpoint = "completions"
	case traffic.PathEmbeddings:
		r.Endpoint = "embeddings"
	}
	// processing.max_prompt_bytes defaults to the same 8 KiB.
	p, err := mutate.ParseRequest(tr.Body, DefaultConfig().MaxPromptBytes)
	if err != nil {
		return r
	}
	r.Model, r.Prompt, r.Messages = p.Model, p.Prompt, p.Messages
	r.Stream, r.N, r.MaxTokens, r.Temperature = p.Stream, p.N, p.MaxTokens, p.Temperature
	r.Logprobs, r.TopLogprobs, r.LogitBiasSize, r.Echo = p.Logprobs, p.TopLogprobs, p.LogitBiasSize, p.Echo
	r.ShapeKeys = p.ShapeKeys
	r.System, r.Tools, r.ToolCount, r.FirstUser = p.System, p.Tools, p.ToolCount, p.FirstUser
	r.UserTurns, r.AssistantTurns, r.ToolTurns, r.AfterUser = p.UserTurns, p.AssistantTurns, p.ToolTurns, p.AfterUser
	return r
}

// loadTraffic generates traffic or skips (fails under CI=true) without
// corpora.
func loadTraffic(t testing.TB, o traffic.Options) []traffic.Request {
	t.Helper()
	o.CorpusDir = corpustest.Require(t)
	reqs, err := traffic.Generate(o)
	if err != nil {
		t.Fatal(err)
	}
	return reqs
}

// accountResult is one account's replay outcome.
type accountResult struct {
	family    string
	attack    bool
	requests  int
	firstFlag int // 1-based index of the first request at degrade or above; 0: never
	maxTier   Verdict
	peak      float64
}

// familyResult aggregates a family.
type familyResult struct {
	name                      string
	attack                    bool
	accounts, requests        int
	flagged, throttled, block int
	firstFlags                []int
	peaks                     []float64
}

func (f *familyResult) flaggedShare() float64 { return float64(f.flagged) / float64(f.accounts) }

func (f *familyResult) medianFirstFlag() int {
	if len(f.firstFlags) == 0 {
		return 0
	}
	x := append([]int(nil), f.firstFlags...)
	sort.Ints(x)
	return x[len(x)/2]
}

func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	x := append([]float64(nil), xs...)
	sort.Float64s(x)
	return x[min(int(q*float64(len(x))), len(x)-1)]
}

// aggregate sums accounts up by family.
func aggregate(accts map[string]*accountResult) map[string]*familyResult {
	fams := map[string]*familyResult{}
	for _, a := range accts {
		f := fams[a.family]
		if f == nil {
			f = &familyResult{name: a.family, attack: a.attack}
			fams[a.family] = f
		}
		f.accounts++
		f.requests += a.requests
		f.peaks = append(f.peaks, a.peak)
		if a.firstFlag > 0 {
			f.flagged++
			f.firstFlags = append(f.firstFlags, a.firstFlag)
		}
		if a.maxTier >= Throttle {
			f.throttled++
		}
		if a.maxTier >= Block {
			f.block++
		}
	}
	return fams
}

func resultTable(fams map[string]*familyResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-20s %8s %8s %8s %9s %8s %10s %8s %8s %8s\n", "family", "accounts", "requests", "flagged", "throttled", "blocked", "median1st", "peak50", "peak90", "peakmax")
	for _, f := range traffic.Families() {
		r := fams[f.Name]
		if r == nil {
			continue
		}
		fmt.Fprintf(&b, "%-20s %8d %8d %7.1f%% %8.1f%% %7.1f%% %10d %8.3f %8.3f %8.3f\n", r.name, r.accounts, r.requests,
			100*r.flaggedShare(), 100*float64(r.throttled)/float64(r.accounts), 100*float64(r.block)/float64(r.accounts),
			r.medianFirstFlag(), quantile(r.peaks, 0.5), quantile(r.peaks, 0.9), quantile(r.peaks, 1))
	}
	return b.String()
}
