package mutate

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// Random streams of each non-OpenAI format, for the property that the
// output is the same under every chunking and that each document is the
// one a Rewriter gives when handed the documents one by one.

type tokenLP struct {
	tok string
	v   float64
}

// randPosition returns a sampled token and n alternatives, most likely
// first; the sampled token is usually (not always) the first of them.
func randPosition(rng *rand.Rand, n int) (tokenLP, []tokenLP) {
	vs := randLogprobs(rng, n+1)
	chosen := tokenLP{randToken(rng), vs[0]}
	alts := make([]tokenLP, n)
	for j := range alts {
		alts[j] = tokenLP{randToken(rng), vs[j+1]}
	}
	if n > 0 && rng.IntN(4) != 0 {
		alts[0] = chosen
	}
	return chosen, alts
}

func geminiDoc(rng *rand.Rand, nAlts int) any {
	var cands []any
	for c := rng.IntN(2); c >= 0; c-- {
		idx := rng.IntN(2)
		var chosen, tops []any
		sum := 0.0
		for i := rng.IntN(4); i > 0; i-- {
			ch, alts := randPosition(rng, nAlts)
			chosen = append(chosen, map[string]any{"token": ch.tok, "tokenId": rng.IntN(1000), "logProbability": ch.v})
			var cs []any
			for _, a := range alts {
				cs = append(cs, map[string]any{"token": a.tok, "tokenId": rng.IntN(1000), "logProbability": a.v})
			}
			tops = append(tops, map[string]any{"candidates": cs})
			sum += ch.v
		}
		cand := map[string]any{"content": map[string]any{"parts": []any{map[string]any{"text": randToken(rng)}}, "role": "model"}}
		if idx > 0 {
			cand["index"] = idx
		}
		if chosen != nil {
			cand["logprobsResult"] = map[string]any{"topCandidates": tops, "chosenCandidates": chosen, "logProbabilitySum": sum}
			cand["avgLogprobs"] = sum / float64(len(chosen))
		}
		cands = append(cands, cand)
	}
	return map[string]any{"candidates": cands, "modelVersion": "gemini-2.0-flash", "responseId": "x"}
}

func tgiToken(rng *rand.Rand, t tokenLP) map[string]any {
	return map[string]any{"id": rng.IntN(32000), "text": t.tok, "logprob": t.v, "special": false}
}

func tgiDoc(rng *rand.Rand, nAlts int, n int) any {
	if rng.IntN(4) > 0 { // a stream event
		ch, alts := randPosition(rng, nAlts)
		var top []any
		for _, a := range alts {
			top = append(top, tgiToken(rng, a))
		}
		ev := map[string]any{"index": n + 1, "token": tgiToken(rng, ch), "generated_text": nil, "details": nil}
		if nAlts > 0 {
			ev["top_tokens"] = top
		}
		if rng.IntN(5) == 0 {
			ev["generated_text"] = "done"
			ev["details"] = map[string]any{"finish_reason": "length", "generated_tokens": n + 1, "input_length": 3, "seed": nil}
		}
		return ev
	}
	seq := func() map[string]any {
		var tokens, tops, prefill []any
		for i := rng.IntN(3); i > 0; i-- {
			ch, alts := randPosition(rng, nAlts)
			tokens = append(tokens, tgiToken(rng, ch))
			var top []any
			for _, a := range alts {
				top = append(top, tgiToken(rng, a))
			}
			tops = append(tops, top)
		}
		prefill = append(prefill, map[string]any{"id": 1, "text": "<s>", "logprob": nil})
		for i := rng.IntN(3); i > 0; i-- {
			prefill = append(prefill, map[string]any{"id": rng.IntN(100), "text": randToken(rng), "logprob": randLogprobs(rng, 1)[0]})
		}
		return map[string]any{"finish_reason": "length", "generated_tokens": len(tokens), "prefill": prefill, "tokens": tokens, "top_tokens": tops}
	}
	d := seq()
	if rng.IntN(2) == 0 {
		d["best_of_sequences"] = []any{seq()}
	}
	return map[string]any{"generated_text": "x", "details": d}
}

