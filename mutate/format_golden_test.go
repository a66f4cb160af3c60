package mutate

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/distillguard/distillguard/internal/golden"
)

// formatFixture is one file of testdata/formats (README.md there names the
// documentation each one follows).
type formatFixture struct {
	name   string
	f      Format
	stream bool // a streamed body (framed by NewStream), else one document
}

func formatFixtures() []formatFixture {
	return []formatFixture{
		{"gemini_generate_body.json", FormatGemini, false},
		{"gemini_stream.sse", FormatGemini, true},
		{"gemini_stream_array.json", FormatGemini, false},
		{"tgi_generate_body.json", FormatTGI, false},
		{"tgi_compat_body.json", FormatTGI, false},
		{"tgi_generate_stream.sse", FormatTGI, true},
		{"llamacpp_completion_body.json", FormatLlamaCpp, false},
		{"llamacpp_completion_post_sampling.json", FormatLlamaCpp, false},
		{"llamacpp_completion_old.json", FormatLlamaCpp, false},
		{"llamacpp_completion_stream.sse", FormatLlamaCpp, true},
		{"ollama_generate_stream.ndjson", FormatOllama, true},
		{"ollama_chat_body.json", FormatOllama, false},
		{"anthropic_messages_stream.sse", FormatAnthropic, true},
		{"anthropic_message_body.json", FormatAnthropic, false},
		{"vllm_completion_echo.json", FormatOpenAICompletions, false},
		{"vllm_chat_prompt_logprobs.json", FormatOpenAIChat, false},
	}
}

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "formats", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// feedFormat runs body through a fresh stream of format f split at cuts.
func feedFormat(f Format, p OutputPolicy, seed uint64, body []byte, cuts []int) ([]byte, StreamStats) {
	s := NewStream(NewRewriterFor(f, p, seed), 1<<20)
	var out []byte
	prev := 0
	for _, c := range cuts {
		c = max(c, prev)
		out = s.Write(out, body[prev:c], false)
		prev = c
	}
	out = s.Write(out, body[prev:], true)
	return out, s.Stats()
}

// streamDocs returns the documents of a stream of format f: SSE data
// payloads, or NDJSON lines.
func streamDocs(f Format, b []byte) [][]byte {
	var docs [][]byte
	norm := strings.ReplaceAll(strings.ReplaceAll(string(b), "\r\n", "\n"), "\r", "\n")
	for _, l := range strings.Split(norm, "\n") {
		if f.Framing() == FramingNDJSON {
			if strings.TrimSpace(l) != "" {
				docs = append(docs, []byte(l))
			}
			continue
		}
		if d, ok := strings.CutPrefix(l, "data:"); ok {
			docs = append(docs, []byte(strings.TrimPrefix(d, " ")))
		}
	}
	return docs
}

func TestGoldenFormats(t *testing.T) {
	for _, fx := range formatFixtures() {
		for _, pname := range []string{"allow", "degrade", "strip", "perturb"} {
			t.Run(fx.name+"/"+pname, func(t *testing.T) {
				in := readFixture(t, fx.name)
				p := goldenOutput[pname]
				var out []byte
				if fx.stream {
					var st StreamStats
					out, st = feedFormat(fx.f, p, goldenSeed, in, nil)
					if st.Invalid != 0 || st.FailedOpen || st.MultiLineSkipped != 0 {
						t.Errorf("stats %+v", st)
					}
					if got, _ := feedFormat(fx.f, p, goldenSeed, in, everyByte(len(in))); !bytes.Equal(got, out) {
						t.Errorf("1-byte chunks differ from one chunk")
					}
					rng := rand.New(rand.NewPCG(5, 6))
					for k := 0; k < 10; k++ {
						if got, _ := feedFormat(fx.f, p, goldenSeed, in, randCuts(rng, len(in))); !bytes.Equal(got, out) {
							t.Fatalf("random chunking %d differs", k)
						}
					}
					ins, outs := streamDocs(fx.f, in), streamDocs(fx.f, out)
					if len(ins) != len(outs) {
						t.Fatalf("%d documents in, %d out", len(ins), len(outs))
					}
					for i := range outs {
						if !json.Valid(outs[i]) {
							t.Fatalf("document %d is not JSON: %s", i, outs[i])
						}
						checkFormatDoc(t, fx.f, p, ins[i], outs[i])
					}
				} else {
					var err error
					out, err = NewRewriterFor(fx.f, p, goldenSeed).Rewrite(nil, in)
					if err != nil {
						t.Fatal(err)
					}
					if !json.Valid(out) {
						t.Fatalf("output is not JSON:\n%s", out)
					}
					checkFormatDoc(t, fx.f, p, in, out)
				}
				if fx.f == FormatAnthropic {
					// No distributions: every policy leaves the bytes alone.
					if !bytes.Equal(out, in) {
						t.Fatalf("anthropic body changed without a text rewriter")
					}
					return
				}
				if bytes.Equal(out, in) {
					t.Fatalf("policy %s changed nothing", pname)
				}
				golden.Check(t, filepath.Join("testdata", "golden", "formats", fx.name+"."+pname+".golden"), out, *update)
			})
		}
	}
}
