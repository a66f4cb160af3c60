package mutate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

// One streamed event per format carrying one token with five
// alternatives, in each server's member order, with values printed as
// encoding/json prints them (shortest form), as in the OpenAI chunk of
// BenchmarkRewriteChunkTop5Allow, its counterpart.

type benchTok struct {
	tok string
	v   float64
}

func benchTop5() (benchTok, []benchTok) {
	rng := rand.New(rand.NewPCG(5, 9))
	alts, v := benchAlts(rng, " understanding", 5)
	out := make([]benchTok, len(alts))
	for i, a := range alts {
		out[i] = benchTok{a.Token, a.Logprob}
	}
	return benchTok{" understanding", v}, out
}

func num(v float64) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func jsonStr(s string) string { return strconv.Quote(s) } // the tokens are ASCII and CJK: Quote is JSON here

func bytesJSON(s string) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, c := range []byte(s) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(int(c)))
	}
	b.WriteByte(']')
	return b.String()
}

func geminiEvent() []byte {
	ch, alts := benchTop5()
	var cs []string
	for i, a := range alts {
		cs = append(cs, fmt.Sprintf(`{"token":%s,"tokenId":%d,"logProbability":%s}`, jsonStr(a.tok), 8000+i, num(a.v)))
	}
	return []byte(fmt.Sprintf(`{"candidates":[{"content":{"parts":[{"text":%s}],"role":"model"},"avgLogprobs":%s,"logprobsResult":{"topCandidates":[{"candidates":[%s]}],"chosenCandidates":[{"token":%s,"tokenId":8000,"logProbability":%s}],"logProbabilitySum":%s}}],"usageMetadata":{"promptTokenCount":12,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash","responseId":"nBitaIeFOIHqz7IP1J3R6Ac"}`,
		jsonStr(ch.tok), num(ch.v), strings.Join(cs, ","), jsonStr(ch.tok), num(ch.v), num(ch.v)))
}

func tgiEvent() []byte {
	ch, alts := benchTop5()
	var ts []string
	for i, a := range alts {
		ts = append(ts, fmt.Sprintf(`{"id":%d,"text":%s,"logprob":%s,"special":false}`, 8000+i, jsonStr(a.tok), num(a.v)))
	}
	return []byte(fmt.Sprintf(`{"index":7,"token":{"id":8000,"text":%s,"logprob":%s,"special":false},"top_tokens":[%s],"generated_text":null,"details":null}`,
		jsonStr(ch.tok), num(ch.v), strings.Join(ts, ",")))
}

func llamaEvent(old bool) []byte {
	ch, alts := benchTop5()
	if old {
		var ps []string
		for _, a := range alts {
			ps = append(ps, fmt.Sprintf(`{"prob":%s,"tok_str":%s}`, num(math.Exp(a.v)), jsonStr(a.tok)))
		}
		return []byte(fmt.Sprintf(`{"content":%s,"stop":false,"id_slot":0,"multimodal":false,"completion_probabilities":[{"content":%s,"probs":[%s]}]}`,
			jsonStr(ch.tok), jsonStr(ch.tok), strings.Join(ps, ",")))
	}
	var ts []string
	for i, a := range alts {
		ts = append(ts, fmt.Sprintf(`{"id":%d,"token":%s,"bytes":%s,"logprob":%s}`, 8000+i, jsonStr(a.tok), bytesJSON(a.tok), num(a.v)))
	}
	return []byte(fmt.Sprintf(`{"index":0,"content":%s,"tokens":[8000],"stop":false,"id_slot":-1,"tokens_predicted":7,"tokens_evaluated":12,"completion_probabilities":[{"id":8000,"token":%s,"bytes":%s,"logprob":%s,"top_logprobs":[%s]}]}`,
		jsonStr(ch.tok), jsonStr(ch.tok), bytesJSON(ch.tok), num(ch.v), strings.Join(ts, ",")))
}

