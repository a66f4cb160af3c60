package mutate

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// benchAlt builds n alternatives like OpenAI's, most likely first.
func benchAlts(rng *rand.Rand, first string, n int) ([]genAlt, float64) {
	toks := []string{first, " understanding", " comprehension", " knowledge", " appreciation", " awareness", " 理解", " grasp",
		" insight", " perception", " recognition", " familiarity", " mastery", " command", " expertise", " sense", " view", " idea", " notion", " concept"}
	vals := randLogprobs(rng, n)
	alts := make([]genAlt, n)
	for i := range alts {
		alts[i] = genAlt{toks[i%len(toks)], vals[i], bytesOf(toks[i%len(toks)])}
	}
	if n == 0 {
		return alts, -0.0001
	}
	return alts, vals[0]
}

// chatChunk is an OpenAI chat.completion.chunk carrying one token with n
// alternatives (1 KB with n = 5; values with 17 significant digits as
// Python-based servers print them).
func chatChunk(n int) []byte {
	rng := rand.New(rand.NewPCG(uint64(n), 9))
	alts, v := benchAlts(rng, " understanding", n)
	doc := map[string]any{
		"id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG", "object": "chat.completion.chunk", "created": 1741570283,
		"model": "gpt-4o-2024-08-06", "service_tier": "default", "system_fingerprint": "fp_eb9dce56a8",
		"choices": []any{map[string]any{"index": 0, "delta": map[string]any{"content": "Hello"},
			"logprobs":      map[string]any{"content": []genEntry{{Token: "Hello", Logprob: v, Bytes: bytesOf("Hello"), Top: alts}}, "refusal": nil},
			"finish_reason": nil}},
		"usage": nil,
	}
	b, _ := json.Marshal(doc)
	return b
}

// chatChunkNoLogprobs is a vLLM-style chunk: logprobs present but null.
func chatChunkNoLogprobs() []byte {
	return []byte(`{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion.chunk","created":1741570283,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"delta":{"content":" Hello, how can I help you today?"},"logprobs":null,"finish_reason":null}]}`)
}