// llamaDoc returns a /completion stream result in layout 0 (old probs), 1
// (logprob) or 2 (post-sampling prob).
func llamaDoc(rng *rand.Rand, nAlts, layout int) any {
	var entries []any
	for i := rng.IntN(3); i > 0; i-- {
		ch, alts := randPosition(rng, nAlts)
		switch layout {
		case 0:
			var probs []any
			for _, a := range alts {
				probs = append(probs, map[string]any{"tok_str": a.tok, "prob": math.Exp(a.v)})
			}
			entries = append(entries, map[string]any{"content": ch.tok, "probs": probs})
		case 1:
			var top []any
			for _, a := range alts {
				top = append(top, map[string]any{"id": rng.IntN(1000), "token": a.tok, "bytes": bytesOf(a.tok), "logprob": a.v})
			}
			entries = append(entries, map[string]any{"id": rng.IntN(1000), "token": ch.tok, "bytes": bytesOf(ch.tok), "logprob": ch.v, "top_logprobs": top})
		default:
			var top []any
			for _, a := range alts {
				top = append(top, map[string]any{"id": rng.IntN(1000), "token": a.tok, "bytes": bytesOf(a.tok), "prob": math.Exp(a.v)})
			}
			entries = append(entries, map[string]any{"id": rng.IntN(1000), "token": ch.tok, "bytes": bytesOf(ch.tok), "prob": math.Exp(ch.v), "top_probs": top})
		}
	}
	return map[string]any{"index": rng.IntN(2), "content": randToken(rng), "stop": false, "completion_probabilities": entries}
}

func ollamaDoc(rng *rand.Rand, nAlts int) any {
	var entries []genEntry
	for i := rng.IntN(3); i > 0; i-- {
		ch, alts := randPosition(rng, nAlts)
		e := genEntry{Token: ch.tok, Logprob: ch.v, Bytes: bytesOf(ch.tok), Top: []genAlt{}}
		for _, a := range alts {
			e.Top = append(e.Top, genAlt{a.tok, a.v, bytesOf(a.tok)})
		}
		entries = append(entries, e)
	}
	d := map[string]any{"model": "gemma3", "created_at": "2025-11-12T02:04:00Z", "response": randToken(rng), "done": false}
	if entries != nil {
		d["logprobs"] = entries
	}
	return d
}

// genFormatStream returns a random stream of format f and its number of
// documents.
func genFormatStream(rng *rand.Rand, f Format) ([]byte, int) {
	var out bytes.Buffer
	eol := []string{"\n", "\r\n", "\r"}[rng.IntN(3)]
	nAlts := rng.IntN(21)
	layout := rng.IntN(3)
	n := 0
	for ev := rng.IntN(10); ev >= 0; ev-- {
		var doc any
		switch f {
		case FormatGemini:
			doc = geminiDoc(rng, nAlts)
		case FormatTGI:
			doc = tgiDoc(rng, nAlts, n)
		case FormatLlamaCpp:
			doc = llamaDoc(rng, nAlts, layout)
		case FormatOllama:
			doc = ollamaDoc(rng, nAlts)
		}
		b, err := json.Marshal(doc)
		if err != nil {
			panic(err)
		}
		n++
		if f.Framing() == FramingNDJSON {
			out.Write(b)
			if ev > 0 || rng.IntN(2) == 0 {
				out.WriteString("\n")
			}
			continue
		}
		if rng.IntN(4) == 0 {
			out.WriteString(": keepalive" + eol)
		}
		out.WriteString("data: ")
		out.Write(b)
		out.WriteString(eol + eol)
	}
	return out.Bytes(), n
}

func randFormatPolicy(rng *rand.Rand) OutputPolicy {
	p := OutputPolicy{
		StripLogprobs:     rng.IntN(8) == 0,
		RoundDecimals:     rng.IntN(6) - 1,
		MaxAlternatives:   rng.IntN(23) - 1,
		EmbeddingDecimals: -1,
	}
	if rng.IntN(2) == 0 {
		p.Perturb = []float64{0.05, 0.3, 2}[rng.IntN(3)]
	}
	return p
}

