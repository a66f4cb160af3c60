package mutate

import (
	"bytes"
	"encoding/json"
	"flag"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// goldenOutput are the output policies the golden files are named after
// (testdata/golden/<input>.<policy>.golden). allow and degrade are the
// defaults of config/default.yaml.
var goldenOutput = map[string]OutputPolicy{
	"allow":   {RoundDecimals: 2, MaxAlternatives: 5, EmbeddingDecimals: -1},
	"degrade": {RoundDecimals: 1, MaxAlternatives: 0, Perturb: 0.3, EmbeddingDecimals: 3},
	"strip":   {StripLogprobs: true, RoundDecimals: -1, MaxAlternatives: -1, EmbeddingDecimals: -1},
	"perturb": {RoundDecimals: 3, MaxAlternatives: 2, Perturb: 0.5, EmbeddingDecimals: -1},
}

var goldenRequest = map[string]RequestPolicy{
	"allow":   {MaxTopLogprobs: 5, DropLogitBiasWithLogprobs: true},
	"degrade": {MaxTopLogprobs: 5, MaxN: 1, DropLogitBiasWithLogprobs: true},
	"strict":  {MaxTopLogprobs: 0, MaxN: 1, DropLogitBias: true, StripLogprobs: true},
}

const goldenSeed = 0x5eed

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name+".golden")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./mutate -run Golden -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file\ngot:\n%s\nwant:\n%s", name, got, want)
	}
}

func TestGoldenStreams(t *testing.T) {
	cases := []struct{ input, policy string }{
		{"chat_stream.sse", "allow"},
		{"chat_stream.sse", "degrade"},
		{"chat_stream.sse", "strip"},
		{"chat_stream.sse", "perturb"},
		{"chat_stream_crlf.sse", "allow"},
		{"chat_stream_crlf.sse", "degrade"},
		{"completion_stream.sse", "allow"},
		{"completion_stream.sse", "degrade"},
		{"completion_stream.sse", "perturb"},
		{"responses_stream.sse", "allow"},
		{"responses_stream.sse", "degrade"},
		{"responses_stream.sse", "strip"},
		{"responses_stream.sse", "perturb"},
	}
	for _, c := range cases {
		t.Run(c.input+"/"+c.policy, func(t *testing.T) {
			in, err := os.ReadFile(filepath.Join("testdata", c.input))
			if err != nil {
				t.Fatal(err)
			}
			p := goldenOutput[c.policy]
			whole, st := feed(p, goldenSeed, 1<<20, in, nil)
			if st.Invalid != 0 || st.Oversize != 0 || st.MultiLineSkipped != 0 {
				t.Errorf("stats %+v", st)
			}
			checkGolden(t, c.input+"."+c.policy, whole)
			// Any chunking gives the same bytes.
			if got, _ := feed(p, goldenSeed, 1<<20, in, everyByte(len(in))); !bytes.Equal(got, whole) {
				t.Errorf("1-byte chunks differ from one chunk")
			}
			rng := rand.New(rand.NewPCG(3, 4))
			for k := 0; k < 10; k++ {
				var cuts []int
				for c := 0; c < len(in); c += rng.IntN(300) {
					cuts = append(cuts, c)
				}
				if got, _ := feed(p, goldenSeed, 1<<20, in, cuts); !bytes.Equal(got, whole) {
					t.Fatalf("random chunking %d differs", k)
				}
			}
			checkStreamEquivalent(t, in, whole)
		})
	}
}

// checkStreamEquivalent checks that the rewritten stream has the same
// events, with the same non-data lines, as the input.
func checkStreamEquivalent(t *testing.T, in, out []byte) {
	t.Helper()
	norm := func(b []byte) []string {
		s := strings.ReplaceAll(strings.ReplaceAll(string(b), "\r\n", "\n"), "\r", "\n")
		var keep []string
		for _, l := range strings.Split(s, "\n") {
			if !strings.HasPrefix(l, "data:") {
				keep = append(keep, l)
			}
		}
		return keep
	}
	a, b := norm(in), norm(out)
	if strings.Join(a, "\n") != strings.Join(b, "\n") {
		t.Errorf("non-data lines differ")
	}
}

func TestGoldenBodies(t *testing.T) {
	cases := []struct{ input, policy string }{
		{"chat_body.json", "allow"},
		{"chat_body.json", "degrade"},
		{"chat_body.json", "strip"},
		{"chat_body.json", "perturb"},
		{"completion_body.json", "allow"},
		{"completion_body.json", "degrade"},
		{"completion_body.json", "strip"},
		{"completion_body.json", "perturb"},
		{"response_body.json", "allow"},
		{"response_body.json", "strip"},
		{"response_body.json", "perturb"},
		{"embeddings_float.json", "degrade"},
		{"embeddings_float.json", "allow"},
		{"embeddings_base64.json", "degrade"},
	}
	for _, c := range cases {
		t.Run(c.input+"/"+c.policy, func(t *testing.T) {
			in, err := os.ReadFile(filepath.Join("testdata", c.input))
			if err != nil {
				t.Fatal(err)
			}
			r := NewRewriter(goldenOutput[c.policy], goldenSeed)
			out, err := r.Rewrite(nil, in)
			if err != nil {
				t.Fatal(err)
			}
			if !json.Valid(out) {
				t.Fatalf("output is not valid JSON")
			}
			checkGolden(t, c.input+"."+c.policy, out)
		})
	}
}

func TestGoldenRequests(t *testing.T) {
	inputs := []string{"request_chat.json", "request_completion.json", "request_responses.json", "request_vllm_tokens.json", "request_embeddings.json"}
	for _, input := range inputs {
		for _, name := range []string{"allow", "degrade", "strict"} {
			t.Run(input+"/"+name, func(t *testing.T) {
				in, err := os.ReadFile(filepath.Join("testdata", input))
				if err != nil {
					t.Fatal(err)
				}
				// Each input is read as a request to its own API, as the
				// server reads it from the path.
				ep := map[string]Format{"request_chat.json": FormatOpenAIChat, "request_completion.json": FormatOpenAICompletions,
					"request_responses.json": FormatOpenAIResponses, "request_embeddings.json": FormatOpenAIEmbeddings}[input]
				b, err := ReadRequest(in, ReadOptions{Format: ep})
				if err != nil {
					t.Fatal(err)
				}
				out, changed := b.Rewrite(nil, goldenRequest[name])
				if changed != !bytes.Equal(in, out) {
					t.Errorf("changed = %v but bytes equal = %v", changed, bytes.Equal(in, out))
				}
				if !json.Valid(out) {
					t.Fatalf("output is not valid JSON:\n%s", out)
				}
				checkGolden(t, input+"."+name, out)
			})
		}
	}
}
