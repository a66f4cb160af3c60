package bench

import (
	"bytes"
	"encoding/json"
	"flag"
	"path/filepath"
	"strings"
	"testing"

	"github.com/distillguard/distillguard/internal/corpus/corpustest"
	"github.com/distillguard/distillguard/internal/golden"
)

var update = flag.Bool("update", false, "rewrite golden files")

// chunkDoc is the part of a chat.completion.chunk the tests look at.
type chunkDoc struct {
	Object  string `json:"object"`
	Choices []struct {
		Delta struct {
			Content *string `json:"content"`
		} `json:"delta"`
		Logprobs *struct {
			Content []struct {
				Token       string  `json:"token"`
				Logprob     float64 `json:"logprob"`
				Bytes       []int   `json:"bytes"`
				TopLogprobs []struct {
					Token   string  `json:"token"`
					Logprob float64 `json:"logprob"`
				} `json:"top_logprobs"`
			} `json:"content"`
		} `json:"logprobs"`
	} `json:"choices"`
}

func TestStreamEventsAreValidSSE(t *testing.T) {
	for _, k := range []int{0, 5, 20} {
		g := &gen{r: newRand(uint64(k))}
		events := g.streamEvents(50, k)
		if len(events) != 54 {
			t.Fatalf("k=%d: %d events, want 54", k, len(events))
		}
		var sizes []int
		for i, e := range events {
			data, ok := bytes.CutPrefix(e, []byte("data: "))
			if !ok || !bytes.HasSuffix(data, []byte("\n\n")) || bytes.Count(e, []byte("\n")) != 2 {
				t.Fatalf("k=%d event %d is not one SSE data event: %q", k, i, e)
			}
			data = bytes.TrimSuffix(data, []byte("\n\n"))
			if i == len(events)-1 {
				if string(data) != "[DONE]" {
					t.Fatalf("last event %q", data)
				}
				continue
			}
			var doc chunkDoc
			if err := json.Unmarshal(data, &doc); err != nil {
				t.Fatalf("k=%d event %d: %v: %s", k, i, err, data)
			}
			if doc.Object != "chat.completion.chunk" {
				t.Fatalf("object %q", doc.Object)
			}
			if i == 0 || i > 50 {
				continue
			}
			sizes = append(sizes, len(e))
			c := doc.Choices[0]
			if k == 0 {
				if c.Logprobs != nil {
					t.Fatalf("k=0 event %d has logprobs", i)
				}
				continue
			}
			lp := c.Logprobs.Content[0]
			if len(lp.TopLogprobs) != k {
				t.Fatalf("event %d has %d alternatives, want %d", i, len(lp.TopLogprobs), k)
			}
			if lp.Token != *c.Delta.Content || lp.TopLogprobs[0].Token != lp.Token || len(lp.Bytes) != len(lp.Token) {
				t.Fatalf("event %d: token fields disagree: %s", i, data)
			}
			for j, a := range lp.TopLogprobs {
				if a.Logprob > 0 || (j > 0 && a.Logprob > lp.TopLogprobs[j-1].Logprob) {
					t.Fatalf("event %d: alternatives not sorted or positive: %s", i, data)
				}
			}
		}
		// Event sizes as OpenAI sends them: about 250 B without logprobs,
		// 700 B with 5 alternatives, 1.7 KB with 20 (each alternative is
		// token, logprob and UTF-8 bytes, ~60 B).
		avg := 0
		for _, s := range sizes {
			avg += s
		}
		avg /= len(sizes)
		want := map[int][2]int{0: {200, 320}, 5: {550, 900}, 20: {1400, 2500}}[k]
		if lo, hi := want[0], want[1]; avg < lo || avg > hi {
			t.Errorf("k=%d: average event %d bytes, want %d..%d", k, avg, lo, hi)
		}
	}
}

func TestStreamGolden(t *testing.T) {
	g := &gen{r: newRand(42)}
	var b bytes.Buffer
	for _, e := range g.streamEvents(3, 2) {
		b.Write(e)
	}
	golden.Check(t, filepath.Join("testdata", "stream-3tokens-top2.golden"), b.Bytes(), *update)
}

func TestJSONAndEmbeddingsBodies(t *testing.T) {
	cases := []struct {
		name string
		spec WorkloadSpec
	}{
		{"json-100k-top5", WorkloadSpec{Kind: KindJSON, JSONBytes: 100 << 10, Mix: []MixEntry{{5, 1}}}},
		{"json-20k-plain", WorkloadSpec{Kind: KindJSON, JSONBytes: 20 << 10, Mix: []MixEntry{{0, 1}}}},
		{"embeddings-3072", WorkloadSpec{Kind: KindEmbeddings, Dimensions: 3072}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wl, err := BuildWorkload(tc.spec, 1)
			if err != nil {
				t.Fatal(err)
			}
			x := wl.exchanges[0][0]
			if len(x.raw) != 1 || !x.chunks[0].GetResponseBody().GetEndOfStream() {
				t.Fatal("a buffered response is one body message with end_of_stream")
			}
			body := x.raw[0]
			var doc map[string]any
			if err := json.Unmarshal(body, &doc); err != nil {
				t.Fatal(err)
			}
			var req map[string]any
			if err := json.Unmarshal(x.reqRaw, &req); err != nil {
				t.Fatalf("request: %v", err)
			}
			switch tc.spec.Kind {
			case KindJSON:
				if n := len(body); n < tc.spec.JSONBytes*9/10 || n > tc.spec.JSONBytes*11/10 {
					t.Errorf("body %d bytes, want about %d", n, tc.spec.JSONBytes)
				}
			case KindEmbeddings:
				emb := doc["data"].([]any)[0].(map[string]any)["embedding"].([]any)
				if len(emb) != 3072 {
					t.Errorf("%d dimensions", len(emb))
				}
				if x.path != "/v1/embeddings" {
					t.Errorf("path %s", x.path)
				}
			}
		})
	}
}

