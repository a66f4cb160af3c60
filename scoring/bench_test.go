package scoring

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// prompt2K is a ~2 KB English prompt with numbers and punctuation.
func prompt2K(i int) string {
	var b strings.Builder
	for b.Len() < 2048 {
		fmt.Fprintf(&b, "Below is an instruction that describes task %d. Write a response that appropriately completes the request, "+
			"considering the %d constraints listed by the user and explaining each step of the calculation clearly. ", i, b.Len())
	}
	return b.String()[:2048]
}

func benchRequest(key string, prompt string, t time.Time) *Request {
	h := map[string]string{"authorization": "Bearer " + key, "user-agent": "OpenAI/Python 1.51.0"}
	return &Request{
		Time: t, Header: func(n string) string { return h[n] }, SourceAddress: "203.0.113.7:41000",
		Path: "/v1/chat/completions", Endpoint: "chat", Model: "gpt-4o", Prompt: prompt, Messages: 1,
		MaxTokens: 512, ShapeKeys: []string{"max_tokens", "messages", "model"},
	}
}

// BenchmarkScore2KPrompt scores a 2 KB prompt for an established session
// (bloom lookups, template sketch, clusters and state update included) and
// reports the p99 of the per-operation durations.
func BenchmarkScore2KPrompt(b *testing.B) {
	e, err := New(DefaultConfig(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	const sessions = 64
	prompts := make([]string, 256)
	for i := range prompts {
		prompts[i] = prompt2K(i)
	}
	t0 := time.Date(2025, 3, 3, 0, 0, 0, 0, time.UTC)
	reqs := make([]*Request, sessions)
	for i := range reqs {
		reqs[i] = benchRequest("sk-bench-"+strconv.Itoa(i), prompts[0], t0)
		for j := 0; j < 5; j++ { // past probation
			reqs[i].Time = t0.Add(time.Duration(j) * time.Second)
			e.Score(reqs[i])
		}
	}
	durs := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := reqs[i%sessions]
		r.Prompt = prompts[i%len(prompts)]
		r.Time = t0.Add(time.Minute + time.Duration(i)*time.Millisecond)
		start := time.Now()
		e.Score(r)
		durs = append(durs, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(durs, func(i, j int) bool { return durs[i] < durs[j] })
	b.ReportMetric(float64(durs[len(durs)*99/100].Nanoseconds()), "p99-ns")
	b.ReportMetric(float64(durs[len(durs)/2].Nanoseconds()), "p50-ns")
}

// BenchmarkAnalyze2K is the text analysis alone.
func BenchmarkAnalyze2K(b *testing.B) {
	a := newAnalyzer(testHashKey(), 8192)
	p := prompt2K(1)
	sc := &textScratch{}
	b.ReportAllocs()
	b.SetBytes(int64(len(p)))
	for i := 0; i < b.N; i++ {
		a.analyze(p, sc)
	}
}

// BenchmarkIdleSessionMemory creates DISTILLGUARD_BENCH_SESSIONS (default
// 1,000,000) sessions of one short request each and reports the heap bytes
// per session next to the engine's own state-bytes accounting. Run it with
// -benchtime=1x: every iteration builds the whole population.
func BenchmarkIdleSessionMemory(b *testing.B) {
	n := 1_000_000
	if v := os.Getenv("DISTILLGUARD_BENCH_SESSIONS"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	for i := 0; i < b.N; i++ {
		heap, metric := idleSessionMemory(b, n)
		b.ReportMetric(heap, "heap-B/session")
		b.ReportMetric(metric, "metric-B/session")
	}
}

// idleSessionMemory measures heap growth per idle session and the state
// bytes the engine reports per session.
func idleSessionMemory(tb testing.TB, n int) (heapPer, metricPer float64) {
	cfg := DefaultConfig()
	cfg.MemoryBytes = int64(n) * 2048 // room for all: measure, do not evict
	cfg.ProbationShare = 0.5
	e, err := New(cfg, Options{})
	if err != nil {
		tb.Fatal(err)
	}
	defer e.Close()
	t0 := time.Date(2025, 3, 3, 0, 0, 0, 0, time.UTC)
	r := benchRequest("", "What is the capital of France?", t0)
	var keys [2]string
	h := map[string]string{"user-agent": "curl/8.5.0"}
	r.Header = func(name string) string {
		if name == "authorization" {
			return keys[0]
		}
		return h[name]
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 0; i < n; i++ {
		keys[0] = "Bearer sk-" + strconv.Itoa(i)
		r.Time = t0.Add(time.Duration(i) * time.Millisecond)
		e.Score(r)
	}
	e.main.Wait()
	e.prob.Wait()
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	st := e.Stats()
	tracked := st.MainSessions + st.ProbationSessions
	if tracked < int64(n)*9/10 {
		tb.Fatalf("only %d of %d sessions tracked", tracked, n)
	}
	heapPer = float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(tracked)
	metricPer = float64(st.SessionBytes) / float64(tracked)
	runtime.KeepAlive(e)
	return heapPer, metricPer
}

// testHashKey is a random hash key, as a production engine has.
func testHashKey() hashKey {
	km, err := newKeyMaterial("", nil)
	if err != nil {
		panic(err)
	}
	return newHashKey(km.derive("test"))
}
