package mutate

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fuzzPolicy picks an output policy from one fuzzed byte.
func fuzzPolicy(b byte) OutputPolicy {
	p := OutputPolicy{
		StripLogprobs:     b&1 != 0,
		RoundDecimals:     int(b>>1&3) - 1,
		MaxAlternatives:   int(b>>3&3) - 1,
		EmbeddingDecimals: int(b>>5&1)*3 - 1,
	}
	if b&0x40 != 0 {
		p.Perturb = 0.5
	}
	return p
}

func addTestdataSeeds(f *testing.F, add func([]byte)) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.*"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		add(b)
	}
}

func FuzzSSEChunking(f *testing.F) {
	addTestdataSeeds(f, func(b []byte) {
		if bytes.Contains(b, []byte("data:")) {
			f.Add(b, uint64(1), byte(0x07))
		}
	})
	f.Add([]byte("data: "+lpDoc+"\r\n\r\ndata: [DONE]\r\r"), uint64(2), byte(0x4a))
	f.Add([]byte(":x\r\r\n\ndata:{}\ndata:\n\n"), uint64(3), byte(0x02))
	f.Fuzz(func(t *testing.T, in []byte, seed uint64, pb byte) {
		if len(in) > 1<<16 {
			return // keeps the fuzzer fast; size does not change the framing logic
		}
		p := fuzzPolicy(pb)
		whole, st := feed(p, seed, 1<<20, in, nil)
		rng := rand.New(rand.NewPCG(seed, 1))
		for k := 0; k < 3; k++ {
			got, st2 := feed(p, seed, 1<<20, in, randCuts(rng, len(in)))
			if !bytes.Equal(got, whole) {
				t.Fatalf("chunked output differs:\nwhole %q\ngot   %q", whole, got)
			}
			if st2 != st {
				t.Fatalf("stats differ: %+v vs %+v", st2, st)
			}
		}
		if got, _ := feed(p, seed, 1<<20, in, everyByte(len(in))); !bytes.Equal(got, whole) {
			t.Fatalf("1-byte chunks differ")
		}
		if p.IsNoop() && !bytes.Equal(whole, in) {
			t.Fatalf("passthrough changed the stream")
		}
	})
}

func FuzzRewrite(f *testing.F) {
	addTestdataSeeds(f, func(b []byte) {
		for _, line := range bytes.Split(b, []byte("\n")) {
			if d, ok := bytes.CutPrefix(line, []byte("data: ")); ok {
				f.Add(d, byte(0x0e))
			}
		}
		if firstNonSpace(b) == '{' {
			f.Add(b, byte(0x2c))
		}
	})
	f.Add([]byte(lpDoc), byte(0x44))
	f.Add([]byte(`{"choices":[{"logprobs":{"tokens":["a"],"token_logprobs":[-1],"top_logprobs":[{"a":-1,"b":-2}]}}]}`), byte(0x0a))
	f.Add([]byte(`{"data":[{"embedding":"AACAPwAAAEA="}]}`), byte(0x20))
	f.Fuzz(func(t *testing.T, doc []byte, pb byte) {
		p := fuzzPolicy(pb)
		r := NewRewriter(p, 42)
		out, err := r.Rewrite(nil, doc)
		if err != nil {
			if !errors.Is(err, ErrNotJSON) {
				t.Fatalf("error %v does not wrap ErrNotJSON", err)
			}
			if !bytes.Equal(out, doc) {
				t.Fatalf("invalid input changed")
			}
		}
		valid := json.Valid(doc)
		if !valid && !bytes.Equal(out, doc) {
			t.Fatalf("invalid JSON was changed:\n%q\n%q", doc, out)
		}
		if valid && !json.Valid(out) {
			t.Fatalf("valid input, invalid output:\n%s\n%s", doc, out)
		}
		if valid && firstNonSpace(doc) == '{' && err != nil && !errors.Is(err, errDepth) {
			t.Fatalf("valid object rejected: %v", err)
		}
		if err == nil && p.Perturb == 0 {
			// Rounding and capping are idempotent.
			again, err := NewRewriter(p, 42).Rewrite(nil, out)
			if err != nil || !bytes.Equal(again, out) {
				t.Fatalf("not idempotent:\n%s\n%s", out, again)
			}
		}
	})
}

