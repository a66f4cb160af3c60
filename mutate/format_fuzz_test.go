package mutate

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"testing"
)

// fuzzFormat is the fuzz body every format shares: the input as one
// document and as a stream of that format.
func fuzzFormat(f *testing.F, format Format, extra ...string) {
	for _, fx := range formatFixtures() {
		if fx.f == format {
			f.Add(readFixture(f, fx.name), uint64(1), byte(0x0e))
			f.Add(readFixture(f, fx.name), uint64(2), byte(0x45))
		}
	}
	for i, s := range extra {
		f.Add([]byte(s), uint64(i), byte(i*37))
	}
	f.Fuzz(func(t *testing.T, in []byte, seed uint64, pb byte) {
		if len(in) > 1<<16 {
			return // keeps the fuzzer fast; size does not change the logic
		}
		p := fuzzPolicy(pb)
		withText := format == FormatAnthropic && pb&0x80 != 0
		newRW := func(seed uint64) *Rewriter {
			r := NewRewriterFor(format, p, seed)
			if withText {
				r.SetTextRewriter(&markText{})
			}
			return r
		}

		// One document.
		out, err := newRW(42).Rewrite(nil, in)
		valid := json.Valid(in)
		c := firstNonSpace(in)
		if err != nil {
			if !errors.Is(err, ErrNotJSON) {
				t.Fatalf("error %v does not wrap ErrNotJSON", err)
			}
			if !bytes.Equal(out, in) {
				t.Fatalf("rejected input changed")
			}
			if valid && (c == '{' || c == '[' && format.acceptsArray()) && !errors.Is(err, errDepth) {
				t.Fatalf("valid document rejected: %v", err)
			}
		}
		if !valid && !bytes.Equal(out, in) {
			t.Fatalf("invalid JSON was changed:\n%q\n%q", in, out)
		}
		if valid && !json.Valid(out) {
			t.Fatalf("valid input, invalid output:\n%s\n%s", in, out)
		}
		if p.IsNoop() && !withText && !bytes.Equal(out, in) {
			t.Fatalf("passthrough changed the document")
		}
		if err == nil && p.Perturb == 0 && !withText {
			again, err := newRW(42).Rewrite(nil, out)
			if err != nil || !bytes.Equal(again, out) {
				t.Fatalf("not idempotent:\n%s\n%s", out, again)
			}
		}

		// A stream: the same bytes under every chunking.
		feedRW := func(cuts []int) ([]byte, StreamStats) {
			s := NewStream(newRW(seed), 1<<20)
			var o []byte
			prev := 0
			for _, c := range cuts {
				c = max(c, prev)
				o = s.Write(o, in[prev:c], false)
				prev = c
			}
			return s.Write(o, in[prev:], true), s.Stats()
		}
		whole, st := feedRW(nil)
		rng := rand.New(rand.NewPCG(seed, 3))
		for k := 0; k < 3; k++ {
			got, st2 := feedRW(randCuts(rng, len(in)))
			if !bytes.Equal(got, whole) {
				t.Fatalf("chunked output differs:\nwhole %q\ngot   %q", whole, got)
			}
			if st2 != st {
				t.Fatalf("stats differ: %+v vs %+v", st2, st)
			}
		}
		if got, _ := feedRW(everyByte(len(in))); !bytes.Equal(got, whole) {
			t.Fatalf("1-byte chunks differ")
		}
		if p.IsNoop() && !withText && !bytes.Equal(whole, in) {
			t.Fatalf("passthrough changed the stream")
		}
		if format.Framing() == FramingNDJSON && bytes.IndexByte(in, '\r') < 0 {
			if want := ndjsonReference(newRW(seed), in); !bytes.Equal(whole, want) {
				t.Fatalf("NDJSON stream differs from rewriting line by line:\nstream %q\nlines  %q", whole, want)
			}
		}
	})
}

// ndjsonReference rewrites in line by line (LF-terminated, no CR), as the
// SSE framer reads one data line: one leading space is not part of the
// payload, and an empty payload or [DONE] is passed as it is.
func ndjsonReference(rw *Rewriter, in []byte) []byte {
	var out []byte
	for len(in) > 0 {
		line, rest, found := bytes.Cut(in, []byte{'\n'})
		payload := bytes.TrimPrefix(line, []byte{' '})
		if len(payload) == 0 || string(payload) == "[DONE]" {
			out = append(out, line...)
		} else {
			out = append(out, line[:len(line)-len(payload)]...)
			out, _ = rw.Rewrite(out, payload)
		}
		if found {
			out = append(out, '\n')
		}
		in = rest
	}
	return out
}

func FuzzFormatGemini(f *testing.F) {
	fuzzFormat(f, FormatGemini,
		"data: "+`{"candidates":[{"index":1,"avgLogprobs":-0.5,"logprobsResult":{"topCandidates":[{"candidates":[{"token":"a","logProbability":-0.1},{"token":"b","logProbability":-2}]}],"chosenCandidates":[{"token":"b","logProbability":-2}],"logProbabilitySum":-2}}]}`+"\r\n\r\n",
		`[{"candidates":[{"avgLogprobs":-0.25}]},{"candidates":[]}]`)
}

func FuzzFormatTGI(f *testing.F) {
	fuzzFormat(f, FormatTGI,
		`data:{"index":1,"token":{"id":1,"text":"a","logprob":-0.25,"special":false},"top_tokens":[{"id":1,"text":"a","logprob":-0.25},{"id":2,"text":"b","logprob":-3}]}`+"\n\n",
		`{"details":{"prefill":[{"text":"<s>","logprob":null}],"tokens":[{"text":"a","logprob":-1}],"top_tokens":[[{"text":"a","logprob":-1}]],"best_of_sequences":[{"tokens":[]}]}}`)
}

func FuzzFormatLlamaCpp(f *testing.F) {
	fuzzFormat(f, FormatLlamaCpp,
		`data: {"index":0,"completion_probabilities":[{"content":"a","probs":[{"tok_str":"a","prob":0.9},{"tok_str":"b","prob":0.05}]}]}`+"\n\n",
		`[{"completion_probabilities":[{"token":"a","prob":0.5,"top_probs":[{"token":"a","prob":0.5}]}]},{"index":1}]`)
}

func FuzzFormatOllama(f *testing.F) {
	fuzzFormat(f, FormatOllama,
		`{"response":"a","logprobs":[{"token":"a","logprob":-0.1,"top_logprobs":[{"token":"a","logprob":-0.1},{"token":"b","logprob":-1}]}]}`+"\n"+`{"done":true}`,
		"\n \n[DONE]\n{\"logprobs\":null}\r\n")
}

func FuzzFormatAnthropic(f *testing.F) {
	fuzzFormat(f, FormatAnthropic,
		"event: content_block_delta\ndata: {\"delta\":{\"text\":\"a\\\"b\",\"type\":\"text_delta\"},\"index\":2,\"type\":\"content_block_delta\"}\n\n",
		`{"content":[{"type":"text","text":"x"},{"type":"thinking","thinking":"y"}]}`)
}
