package mutate

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
)

// feed runs body through a fresh SSEStream split at the given cut points
// (offsets into body, any order, duplicates allowed: they make 0-byte
// chunks).
func feed(p OutputPolicy, seed uint64, maxHeld int, body []byte, cuts []int) ([]byte, StreamStats) {
	s := NewSSEStream(NewRewriter(p, seed), maxHeld)
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

func everyByte(n int) []int {
	cuts := make([]int, 0, 2*n)
	for i := 0; i <= n; i++ {
		cuts = append(cuts, i, i) // the duplicate gives a 0-byte chunk
	}
	return cuts
}

const lpDoc = `{"choices":[{"index":0,"logprobs":{"content":[{"token":"a","logprob":-0.123456,"top_logprobs":[{"token":"a","logprob":-0.123456},{"token":"b","logprob":-1.987654}]}]}}]}`
const lpDocR = `{"choices":[{"index":0,"logprobs":{"content":[{"token":"a","logprob":-0.12,"top_logprobs":[{"token":"a","logprob":-0.12},{"token":"b","logprob":-1.99}]}]}}]}`

func TestSSEFraming(t *testing.T) {
	multi := "data: {\"choices\":[{\"logprobs\":{\"content\":[\ndata: {\"token\":\"a\",\"logprob\":-0.123456}\ndata: ]}}]}\n\n"
	multiR := "data: {\"choices\":[{\"logprobs\":{\"content\":[\ndata: {\"token\":\"a\",\"logprob\":-0.12}\ndata: ]}}]}\n\n"
	multiCut := "data: {\"choices\":[{\"logprobs\":{\"content\":[{\"token\":\"a\",\"logprob\":-1,\"top_logprobs\":[{\"logprob\":-1},\ndata: {\"logprob\":-2}]}]}}]}\n\n"
	multiCutR := "data: {\"choices\":[{\"logprobs\":{\"content\":[{\"token\":\"a\",\"logprob\":-1,\"top_logprobs\":[{\"logprob\":-1}\ndata: ]}]}}]}\n\n"
	tests := []struct {
		name     string
		p        OutputPolicy
		in, want string
		events   int64
		rewrites int64
		invalid  int64
	}{
		{name: "LF", p: round2, in: "data: " + lpDoc + "\n\n", want: "data: " + lpDocR + "\n\n", events: 1, rewrites: 1},
		{name: "CRLF", p: round2, in: "data: " + lpDoc + "\r\n\r\n", want: "data: " + lpDocR + "\r\n\r\n", events: 1, rewrites: 1},
		{name: "CR", p: round2, in: "data: " + lpDoc + "\r\r", want: "data: " + lpDocR + "\r\r", events: 1, rewrites: 1},
		{name: "mixed endings", p: round2, in: "id: 1\r\ndata:" + lpDoc + "\r\n\ndata: " + lpDoc + "\n\r", want: "id: 1\r\ndata:" + lpDocR + "\r\n\ndata: " + lpDocR + "\n\r", events: 2, rewrites: 2},
		{name: "no space after colon, other fields kept", p: round2,
			in:   ": comment\nevent: delta\nid: 7\nretry: 100\ndata:" + lpDoc + "\n: trailing\n\n",
			want: ": comment\nevent: delta\nid: 7\nretry: 100\ndata:" + lpDocR + "\n: trailing\n\n", events: 1, rewrites: 1},
		{name: "two spaces: second one is payload", p: round2, in: "data:  " + lpDoc + "\n\n", want: "data:  " + lpDocR + "\n\n", events: 1, rewrites: 1},
		{name: "done", p: round2, in: "data: [DONE]\n\n", want: "data: [DONE]\n\n", events: 1},
		{name: "comment only and blank events", p: round2, in: ":ping\n\n\n\n", want: ":ping\n\n\n\n", events: 3},
		// Not JSON: passed, unless it carries logprobs (then dropped: a
		// lenient client might read what was never rewritten).
		{name: "not JSON", p: round2, in: "data: hello\n\ndata: {\"logprobs\":\n\n", want: "data: hello\n\n" + unreadableComment, events: 2, invalid: 2},
		{name: "NaN logprob", p: round2, in: "data: {\"logprobs\":{\"content\":[{\"logprob\":NaN}]}}\n\ndata: [DONE]\n\n", want: unreadableComment + "data: [DONE]\n\n", events: 2, invalid: 1},
		{name: "multi-line data", p: round2, in: multi, want: multiR, events: 1, rewrites: 1},
		{name: "multi-line data, cut spanning a line break", p: pol(func(p *OutputPolicy) { p.MaxAlternatives = 1 }),
			in: multiCut, want: multiCutR, events: 1, rewrites: 1},
		{name: "multi-line data, strip spanning line breaks", p: strip,
			in: multi, want: "data: {\"choices\":[{\"logprobs\":null\ndata: \ndata: }]}\n\n", events: 1, rewrites: 1},
		{name: "final event without blank line", p: round2, in: "data: " + lpDoc, want: "data: " + lpDocR, events: 1, rewrites: 1},
		{name: "final event without blank line, with LF", p: round2, in: "data: " + lpDoc + "\n", want: "data: " + lpDocR + "\n", events: 1, rewrites: 1},
		{name: "final event incomplete", p: round2, in: "data: " + lpDoc[:40], want: unreadableComment, events: 1, invalid: 1},
		{name: "final CR", p: round2, in: "data: " + lpDoc + "\r", want: "data: " + lpDocR + "\r", events: 1, rewrites: 1},
		{name: "BOM", p: round2, in: "\xef\xbb\xbfdata: " + lpDoc + "\n\ndata: " + lpDoc + "\n\n", want: "\xef\xbb\xbfdata: " + lpDocR + "\n\ndata: " + lpDocR + "\n\n", events: 2, rewrites: 2},
		{name: "field named data2 ignored", p: round2, in: "data2: " + lpDoc + "\n\n", want: "data2: " + lpDoc + "\n\n", events: 1},
		{name: "empty", p: round2, in: "", want: "", events: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			splits := map[string][]int{"whole": nil, "bytes": everyByte(len(in))}
			rng := rand.New(rand.NewPCG(1, 2))
			for k := 0; k < 20; k++ {
				var cuts []int
				for c := 0; c < len(in); c += rng.IntN(7) {
					cuts = append(cuts, c)
				}
				splits["random"+itoa(k)] = cuts
			}
			for name, cuts := range splits {
				out, st := feed(tt.p, 1, 1<<20, in, cuts)
				if string(out) != tt.want {
					t.Fatalf("%s: got\n%q\nwant\n%q", name, out, tt.want)
				}
				if st.Events != tt.events || st.Rewritten != tt.rewrites || st.Invalid != tt.invalid || st.MultiLineSkipped != 0 || st.Oversize != 0 {
					t.Fatalf("%s: stats %+v", name, st)
				}
			}
		})
	}
}