func FuzzParseRequest(f *testing.F) {
	addTestdataSeeds(f, func(b []byte) {
		if bytes.HasPrefix(b, []byte("{")) && bytes.Contains(b, []byte(`"model"`)) {
			f.Add(b, 16)
		}
	})
	f.Add([]byte(`{"messages":[{"role":"user","content":"héllo wörld"}]}`), 3)
	f.Fuzz(func(t *testing.T, body []byte, maxPrompt int) {
		maxPrompt = maxPrompt % 4096
		req, err := ParseRequest(body, maxPrompt)
		if err != nil {
			if !errors.Is(err, ErrNotJSON) {
				t.Fatalf("error %v does not wrap ErrNotJSON", err)
			}
			if json.Valid(body) && firstNonSpace(body) == '{' && !errors.Is(err, errDepth) {
				t.Fatalf("valid object rejected: %v", err)
			}
			return
		}
		if maxPrompt > 0 && (len(req.System) > maxPrompt || len(req.Tools) > maxPrompt || len(req.FirstUser) > maxPrompt) {
			t.Fatalf("conversation texts exceed %d bytes: %d, %d, %d", maxPrompt, len(req.System), len(req.Tools), len(req.FirstUser))
		}
		if req.AfterUser < 0 || req.UserTurns+req.AssistantTurns+req.ToolTurns > req.Messages {
			t.Fatalf("turn counts %+v exceed %d messages", req, req.Messages)
		}
		if maxPrompt > 0 && len(req.Prompt) > maxPrompt {
			t.Fatalf("Prompt %d bytes > %d", len(req.Prompt), maxPrompt)
		}
		if !json.Valid(body) {
			t.Fatalf("invalid body accepted")
		}
	})
}

func FuzzRewriteRequest(f *testing.F) {
	addTestdataSeeds(f, func(b []byte) {
		if bytes.Contains(b, []byte(`"model"`)) && !bytes.Contains(b, []byte("data:")) {
			f.Add(b, byte(0xff))
		}
	})
	f.Add([]byte(`{ "logit_bias" : {"1":1} , "logprobs":true }`), byte(0x0f))
	f.Fuzz(func(t *testing.T, body []byte, pb byte) {
		p := RequestPolicy{
			MaxTopLogprobs:            int(pb&3) - 1,
			MaxN:                      int(pb >> 2 & 3),
			DropLogitBiasWithLogprobs: pb&0x10 != 0,
			DropLogitBias:             pb&0x20 != 0,
			StripLogprobs:             pb&0x40 != 0,
		}
		out, changed, err := RewriteRequest(nil, body, p)
		if err != nil && !bytes.Equal(out, body) {
			t.Fatalf("error but output changed")
		}
		if !changed && !bytes.Equal(out, body) {
			t.Fatalf("changed=false but bytes differ")
		}
		if changed && bytes.Equal(out, body) {
			t.Fatalf("changed=true but bytes equal")
		}
		if json.Valid(body) && !json.Valid(out) {
			t.Fatalf("valid input, invalid output:\n%s\n%s", body, out)
		}
		if err == nil && changed {
			var in, o map[string]json.RawMessage
			if json.Unmarshal(body, &in) == nil && json.Unmarshal(out, &o) == nil {
				for k := range o {
					if _, ok := in[k]; !ok {
						t.Fatalf("key %q appeared", k)
					}
				}
			}
		}
	})
}

func gzipped(parts ...string) []byte {
	var buf bytes.Buffer
	for _, p := range parts {
		zw := gzip.NewWriter(&buf)
		zw.Write([]byte(p))
		zw.Close()
	}
	return buf.Bytes()
}

