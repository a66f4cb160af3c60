package mutate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
)

var tokenPieces = []string{"a", " the", "é", "你好", "🙂", "\"", "\\", "\n", "\t", "<", "&", "\u2028", "x\u0000y", " ", "Hello", "'", "/", "\ufffd"}

func randToken(rng *rand.Rand) string {
	var b strings.Builder
	for n := 1 + rng.IntN(3); n > 0; n-- {
		b.WriteString(tokenPieces[rng.IntN(len(tokenPieces))])
	}
	return b.String()
}

func randLogprobs(rng *rand.Rand, n int) []float64 {
	vs := make([]float64, n)
	for i := range vs {
		switch rng.IntN(10) {
		case 0:
			vs[i] = -9999
		case 1:
			vs[i] = -rng.Float64() * 1e-4
		default:
			vs[i] = -rng.Float64() * 12
		}
	}
	slices.SortFunc(vs, func(a, b float64) int { return -cmpFloat(a, b) })
	return vs
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

type genAlt struct {
	Token   string  `json:"token"`
	Logprob float64 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

type genEntry struct {
	Token   string   `json:"token"`
	Logprob float64  `json:"logprob"`
	Bytes   []int    `json:"bytes"`
	Top     []genAlt `json:"top_logprobs"`
}

func bytesOf(s string) []int {
	var out []int
	for _, c := range []byte(s) {
		out = append(out, int(c))
	}
	return out
}

// genStream returns an SSE stream of random chat.completion.chunk or
// text_completion events, with its event count.
func genStream(rng *rand.Rand, legacy bool) ([]byte, int) {
	eol := []string{"\n", "\r\n", "\r"}[rng.IntN(3)]
	var out bytes.Buffer
	events := 0
	nChoices := 1 + rng.IntN(2)
	nAlts := rng.IntN(21)
	for ev := rng.IntN(12); ev >= 0; ev-- {
		idx := rng.IntN(nChoices)
		var doc any
		if legacy {
			n := rng.IntN(3)
			lp := map[string]any{"tokens": []string{}, "token_logprobs": []any{}, "top_logprobs": []any{}, "text_offset": []int{}}
			var text strings.Builder
			for i := 0; i < n; i++ {
				tok := randToken(rng)
				text.WriteString(tok)
				vs := randLogprobs(rng, nAlts+1)
				top := map[string]float64{tok: vs[0]}
				for j := 1; j < len(vs); j++ {
					top[fmt.Sprintf("%s#%d", randToken(rng), j)] = vs[j]
				}
				lp["tokens"] = append(lp["tokens"].([]string), tok)
				lp["token_logprobs"] = append(lp["token_logprobs"].([]any), vs[0])
				lp["top_logprobs"] = append(lp["top_logprobs"].([]any), top)
				lp["text_offset"] = append(lp["text_offset"].([]int), i)
			}
			doc = map[string]any{"id": "cmpl-1", "object": "text_completion", "model": "m",
				"choices": []any{map[string]any{"index": idx, "text": text.String(), "logprobs": lp, "finish_reason": nil}}}
		} else {
			var entries []genEntry
			var text strings.Builder
			for i := rng.IntN(3); i > 0; i-- {
				tok := randToken(rng)
				text.WriteString(tok)
				vs := randLogprobs(rng, nAlts)
				e := genEntry{Token: tok, Logprob: -rng.Float64(), Bytes: bytesOf(tok), Top: []genAlt{}}
				if len(vs) > 0 {
					e.Logprob = vs[0]
				}
				for j, v := range vs {
					t := tok
					if j > 0 {
						t = randToken(rng)
					}
					e.Top = append(e.Top, genAlt{t, v, bytesOf(t)})
				}
				entries = append(entries, e)
			}
			var lp any
			if entries != nil {
				lp = map[string]any{"content": entries, "refusal": nil}
			}
			doc = map[string]any{"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "m",
				"choices": []any{map[string]any{"index": idx, "delta": map[string]any{"content": text.String()}, "logprobs": lp, "finish_reason": nil}}}
		}
		b, err := json.Marshal(doc)
		if err != nil {
			panic(err)
		}
		if rng.IntN(4) == 0 {
			out.WriteString(": keepalive" + eol)
		}
		out.WriteString("data: ")
		out.Write(b)
		out.WriteString(eol + eol)
		events++
	}
	out.WriteString("data: [DONE]" + eol + eol)
	return out.Bytes(), events + 1
}

func randCuts(rng *rand.Rand, n int) []int {
	var cuts []int
	for c := 0; c < n; {
		switch rng.IntN(4) {
		case 0:
			c += 0
		case 1:
			c++
		default:
			c += rng.IntN(200)
		}
		cuts = append(cuts, min(c, n))
	}
	return cuts
}

// eventsOf splits a stream (any line endings) into its data payloads.
func eventsOf(t *testing.T, stream []byte) [][]byte {
	t.Helper()
	var payloads [][]byte
	s := NewSSEStream(NewRewriter(Passthrough(), 0), 0)
	_ = s.Write(nil, stream, true)
	norm := strings.ReplaceAll(strings.ReplaceAll(string(stream), "\r\n", "\n"), "\r", "\n")
	for _, l := range strings.Split(norm, "\n") {
		if p, ok := strings.CutPrefix(l, "data: "); ok && p != "[DONE]" {
			payloads = append(payloads, []byte(p))
		}
	}
	if got := int(s.Stats().Events); got < len(payloads) {
		t.Fatalf("%d events framed, %d data lines", got, len(payloads))
	}
	return payloads
}

func TestPropertyStreams(t *testing.T) {
	rng := rand.New(rand.NewPCG(2024, 11))
	iters := 300
	if testing.Short() {
		iters = 50
	}
	for it := 0; it < iters; it++ {
		legacy := it%2 == 1
		in, nEvents := genStream(rng, legacy)
		p := OutputPolicy{
			StripLogprobs:     rng.IntN(8) == 0,
			RoundDecimals:     rng.IntN(6) - 1,
			MaxAlternatives:   rng.IntN(23) - 1,
			EmbeddingDecimals: -1,
		}
		if rng.IntN(2) == 0 {
			p.Perturb = []float64{0.05, 0.3, 2}[rng.IntN(3)]
		}
		seed := rng.Uint64()
		whole, st := feed(p, seed, 1<<20, in, nil)
		if st.Events != int64(nEvents) {
			t.Fatalf("iter %d: %d events framed, %d sent", it, st.Events, nEvents)
		}
		if st.Invalid != 0 || st.Oversize != 0 {
			t.Fatalf("iter %d: stats %+v", it, st)
		}
		for k := 0; k < 4; k++ {
			got, st2 := feed(p, seed, 1<<20, in, randCuts(rng, len(in)))
			if !bytes.Equal(got, whole) {
				t.Fatalf("iter %d: chunked output differs\nwhole %q\ngot   %q", it, whole, got)
			}
			if st2 != st {
				t.Fatalf("iter %d: stats differ with chunking: %+v vs %+v", it, st2, st)
			}
		}
		ins, outs := eventsOf(t, in), eventsOf(t, whole)
		if len(ins) != len(outs) {
			t.Fatalf("iter %d: %d data events in, %d out", it, len(ins), len(outs))
		}
		for i := range ins {
			checkEvent(t, fmt.Sprintf("iter %d event %d", it, i), p, ins[i], outs[i])
		}
	}
}

// checkEvent checks one rewritten document against its input: bytes before
// the logprobs are identical, every other field decodes equal, values are
// rounded, alternatives capped, values <= 0 and ranking kept.
func checkEvent(t *testing.T, name string, p OutputPolicy, in, out []byte) {
	t.Helper()
	if !json.Valid(out) {
		t.Fatalf("%s: output not JSON: %s", name, out)
	}
	if i := bytes.Index(in, []byte(`"logprobs":`)); i >= 0 {
		if !bytes.HasPrefix(out, in[:i+len(`"logprobs":`)]) {
			t.Fatalf("%s: bytes before logprobs changed:\n%s\n%s", name, in, out)
		}
	}
	var vin, vout any
	if err := json.Unmarshal(in, &vin); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(out, &vout); err != nil {
		t.Fatal(err)
	}
	var values [][]float64
	nin := normalizeDoc(vin, p, true, nil)
	// The output is not cut: it must already hold at most k alternatives.
	nout := normalizeDoc(vout, p, false, &values)
	if !reflect.DeepEqual(nin, nout) {
		a, _ := json.Marshal(nin)
		b, _ := json.Marshal(nout)
		t.Fatalf("%s: fields other than logprob values differ:\n%s\n%s", name, a, b)
	}
	for _, group := range values {
		for j, v := range group {
			if v > 0 {
				t.Fatalf("%s: logprob %v > 0", name, v)
			}
			if k := p.RoundDecimals; k >= 0 {
				y := v * math.Pow10(k)
				if math.Abs(y-math.Round(y)) > 1e-6*math.Max(1, math.Abs(y)) {
					t.Fatalf("%s: %v not rounded to %d decimals", name, v, k)
				}
			}
			if j > 0 && v > group[j-1] {
				t.Fatalf("%s: ranking not kept: %v", name, group)
			}
		}
	}
}

// normalizeDoc returns doc with every logprob number set to 0, chat
// top_logprobs cut to MaxAlternatives and legacy top_logprobs objects
// reduced to their MaxAlternatives best members, so that input and output
// compare equal. It collects the logprob values per position (chosen
// first when it is the top value, then the alternatives in rank order).
func normalizeDoc(doc any, p OutputPolicy, cut bool, values *[][]float64) any {
	m := doc.(map[string]any)
	for _, c := range m["choices"].([]any) {
		choice := c.(map[string]any)
		lp, ok := choice["logprobs"].(map[string]any)
		if !ok {
			continue
		}
		if p.StripLogprobs {
			choice["logprobs"] = nil
			continue
		}
		if content, ok := lp["content"].([]any); ok {
			for _, e := range content {
				entry := e.(map[string]any)
				chosen := entry["logprob"].(float64)
				entry["logprob"] = 0.0
				top := entry["top_logprobs"].([]any)
				if k := p.MaxAlternatives; cut && k >= 0 && len(top) > k {
					top = top[:k]
				}
				var vs []float64
				for _, a := range top {
					alt := a.(map[string]any)
					vs = append(vs, alt["logprob"].(float64))
					alt["logprob"] = 0.0
				}
				entry["top_logprobs"] = top
				if values != nil {
					if len(vs) == 0 || chosen >= vs[0] {
						vs = append([]float64{chosen}, vs...)
					}
					*values = append(*values, vs)
				}
			}
		}
		if tl, ok := lp["token_logprobs"].([]any); ok {
			tops := lp["top_logprobs"].([]any)
			for i := range tl {
				chosen := tl[i].(float64)
				tl[i] = 0.0
				obj := tops[i].(map[string]any)
				type kv struct {
					k string
					v float64
				}
				var kvs []kv
				for k, v := range obj {
					kvs = append(kvs, kv{k, v.(float64)})
				}
				slices.SortStableFunc(kvs, func(a, b kv) int {
					if c := cmpFloat(b.v, a.v); c != 0 {
						return c
					}
					return strings.Compare(a.k, b.k)
				})
				if k := p.MaxAlternatives; cut && k >= 0 && len(kvs) > k {
					kvs = kvs[:k]
				}
				keep := map[string]any{}
				var vs []float64
				for _, e := range kvs {
					keep[e.k] = 0.0
					vs = append(vs, e.v)
				}
				tops[i] = keep
				if values != nil {
					if len(vs) == 0 || chosen >= vs[0] {
						vs = append([]float64{chosen}, vs...)
					}
					*values = append(*values, vs)
				}
			}
		}
	}
	return doc
}