func ollamaLine() []byte {
	ch, alts := benchTop5()
	var ts []string
	for _, a := range alts {
		ts = append(ts, fmt.Sprintf(`{"token":%s,"logprob":%s,"bytes":%s}`, jsonStr(a.tok), num(a.v), bytesJSON(a.tok)))
	}
	return []byte(fmt.Sprintf(`{"model":"gemma3","created_at":"2025-11-12T02:04:00.123456789Z","response":%s,"done":false,"logprobs":[{"token":%s,"logprob":%s,"bytes":%s,"top_logprobs":[%s]}]}`,
		jsonStr(ch.tok), jsonStr(ch.tok), num(ch.v), bytesJSON(ch.tok), strings.Join(ts, ",")))
}

func anthropicDelta() []byte {
	return []byte(`{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":" understanding of the problem, and the"}}`)
}

func benchFormat(b *testing.B, f Format, p OutputPolicy, doc []byte, text TextRewriter) {
	r := NewRewriterFor(f, p, 1)
	if text != nil {
		r.SetTextRewriter(text)
	}
	dst := make([]byte, 0, 2*len(doc))
	if out, err := r.Rewrite(dst, doc); err != nil || (p == allow && f != FormatAnthropic && bytes.Equal(out, doc)) {
		b.Fatalf("benchmark document not rewritten: %v\n%s", err, doc)
	}
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	b.ResetTimer()
	cpu := processCPU()
	for i := 0; i < b.N; i++ {
		var err error
		if dst, err = r.Rewrite(dst[:0], doc); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, cpu)
}

// BenchmarkFormatEventTop5 rewrites one event of each format with five
// alternatives under the allow tier (round to 2 decimals, at most 5
// alternatives) and the degrade tier (noise, 1 decimal, none kept).
func BenchmarkFormatEventTop5(b *testing.B) {
	docs := []struct {
		name string
		f    Format
		doc  []byte
	}{
		{"gemini", FormatGemini, geminiEvent()},
		{"tgi", FormatTGI, tgiEvent()},
		{"llamacpp", FormatLlamaCpp, llamaEvent(false)},
		{"llamacpp-old", FormatLlamaCpp, llamaEvent(true)},
		{"ollama", FormatOllama, ollamaLine()},
		{"openai", FormatOpenAI, chatChunk(5)},
	}
	for _, d := range docs {
		b.Run(d.name+"/allow", func(b *testing.B) { benchFormat(b, d.f, allow, d.doc, nil) })
		b.Run(d.name+"/degrade", func(b *testing.B) { benchFormat(b, d.f, degrade, d.doc, nil) })
	}
	b.Run("anthropic/allow", func(b *testing.B) { benchFormat(b, FormatAnthropic, allow, anthropicDelta(), nil) })
	b.Run("anthropic/text", func(b *testing.B) { benchFormat(b, FormatAnthropic, allow, anthropicDelta(), &keepText{}) })
}

// BenchmarkNDJSONFramer frames 200 Ollama lines delivered in 512-byte
// chunks; per-line costs are ns/op / 200 (BenchmarkSSEFramer is the SSE
// counterpart).
func BenchmarkNDJSONFramer(b *testing.B) {
	var buf bytes.Buffer
	line := ollamaLine()
	for i := 0; i < 200; i++ {
		buf.Write(line)
		buf.WriteByte('\n')
	}
	stream := buf.Bytes()
	for _, c := range []struct {
		name string
		p    OutputPolicy
	}{{"frame-only", Passthrough()}, {"top5-allow", allow}} {
		b.Run(c.name, func(b *testing.B) {
			rw := NewRewriterFor(FormatOllama, c.p, 1)
			dst := make([]byte, 0, len(stream)+4096)
			b.SetBytes(int64(len(stream)))
			b.ReportAllocs()
			b.ResetTimer()
			cpu := processCPU()
			defer reportCPU(b, cpu)
			for i := 0; i < b.N; i++ {
				s := NewNDJSONStream(rw, DefaultMaxHeld)
				dst = dst[:0]
				for off := 0; off < len(stream); off += 512 {
					end := min(off+512, len(stream))
					dst = s.Write(dst, stream[off:end], end == len(stream))
				}
			}
		})
	}
}