// A CR at the end of a chunk may be half of a CRLF: the event must not be
// dispatched (and the LF must not start an empty event) until the next
// byte is known.
func TestSSEChunkEndingInCR(t *testing.T) {
	s := NewSSEStream(NewRewriter(round2, 1), 1<<20)
	out := s.Write(nil, []byte("data: "+lpDoc+"\r\n\r"), false)
	if len(out) != 0 {
		t.Fatalf("dispatched before the byte after CR was known: %q", out)
	}
	if s.Held() == 0 {
		t.Fatalf("nothing held")
	}
	out = s.Write(out, []byte("\ndata: [DONE]\r\n\r\n"), false)
	want := "data: " + lpDocR + "\r\n\r\ndata: [DONE]\r\n\r\n"
	if string(out) != want {
		t.Fatalf("got %q", out)
	}
	if s.Held() != 0 || s.Stats().Events != 2 {
		t.Fatalf("held %d, stats %+v", s.Held(), s.Stats())
	}
}

func TestSSEHoldsPartialEvent(t *testing.T) {
	s := NewSSEStream(NewRewriter(round2, 1), 1<<20)
	ev := "data: " + lpDoc + "\n\n"
	out := s.Write(nil, []byte(ev+ev[:30]), false)
	if string(out) != "data: "+lpDocR+"\n\n" || s.Held() != 30 {
		t.Fatalf("out %q held %d", out, s.Held())
	}
	out = s.Write(out[:0], []byte(ev[30:]), false)
	if string(out) != "data: "+lpDocR+"\n\n" || s.Held() != 0 {
		t.Fatalf("out %q held %d", out, s.Held())
	}
}