func benchRewrite(b *testing.B, p OutputPolicy, doc []byte) {
	r := NewRewriter(p, 1)
	dst := make([]byte, 0, 2*len(doc))
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

// reportCPU adds the process CPU time per operation since cpu (see
// processCPU); 0 allocs/op means no GC work is mixed in.
func reportCPU(b *testing.B, cpu time.Duration) {
	if cpu > 0 {
		b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
	}
}

var degrade = OutputPolicy{RoundDecimals: 1, MaxAlternatives: 0, Perturb: 0.3, EmbeddingDecimals: 3}

func BenchmarkRewriteChunkNoLogprobs(b *testing.B) {
	benchRewrite(b, allow, chatChunkNoLogprobs())
}

func BenchmarkRewriteChunkTop5Allow(b *testing.B) {
	doc := chatChunk(5)
	b.Logf("chunk is %d bytes", len(doc))
	benchRewrite(b, allow, doc)
}

func BenchmarkRewriteChunkTop20Degrade(b *testing.B) {
	benchRewrite(b, degrade, chatChunk(20))
}

func BenchmarkRewriteCompletion(b *testing.B) {
	doc := []byte(`{"id":"cmpl-8f1f","object":"text_completion","created":1741570283,"model":"Qwen/Qwen2.5-1.5B","choices":[{"index":0,"text":" upon","logprobs":{"text_offset":[4],"token_logprobs":[-0.0123456789],"tokens":[" upon"],"top_logprobs":[{" upon":-0.0123456789," a":-4.5678912345," in":-5.123456789," there":-6.987654321," the":-7.1234567}]},"finish_reason":null,"stop_reason":null}],"usage":null}`)
	benchRewrite(b, allow, doc)
}

func embeddingDoc(base64Form bool) []byte {
	rng := rand.New(rand.NewPCG(3072, 1))
	vec := make([]float32, 3072)
	for i := range vec {
		vec[i] = float32(rng.NormFloat64() * 0.02)
	}
	var emb any = vec
	if base64Form {
		raw := make([]byte, 4*len(vec))
		for i, v := range vec {
			binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
		}
		emb = base64.StdEncoding.EncodeToString(raw)
	}
	b, _ := json.Marshal(map[string]any{"object": "list", "model": "text-embedding-3-large",
		"data":  []any{map[string]any{"object": "embedding", "index": 0, "embedding": emb}},
		"usage": map[string]int{"prompt_tokens": 8, "total_tokens": 8}})
	return b
}

func BenchmarkRewriteEmbedding3072(b *testing.B) {
	p := pol(func(p *OutputPolicy) { p.EmbeddingDecimals = 3 })
	b.Run("float", func(b *testing.B) { benchRewrite(b, p, embeddingDoc(false)) })
	b.Run("base64", func(b *testing.B) { benchRewrite(b, p, embeddingDoc(true)) })
}

// chatBody is a non-streamed chat.completion with logprobs of about size bytes.
func chatBody(size int) []byte {
	rng := rand.New(rand.NewPCG(100, 1))
	var entries []genEntry
	var text strings.Builder
	for n := 0; ; n++ {
		alts, v := benchAlts(rng, fmt.Sprintf(" w%d", n), 5)
		entries = append(entries, genEntry{Token: alts[0].Token, Logprob: v, Bytes: alts[0].Bytes, Top: alts})
		text.WriteString(alts[0].Token)
		if n%50 == 0 {
			b, _ := json.Marshal(entries)
			if len(b) > size {
				break
			}
		}
	}
	b, _ := json.Marshal(map[string]any{"id": "chatcmpl-1", "object": "chat.completion", "created": 1741570283, "model": "gpt-4o",
		"choices": []any{map[string]any{"index": 0, "message": map[string]any{"role": "assistant", "content": text.String(), "refusal": nil},
			"logprobs": map[string]any{"content": entries, "refusal": nil}, "finish_reason": "stop"}},
		"usage": map[string]int{"prompt_tokens": 10, "completion_tokens": len(entries), "total_tokens": 10 + len(entries)}})
	return b
}

func BenchmarkRewriteBody100KB(b *testing.B) {
	doc := chatBody(100 << 10)
	b.Logf("body is %d bytes", len(doc))
	benchRewrite(b, allow, doc)
}

// chatStream is a text/event-stream of n chat chunks.
func chatStream(n int, withLogprobs bool) []byte {
	var buf bytes.Buffer
	for i := 0; i < n; i++ {
		buf.WriteString("data: ")
		if withLogprobs {
			buf.Write(chatChunk(5))
		} else {
			buf.Write(chatChunkNoLogprobs())
		}
		buf.WriteString("\n\n")
	}
	buf.WriteString("data: [DONE]\n\n")
	return buf.Bytes()
}

// BenchmarkSSEFramer frames a 200-event stream delivered in 512-byte
// chunks (as Envoy may split it); per-event costs are ns/op / 201.
func BenchmarkSSEFramer(b *testing.B) {
	for _, c := range []struct {
		name string
		p    OutputPolicy
		lp   bool
	}{{"frame-only", Passthrough(), false}, {"nologprobs-allow", allow, false}, {"top5-allow", allow, true}} {
		b.Run(c.name, func(b *testing.B) {
			stream := chatStream(200, c.lp)
			rw := NewRewriter(c.p, 1)
			dst := make([]byte, 0, len(stream)+4096)
			b.SetBytes(int64(len(stream)))
			b.ReportAllocs()
			b.ResetTimer()
			cpu := processCPU()
			defer reportCPU(b, cpu)
			for i := 0; i < b.N; i++ {
				s := SSEStream{rw: rw, maxHeld: DefaultMaxHeld}
				dst = dst[:0]
				for off := 0; off < len(stream); off += 512 {
					end := min(off+512, len(stream))
					dst = s.Write(dst, stream[off:end], end == len(stream))
				}
			}
		})
	}
}

func requestBody() []byte {
	return []byte(`{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant. Answer concisely and accurately."},` +
		`{"role":"user","content":"Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?"},` +
		`{"role":"assistant","content":"Natalia sold 48/2 = 24 clips in May. Natalia sold 48+24 = 72 clips altogether in April and May. The answer is 72."},` +
		`{"role":"user","content":[{"type":"text","text":"Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn? Think step by step."}]}],` +
		`"temperature":0.2,"max_completion_tokens":512,"stream":true,"stream_options":{"include_usage":true},"logprobs":true,"top_logprobs":20,"logit_bias":{"1734":-100,"50256":5},"n":1}`)
}

func BenchmarkParseRequest(b *testing.B) {
	body := requestBody()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	defer reportCPU(b, processCPU())
	for i := 0; i < b.N; i++ {
		if _, err := ParseRequest(body, 8192); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRewriteRequest(b *testing.B) {
	body := requestBody()
	p := RequestPolicy{MaxTopLogprobs: 5, DropLogitBiasWithLogprobs: true}
	dst := make([]byte, 0, len(body))
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	defer reportCPU(b, processCPU())
	for i := 0; i < b.N; i++ {
		var err error
		if dst, _, err = RewriteRequest(dst[:0], body, p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGunzip decodes a 1 MB SSE stream compressed per event with
// sync flushes, fed in 4 KiB chunks.
func BenchmarkGunzip(b *testing.B) {
	stream := chatStream(1000, true)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	for _, ev := range bytes.SplitAfter(stream, []byte("\n\n")) {
		zw.Write(ev)
		zw.Flush()
	}
	zw.Close()
	in := buf.Bytes()
	out := make([]byte, 0, len(stream)+1<<16)
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	b.ResetTimer()
	defer reportCPU(b, processCPU())
	for i := 0; i < b.N; i++ {
		g := NewGunzip(64 << 20)
		out = out[:0]
		for off := 0; off < len(in); off += 4096 {
			var err error
			if out, err = g.Write(out, in[off:min(off+4096, len(in))]); err != nil {
				b.Fatal(err)
			}
		}
		var err error
		if out, err = g.Close(out); err != nil || len(out) != len(stream) {
			b.Fatalf("%v, %d of %d bytes", err, len(out), len(stream))
		}
	}
}