func TestPropertyFormatStreams(t *testing.T) {
	iters := 150
	if testing.Short() {
		iters = 30
	}
	for _, f := range []Format{FormatGemini, FormatTGI, FormatLlamaCpp, FormatOllama} {
		t.Run(f.String(), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(2025, uint64(f)))
			for it := 0; it < iters; it++ {
				in, nDocs := genFormatStream(rng, f)
				p := randFormatPolicy(rng)
				seed := rng.Uint64()
				whole, st := feedFormat(f, p, seed, in, nil)
				if st.Invalid != 0 || st.FailedOpen || st.MultiLineSkipped != 0 {
					t.Fatalf("iter %d: stats %+v", it, st)
				}
				for k := 0; k < 4; k++ {
					got, st2 := feedFormat(f, p, seed, in, randCuts(rng, len(in)))
					if !bytes.Equal(got, whole) {
						t.Fatalf("iter %d: chunked output differs\nwhole %q\ngot   %q", it, whole, got)
					}
					if st2 != st {
						t.Fatalf("iter %d: stats differ with chunking: %+v vs %+v", it, st2, st)
					}
				}
				ins, outs := streamDocs(f, in), streamDocs(f, whole)
				if len(ins) != nDocs || len(outs) != nDocs {
					t.Fatalf("iter %d: %d documents sent, %d in, %d out", it, nDocs, len(ins), len(outs))
				}
				// The stream rewrites each document as one Rewriter handed
				// them in order does.
				rw := NewRewriterFor(f, p, seed)
				for i := range ins {
					want, err := rw.Rewrite(nil, ins[i])
					if err != nil {
						t.Fatalf("iter %d doc %d: %v", it, i, err)
					}
					if !bytes.Equal(want, outs[i]) {
						t.Fatalf("iter %d doc %d: streamed %s, alone %s", it, i, outs[i], want)
					}
					checkFormatDoc(t, f, p, ins[i], outs[i])
				}
			}
		})
	}
}

// TestFormatNoiseKeys checks that noise depends on the position only:
// the same token position gets the same value in one body and in a stream,
// and different seeds give different values.
func TestFormatNoiseKeys(t *testing.T) {
	p := OutputPolicy{RoundDecimals: -1, MaxAlternatives: -1, Perturb: 0.5, EmbeddingDecimals: -1}
	one := `{"logprobs":[{"token":"a","logprob":-1.5,"top_logprobs":[]},{"token":"b","logprob":-2.5,"top_logprobs":[]}]}`
	a := `{"logprobs":[{"token":"a","logprob":-1.5,"top_logprobs":[]}]}`
	b := `{"logprobs":[{"token":"b","logprob":-2.5,"top_logprobs":[]}]}`
	whole, _ := NewRewriterFor(FormatOllama, p, 9).Rewrite(nil, []byte(one))
	rw := NewRewriterFor(FormatOllama, p, 9)
	x, _ := rw.Rewrite(nil, []byte(a))
	y, _ := rw.Rewrite(nil, []byte(b))
	var vw, vx, vy struct {
		Logprobs []struct{ Logprob float64 }
	}
	for _, d := range []struct {
		b []byte
		v any
	}{{whole, &vw}, {x, &vx}, {y, &vy}} {
		if err := json.Unmarshal(d.b, d.v); err != nil {
			t.Fatal(err)
		}
	}
	if vw.Logprobs[0] != vx.Logprobs[0] || vw.Logprobs[1] != vy.Logprobs[0] {
		t.Fatalf("positions drew different noise in one body and in two documents: %s / %s %s", whole, x, y)
	}
	other, _ := NewRewriterFor(FormatOllama, p, 10).Rewrite(nil, []byte(one))
	if bytes.Equal(other, whole) {
		t.Fatalf("two seeds gave the same noise")
	}
	if vw.Logprobs[0].Logprob == -1.5 {
		t.Fatalf("no noise added: %s", whole)
	}
}

// TestFormatStreamEvents checks that the framers count every event (SSE)
// or line (NDJSON) of the fixtures' streams.
func TestFormatStreamEvents(t *testing.T) {
	for _, fx := range formatFixtures() {
		if !fx.stream {
			continue
		}
		in := readFixture(t, fx.name)
		_, st := feedFormat(fx.f, allow, 1, in, nil)
		want := len(streamDocs(fx.f, in))
		if fx.f.Framing() == FramingSSE {
			want = strings.Count(strings.ReplaceAll(string(in), "\r\n", "\n"), "\n\n")
		}
		if int(st.Events) != want {
			t.Errorf("%s: %d events framed, want %d", fx.name, st.Events, want)
		}
	}
}