func FuzzGunzip(f *testing.F) {
	f.Add(gzipped("data: hello\n\n"), uint64(1))
	f.Add(gzipped("a", "b", strings.Repeat("xyz", 1000)), uint64(2))
	f.Add(gzipped("truncated")[:15], uint64(3))
	f.Add([]byte("not gzip at all"), uint64(4))
	f.Fuzz(func(t *testing.T, in []byte, seed uint64) {
		const limit = 1 << 20
		want, wantErr := referenceGunzip(in, limit)
		rng := rand.New(rand.NewPCG(seed, 2))
		cuts := randCuts(rng, len(in))
		g := NewGunzip(limit)
		var got []byte
		var err error
		prev := 0
		for _, c := range cuts {
			if got, err = g.Write(got, in[prev:c]); err != nil {
				break
			}
			prev = c
		}
		if err == nil {
			if got, err = g.Write(got, in[prev:]); err == nil {
				got, err = g.Close(got)
			}
		}
		if _, err2 := g.Close(nil); (err2 == nil) != (err == nil) {
			t.Fatalf("second Close gives %v after %v", err2, err)
		}
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("err %v, reference %v", err, wantErr)
		}
		if err == nil && !bytes.Equal(got, want) {
			t.Fatalf("output differs from compress/gzip")
		}
		if err != nil && !bytes.HasPrefix(want, got) && !bytes.HasPrefix(got, want) {
			t.Fatalf("partial outputs disagree")
		}
	})
}

// referenceGunzip decodes all of in at once with compress/gzip.
func referenceGunzip(in []byte, limit int64) ([]byte, error) {
	if len(in) == 0 {
		return nil, nil
	}
	zr, err := gzip.NewReader(bytes.NewReader(in))
	if err != nil {
		return nil, err
	}
	out, err := io.ReadAll(io.LimitReader(zr, limit+1))
	if err == nil && int64(len(out)) > limit {
		err = ErrTooLarge
	}
	return out, err
}

// FuzzSSEOversize: events longer than the hold bound, in any chunking.
// Released raw (PassOversize) with a policy that changes nothing, every
// byte comes out once and in order; dropped, the framer never holds more
// than the bound plus one chunk, and the comment replaces each event it
// gives up.
func FuzzSSEOversize(f *testing.F) {
	f.Add([]byte("data: "+lpDoc+"\n\ndata: "+strings.Repeat("x", 300)+"\n\ndata: [DONE]\n\n"), uint64(1), byte(40))
	f.Add([]byte("data: "+strings.Repeat("y", 100)+"\r\r\r\ndata: {}\r\n\r\n"), uint64(2), byte(16))
	f.Add([]byte(": c\n"+strings.Repeat("data: z\n", 30)+"\n"), uint64(3), byte(8))
	f.Fuzz(func(t *testing.T, in []byte, seed uint64, held byte) {
		if len(in) > 1<<14 {
			return
		}
		maxHeld := int(held) + 1
		rng := rand.New(rand.NewPCG(seed, 3))
		for _, pass := range []bool{true, false} {
			for k := 0; k < 3; k++ {
				s := NewSSEStream(NewRewriter(Passthrough(), seed), maxHeld)
				if pass {
					s.PassOversize()
				}
				var out []byte
				prev, biggest := 0, 0
				cuts := randCuts(rng, len(in))
				if k == 0 {
					cuts = everyByte(len(in))
				}
				for _, c := range cuts {
					c = max(c, prev)
					out = s.Write(out, in[prev:c], false)
					biggest = max(biggest, c-prev)
					prev = c
					if s.Held() > maxHeld+biggest {
						t.Fatalf("held %d, bound %d + chunk %d", s.Held(), maxHeld, biggest)
					}
				}
				out = s.Write(out, in[prev:], true)
				st := s.Stats()
				if pass && !bytes.Equal(out, in) {
					t.Fatalf("pass-through of oversized events changed the stream:\nin  %q\nout %q", in, out)
				}
				if !pass && int64(bytes.Count(out, []byte(oversizeComment))) < st.Oversize {
					t.Fatalf("%d events dropped, %d comments", st.Oversize, bytes.Count(out, []byte(oversizeComment)))
				}
			}
		}
	})
}