func TestWorkloadIsDeterministic(t *testing.T) {
	spec := WorkloadSpec{Kind: KindStream, Tokens: 10, Mix: []MixEntry{{0, 1}, {20, 2}}}
	a, err := BuildWorkload(spec, 5)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := BuildWorkload(spec, 5)
	c, _ := BuildWorkload(spec, 6)
	if !bytes.Equal(a.exchanges[1][0].raw[3], b.exchanges[1][0].raw[3]) {
		t.Error("same seed, different payloads")
	}
	if bytes.Equal(a.exchanges[1][0].raw[3], c.exchanges[1][0].raw[3]) {
		t.Error("different seeds, same payloads")
	}
	if m := a.Messages(); m != 3+14 {
		t.Errorf("Messages() = %v, want 17", m)
	}
}

func TestBuildWorkloadRejects(t *testing.T) {
	for _, spec := range []WorkloadSpec{
		{Kind: KindStream, Tokens: 1 << 30},
		{Kind: KindJSON, JSONBytes: 1 << 30},
		{Kind: KindEmbeddings, Dimensions: 1 << 30},
		{Kind: BodyKind(9)},
		{Kind: KindStream, Mix: []MixEntry{{Alternatives: 21, Weight: 1}}},
		{Kind: KindStream, Mix: []MixEntry{{Alternatives: 5, Weight: 0}}},
	} {
		if _, err := BuildWorkload(spec, 1); err == nil {
			t.Errorf("BuildWorkload(%+v) succeeded", spec)
		}
	}
}

func TestParseMix(t *testing.T) {
	cases := []struct {
		in   string
		want []MixEntry
		err  bool
	}{
		{"5", []MixEntry{{5, 1}}, false},
		{"0:1,5:2,20:1", []MixEntry{{0, 1}, {5, 2}, {20, 1}}, false},
		{" 0 : 3 , ", []MixEntry{{0, 3}}, false},
		{"", nil, true},
		{"21", nil, true},
		{"-1", nil, true},
		{"5:0", nil, true},
		{"x", nil, true},
		{"5:x", nil, true},
	}
	for _, tc := range cases {
		got, err := ParseMix(tc.in)
		if (err != nil) != tc.err {
			t.Errorf("ParseMix(%q) error %v", tc.in, err)
			continue
		}
		if !tc.err && !equalMix(got, tc.want) {
			t.Errorf("ParseMix(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func equalMix(a, b []MixEntry) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func FuzzParseMix(f *testing.F) {
	for _, s := range []string{"5", "0:1,5:2,20:1", ":", ",,", "20:1000", "1:1,1:1,1:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		mix, err := ParseMix(s)
		if err != nil {
			return
		}
		if len(mix) == 0 || len(mix) > 21 {
			t.Fatalf("%q: %d entries", s, len(mix))
		}
		for _, m := range mix {
			if m.Alternatives < 0 || m.Alternatives > 20 || m.Weight < 1 || m.Weight > 1000 {
				t.Fatalf("%q: entry %+v out of range", s, m)
			}
		}
		if _, err := BuildWorkload(WorkloadSpec{Kind: KindStream, Tokens: 2, Variants: 1, Mix: mix}, 1); err != nil {
			t.Fatalf("%q: valid mix rejected: %v", s, err)
		}
	})
}

func TestLoadPrompts(t *testing.T) {
	dir := corpustest.Require(t)
	ps, err := LoadPrompts(dir, 100000)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) < 1000 {
		t.Errorf("only %d prompts", len(ps))
	}
	for _, p := range ps {
		if strings.TrimSpace(p) == "" {
			t.Fatal("empty prompt")
		}
	}
	if _, err := LoadPrompts(t.TempDir(), 10); err == nil {
		t.Error("an empty directory must be an error")
	}
	wl, err := BuildWorkload(WorkloadSpec{Kind: KindStream, Tokens: 1, Prompts: ps[:1]}, 1)
	if err != nil {
		t.Fatal(err)
	}
	var req struct {
		Messages []struct{ Content string } `json:"messages"`
	}
	if err := json.Unmarshal(wl.exchanges[0][0].reqRaw, &req); err != nil || req.Messages[1].Content != ps[0] {
		t.Errorf("request does not carry the corpus prompt: %v %s", err, wl.exchanges[0][0].reqRaw)
	}
}

func TestBodyKindText(t *testing.T) {
	for _, k := range []BodyKind{KindStream, KindJSON, KindEmbeddings} {
		b, err := k.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var back BodyKind
		if err := back.UnmarshalText(b); err != nil || back != k {
			t.Errorf("%v: round trip gave %v, %v", k, back, err)
		}
	}
	var k BodyKind
	if err := k.UnmarshalText([]byte("video")); err == nil {
		t.Error("unknown kind accepted")
	}
}