// TestSSEOversizeEvent: an event longer than maxHeld is dropped (a
// comment in its place) or, with PassOversize, released raw, in every
// chunking and with every line ending; the events after it are still
// rewritten, and nothing held ever exceeds the bound by more than a chunk.
func TestSSEOversizeEvent(t *testing.T) {
	big := `{"choices":[{"logprobs":{"content":[{"token":"` + strings.Repeat("x", 5000) + `","logprob":-0.123456}]}}]}`
	for _, nl := range []string{"\n", "\r\n", "\r"} {
		in := "data: " + lpDoc + nl + nl + "id: 2" + nl + "data: " + big + nl + nl + "data: " + lpDoc + nl + nl
		for _, pass := range []bool{false, true} {
			for _, step := range []int{1, 7, 100, 1000, 4000, len(in)} {
				s := NewSSEStream(NewRewriter(round2, 1), 1024)
				if pass {
					s.PassOversize()
				}
				var out []byte
				for c := 0; c < len(in); c += step {
					out = s.Write(out, []byte(in[c:min(c+step, len(in))]), false)
					if s.Held() > 1024+step {
						t.Fatalf("%q step %d: held %d", nl, step, s.Held())
					}
				}
				out = s.Write(out, nil, true)
				st := s.Stats()
				first, last := "data: "+lpDocR+nl+nl, "data: "+lpDocR+nl+nl
				var want string
				switch {
				case step == len(in):
					// A single chunk holds no tail: every event is complete
					// and rewritten.
					want = first + "id: 2" + nl + "data: " + strings.Replace(big, "-0.123456", "-0.12", 1) + nl + nl + last
				case pass:
					want = first + "id: 2" + nl + "data: " + big + nl + nl + last
				default:
					want = first + oversizeComment + last
				}
				if string(out) != want {
					t.Fatalf("%q pass=%v step %d: got %q", nl, pass, step, out)
				}
				if wantOver := int64(1); step == len(in) {
					if st.Oversize != 0 {
						t.Fatalf("single chunk counted oversize")
					}
				} else if st.Oversize != wantOver || st.Rewritten != 2 {
					t.Fatalf("%q pass=%v step %d: stats %+v", nl, pass, step, st)
				}
			}
		}
	}
}

// TestSSEMaxHeldBound: an event that never ends is skipped in bounded
// memory for the rest of the stream.
func TestSSEMaxHeldBound(t *testing.T) {
	s := NewSSEStream(NewRewriter(round2, 1), 4096)
	chunk := bytes.Repeat([]byte("a"), 1000)
	var out []byte
	for i := 0; i < 100; i++ {
		out = s.Write(out, chunk, false)
		if s.Held() > 4096 {
			t.Fatalf("held %d > bound", s.Held())
		}
	}
	if string(out) != oversizeComment || s.Stats().Oversize != 1 {
		t.Fatalf("out %q, stats %+v", out, s.Stats())
	}
}

func TestSSESteadyStateAllocs(t *testing.T) {
	ev := []byte("data: " + lpDoc + "\n\n")
	s := NewSSEStream(NewRewriter(allow, 1), 1<<20)
	dst := make([]byte, 0, 4096)
	// Warm up the scratch buffers, then split each event in two.
	for i := 0; i < 3; i++ {
		dst = s.Write(dst[:0], ev[:50], false)
		dst = s.Write(dst, ev[50:], false)
	}
	allocs := testing.AllocsPerRun(100, func() {
		dst = s.Write(dst[:0], ev[:50], false)
		dst = s.Write(dst, ev[50:], false)
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per event", allocs)
	}
}
