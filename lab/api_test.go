package lab

import (
	"flag"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/distillguard/distillguard/internal/golden"
	"github.com/distillguard/distillguard/mutate"
)

var update = flag.Bool("update", false, "rewrite golden files")

func rawPolicy() Policy {
	return Policy{Name: "raw", Output: mutate.Passthrough(), Request: noRequestRewrite()}
}

// The simulated API's wire format is what clients of a real OpenAI-
// compatible server see, so it is pinned by golden files.
func TestAPIWireFormat(t *testing.T) {
	m := newHiddenModel(1, 4, 8)
	q := Query{Prompt: "say \"hi\"", TopLogprobs: 3, LogitBias: []Bias{{Token: 5, Value: 2.5}, {Token: 7, Value: -100}}}
	for _, tc := range []struct {
		name   string
		stream bool
	}{{"completion", false}, {"stream", true}} {
		t.Run(tc.name, func(t *testing.T) {
			api := NewAPI(m, rawPolicy(), APIOptions{Stream: tc.stream})
			req := appendRequest(nil, q, tc.stream)
			golden.Check(t, filepath.Join("testdata", tc.name+".request.json"), req, *update)
			body, err := api.serve(nil, req)
			if err != nil {
				t.Fatal(err)
			}
			golden.Check(t, filepath.Join("testdata", tc.name+".response"), body, *update)
		})
	}
}

func TestAPIAnswersLikeTheModel(t *testing.T) {
	m := newHiddenModel(3, 8, 64)
	bias := []Bias{{Token: 9, Value: 4}, {Token: 40, Value: -3}}
	z := make([]float64, 64)
	if err := m.Logits("p", z); err != nil {
		t.Fatal(err)
	}
	for _, b := range bias {
		z[b.Token] += b.Value
	}
	chosen := logSoftmax(z)
	order := make([]int, 64)
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		switch {
		case z[a] > z[b]:
			return -1
		case z[a] < z[b]:
			return 1
		}
		return 0
	})
	for _, stream := range []bool{false, true} {
		api := NewAPI(m, rawPolicy(), APIOptions{Stream: stream, Seed: 5})
		r, err := api.Query(Query{Prompt: "p", TopLogprobs: 5, LogitBias: bias})
		if err != nil {
			t.Fatal(err)
		}
		if r.Chosen != m.Token(chosen) || !r.HasLogprob || r.Logprob != z[chosen] {
			t.Errorf("stream=%v: chosen %q %v, want %q %v", stream, r.Chosen, r.Logprob, m.Token(chosen), z[chosen])
		}
		if len(r.Top) != 5 {
			t.Fatalf("stream=%v: %d alternatives, want 5", stream, len(r.Top))
		}
		for i, e := range r.Top {
			if e.Token != m.Token(order[i]) || e.Logprob != z[order[i]] {
				t.Errorf("stream=%v: alternative %d = %v, want %s %v", stream, i, e, m.Token(order[i]), z[order[i]])
			}
		}
		// Without logprobs only the token comes back.
		r, err = api.Query(Query{Prompt: "p", LogitBias: bias})
		if err != nil {
			t.Fatal(err)
		}
		if r.Chosen != m.Token(chosen) || r.HasLogprob || len(r.Top) != 0 {
			t.Errorf("stream=%v without logprobs: %+v", stream, r)
		}
	}
}

func TestAPIRejectsBadRequests(t *testing.T) {
	m := newHiddenModel(1, 4, 8)
	api := NewAPI(m, rawPolicy(), APIOptions{})
	for _, body := range []string{
		`not json`,
		`{"messages":[]}`,
		`{"messages":[{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":21}`,
		`{"messages":[{"role":"user","content":"x"}],"top_logprobs":2}`,
		`{"messages":[{"role":"user","content":"x"}],"logit_bias":{"8":1}}`,
		`{"messages":[{"role":"user","content":"x"}],"logit_bias":{"1":101}}`,
		`{"messages":[{"role":"user","content":"x"}],"logit_bias":{"a":1}}`,
	} {
		if _, err := api.serve(nil, []byte(body)); err == nil {
			t.Errorf("%s: accepted", body)
		}
	}
}

func TestTopK(t *testing.T) {
	for _, tc := range []struct {
		z    []float64
		k    int
		want []int
	}{
		{[]float64{1, 3, 2}, 2, []int{1, 2}},
		{[]float64{1, 3, 2}, 5, []int{1, 2, 0}},
		{[]float64{1, 1, 1}, 2, []int{0, 1}},
		{[]float64{-5, 0, -1, 0}, 3, []int{1, 3, 2}},
		{[]float64{1, 2}, 0, nil},
	} {
		if got := topK(nil, tc.z, tc.k); !slices.Equal(got, tc.want) {
			t.Errorf("topK(%v, %d) = %v, want %v", tc.z, tc.k, got, tc.want)
		}
	}
}

func TestParseSSE(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     Response
		err      string
	}{
		{"two chunks", "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"b\"},\"logprobs\":{\"content\":[{\"token\":\"b\",\"logprob\":-0.5,\"top_logprobs\":[{\"token\":\"b\",\"logprob\":-0.5}]}]}}]}\n\ndata: [DONE]\n\n",
			Response{Chosen: "ab", HasLogprob: true, Logprob: -0.5, Top: []TokenLogprob{{"b", -0.5}}}, ""},
		{"comments and no space", ": keep-alive\n\ndata:{\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\ndata:[DONE]\n\n", Response{Chosen: "x"}, ""},
		{"no done", "data: {\"choices\":[]}\n\n", Response{}, "without [DONE]"},
		{"bad json", "data: {\"choices\":\n\ndata: [DONE]\n\n", Response{}, "decode chunk"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseSSE([]byte(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Chosen != tc.want.Chosen || got.HasLogprob != tc.want.HasLogprob || got.Logprob != tc.want.Logprob || !slices.Equal(got.Top, tc.want.Top) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func FuzzParseSSE(f *testing.F) {
	m := newHiddenModel(1, 4, 8)
	api := NewAPI(m, rawPolicy(), APIOptions{Stream: true})
	body, _ := api.serve(nil, appendRequest(nil, Query{Prompt: "x", TopLogprobs: 2}, true))
	f.Add(body)
	f.Add([]byte("data: [DONE]\n\n"))
	f.Add([]byte("data: {}\n\ndata: [DONE]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseSSE(b)
		if err == nil && len(r.Top) > 0 && !r.HasLogprob {
			t.Fatalf("alternatives without a logprob: %+v", r)
		}
	})
}

func FuzzParseCompletion(f *testing.F) {
	m := newHiddenModel(1, 4, 8)
	api := NewAPI(m, rawPolicy(), APIOptions{})
	body, _ := api.serve(nil, appendRequest(nil, Query{Prompt: "x", TopLogprobs: 2}, false))
	f.Add(body)
	f.Add([]byte(`{"choices":[{"message":{"content":"a"},"logprobs":null}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseCompletion(b)
		if err == nil && len(r.Top) > 0 && !r.HasLogprob {
			t.Fatalf("alternatives without a logprob: %+v", r)
		}
	})
}

// FuzzRecord checks that records survive the prompt encoding exactly and
// that the server-side parser never panics on arbitrary prompts.
func FuzzRecord(f *testing.F) {
	f.Add(1.5, -2.0, 1e-300)
	f.Add(math.MaxFloat64, math.Copysign(0, -1), 3.0) // negative zero
	f.Fuzz(func(t *testing.T, a, b, c float64) {
		x := []float64{a, b, c}
		got, err := parseRecord(formatRecord(x), 3)
		for _, v := range x {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		for i := range x {
			if got[i] != x[i] {
				t.Fatalf("feature %d: %v became %v", i, x[i], got[i])
			}
		}
		_, _ = parseRecord(tramerPrefix+formatRecord(x)[len(tramerPrefix):]+" x", 3)
	})
}

func BenchmarkQueryTopK(b *testing.B) {
	for _, pol := range []Policy{rawPolicy(), {Name: "round 2", Output: mutate.OutputPolicy{RoundDecimals: 2, MaxAlternatives: -1, EmbeddingDecimals: -1}, Request: noRequestRewrite()}} {
		for _, stream := range []bool{false, true} {
			b.Run(pol.Name+map[bool]string{false: "/json", true: "/sse"}[stream], func(b *testing.B) {
				m := newHiddenModel(1, 64, 1024)
				api := NewAPI(m, pol, APIOptions{Stream: stream})
				bias := make([]Bias, 20)
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					for j := range bias {
						bias[j] = Bias{Token: (i*19 + j) % 1024, Value: maxBias}
					}
					if _, err := api.Query(Query{Prompt: "p", TopLogprobs: 20, LogitBias: bias}); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkQueryLogprobFree(b *testing.B) {
	m := newHiddenModel(1, 64, 1024)
	api := NewAPI(m, rawPolicy(), APIOptions{Stream: true})
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := api.Query(Query{Prompt: "p", LogitBias: []Bias{{Token: i % 1024, Value: 7.5}}}); err != nil {
			b.Fatal(err)
		}
	}
}
