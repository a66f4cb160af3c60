package mutate

import (
	"bytes"
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/distillguard/distillguard/internal/tokens"
)

// textPolicies are the policies without noise, under which Chat
// Completions documents take the deferred text walk.
var textPolicies = []OutputPolicy{
	{RoundDecimals: -1, MaxAlternatives: -1, EmbeddingDecimals: -1, Watermark: true},
	{RoundDecimals: 2, MaxAlternatives: 1, EmbeddingDecimals: -1, Watermark: true},
	{RoundDecimals: 1, MaxAlternatives: 0, EmbeddingDecimals: -1, Watermark: true},
	{StripLogprobs: true, RoundDecimals: -1, MaxAlternatives: -1, EmbeddingDecimals: -1, Watermark: true},
}

// legacyChunks is a legacy Completions stream of toks with logprobs.
func legacyChunks(toks []string) []byte {
	var b strings.Builder
	for i, tok := range toks {
		fin := "null"
		if i == len(toks)-1 {
			fin = `"length"`
		}
		fmt.Fprintf(&b, `data: {"object":"text_completion","choices":[{"text":%s,"index":0,"logprobs":{"tokens":[%s],"token_logprobs":[-0.1],"top_logprobs":[{%s:-0.1}],"text_offset":[0]},"finish_reason":%s}]}`+"\n\n", wmQuote(tok), wmQuote(tok), wmQuote(tok), fin)
	}
	return []byte(b.String() + "data: [DONE]\n\n")
}

// twoChoiceChunks streams toks alternately into choices 0 and 1, the
// index after the logprobs, and ends both with content null.
func twoChoiceChunks(toks []string) []byte {
	var b strings.Builder
	for i, tok := range toks {
		q := wmQuote(tok)
		fmt.Fprintf(&b, `data: {"choices":[{"logprobs":{"content":[{"token":%s,"logprob":-0.5,"bytes":[32],"top_logprobs":[{"token":%s,"logprob":-0.5},{"token":"x","logprob":-2}]},{"token":"","logprob":-1,"top_logprobs":[]}],"refusal":null},"delta":{"content":%s},"index":%d,"finish_reason":null}],"usage":null}`+"\n\n", q, q, q, i%2)
	}
	b.WriteString(`data: {"choices":[{"index":0,"delta":{"content":null},"finish_reason":"stop"},{"index":1,"delta":{},"finish_reason":"stop"}]}` + "\n\n")
	return []byte(b.String())
}

// chatBodyText is a non-streamed chat completion of toks with logprobs.
func chatBodyText(toks []string) []byte {
	var ents []string
	for _, tok := range toks {
		q := wmQuote(tok)
		ents = append(ents, fmt.Sprintf(`{"token":%s,"logprob":-0.25,"top_logprobs":[{"token":%s,"logprob":-0.25}]}`, q, q))
	}
	return []byte(`{"object":"chat.completion","choices":[{"index":0,"logprobs":{"content":[` + strings.Join(ents, ",") +
		`]},"message":{"role":"assistant","content":` + wmQuote(strings.Join(toks, "")) + `},"finish_reason":"stop"}]}`)
}

// garbleDoc returns b with up to three random edits (seeded by rng).
func garbleDoc(rng *rand.Rand, b []byte) []byte {
	out := append([]byte(nil), b...)
	const special = "{}[],:\"\\ntfe-.09 \n"
	for n := 1 + rng.IntN(3); n > 0 && len(out) > 0; n-- {
		i := rng.IntN(len(out))
		switch rng.IntN(4) {
		case 0:
			out[i] = special[rng.IntN(len(special))]
		case 1:
			out = append(out[:i], out[i+1:]...)
		case 2:
			out = append(out[:i], append([]byte{special[rng.IntN(len(special))]}, out[i:]...)...)
		default:
			out = append(out[:i], out[min(len(out), i+1+rng.IntN(32)):]...)
		}
	}
	return out
}

// TestDeferredTextMatchesPrescan: the walk that hands text over after it
// has validated the document gives the bytes, stats and held text of the
// walk that validates in a prescan first, for valid and broken streams
// in any chunking.
func TestDeferredTextMatchesPrescan(t *testing.T) {
	m := wmMarker(t, 5)
	toks := tokens.Split(wmText)
	streams := map[string][]byte{
		"chat":    chatChunks(toks),
		"legacy":  legacyChunks(toks),
		"choices": twoChoiceChunks(toks),
		"body":    append(append([]byte("data: "), chatBodyText(toks)...), "\n\n"...),
		// A document with choices and a Responses API member: the
		// deferred walk starts again with the prescan.
		"mixed": []byte(`data: {"choices":[{"index":0,"delta":{"content":" big"},"finish_reason":null}],"part":{"type":"output_text","text":" big house"}}` + "\n\n" +
			`data: {"choices":[{"index":0,"delta":{"content":" dog"},"finish_reason":"stop"}]}` + "\n\n"),
	}
	rng := rand.New(rand.NewPCG(11, 12))
	subs := int64(0)
	for name, in := range streams {
		for v := 0; v < 12; v++ {
			data := in
			if v > 0 {
				// Break a few events: each broken one must leave the
				// text state as if it had not been seen, in both walks.
				evs := bytes.SplitAfter(in, []byte("\n\n"))
				for k := 0; k < 3; k++ {
					j := rng.IntN(len(evs))
					evs[j] = garbleDoc(rng, evs[j])
				}
				data = bytes.Join(evs, nil)
			}
			for pi, p := range textPolicies {
				var outs [2][]byte
				var stats [2]string
				cut := rand.New(rand.NewPCG(uint64(v), uint64(pi)))
				cuts := []int{}
				for off := 0; off < len(data); {
					off = min(len(data), off+1+cut.IntN(300))
					cuts = append(cuts, off)
				}
				for k := range 2 {
					wt := m.NewText()
					rw := NewRewriterFor(FormatOpenAI, p, 3, WithTextRewriter(wt))
					rw.noDefer = k == 1
					s := NewSSEStream(rw, 0)
					prev := 0
					for _, c := range cuts {
						outs[k] = s.Write(outs[k], data[prev:c], c == len(data))
						prev = c
					}
					stats[k] = fmt.Sprintf("%+v %+v %+v %d", s.Stats(), rw.Stats(), wt.Stats(), rw.TextHeld())
					subs += wt.Stats().Substituted
				}
				if !bytes.Equal(outs[0], outs[1]) {
					t.Fatalf("%s variant %d policy %d: deferred\n%s\nprescan\n%s", name, v, pi, outs[0], outs[1])
				}
				if stats[0] != stats[1] {
					t.Fatalf("%s variant %d policy %d: stats %s, prescan %s", name, v, pi, stats[0], stats[1])
				}
			}
		}
	}
	if subs == 0 {
		t.Fatal("no word was substituted: the test tests nothing")
	}
}

// TestTextFailClosed: a document that does not parse goes out as it came
// and its text is never seen: the documents around it come out as if it
// were not there, on each walk (deferred, prescan, the validating pass of
// the other formats).
func TestTextFailClosed(t *testing.T) {
	m := wmMarker(t, 6)
	deep := strings.Repeat("[", 130) + strings.Repeat("]", 130)
	chat := func(tok, tail string) string {
		q := wmQuote(tok)
		return `{"choices":[{"index":0,"logprobs":{"content":[{"token":` + q + `,"logprob":-0.5,"top_logprobs":[]}]},"delta":{"content":` + q + `},"finish_reason":null}]` + tail
	}
	resp := func(tok, tail string) string {
		return `{"type":"response.output_text.delta","output_index":0,"content_index":0,"delta":` + wmQuote(tok) + `,"logprobs":[]` + tail
	}
	anth := func(tok, tail string) string {
		return `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":` + wmQuote(tok) + `}` + tail
	}
	cases := []struct {
		name string
		f    Format
		doc  func(tok, tail string) string
		bad  []string // tails that break the document
	}{
		{"chat", FormatOpenAI, chat, []string{`}x`, `,"usage":nul}`, `,"x":[` + deep + `]}`, `,"x":"\q"}`, `,`, `}}`}},
		{"responses", FormatOpenAI, resp, []string{`}x`, `,"x":tru}`, `,"x":[` + deep + `]}`, `}}`}},
		{"anthropic", FormatAnthropic, anth, []string{`}x`, `,"x":{]}`, `,"x":[` + deep + `]}`}},
	}
	toks := []string{"The", " big", " dog", " bought", " a", " huge", " car"}
	for _, c := range cases {
		for _, bad := range c.bad {
			for _, p := range []OutputPolicy{textPolicies[0], {RoundDecimals: 2, MaxAlternatives: -1, Perturb: 0.2, EmbeddingDecimals: -1, Watermark: true}} {
				ref := NewRewriterFor(c.f, p, 1, WithTextRewriter(m.NewText()))
				wt := m.NewText()
				rw := NewRewriterFor(c.f, p, 1, WithTextRewriter(wt))
				for i, tok := range toks {
					good := []byte(c.doc(tok, `}`))
					if i == 3 {
						broken := []byte(c.doc(" house", bad))
						pieces := wt.Stats().Pieces
						out, err := rw.Rewrite(nil, broken)
						if !errors.Is(err, ErrNotJSON) || !bytes.Equal(out, broken) {
							t.Fatalf("%s %q: %v, %s", c.name, bad, err, out)
						}
						if wt.Stats().Pieces != pieces {
							t.Fatalf("%s %q: the text of a broken document was seen", c.name, bad)
						}
					}
					want, err1 := ref.Rewrite(nil, good)
					got, err2 := rw.Rewrite(nil, good)
					if err1 != nil || err2 != nil || !bytes.Equal(got, want) {
						t.Fatalf("%s %q doc %d: %s (%v), want %s (%v)", c.name, bad, i, got, err2, want, err1)
					}
				}
			}
		}
	}
}

// checkSkipFast compares skipFast with skipValue at every value of the
// valid JSON value at s.i, recursively, and leaves the cursor after it.
func checkSkipFast(t *testing.T, s *scanner, depth int) {
	t.Helper()
	start := s.i
	f := scanner{b: s.b, i: start}
	ferr := f.skipFast()
	v := scanner{b: s.b, i: start}
	if err := v.skipValue(depth); err != nil {
		t.Fatalf("%q at %d: %v", s.b, start, err)
	}
	if ferr != nil || f.i != v.i {
		t.Fatalf("%q at %d: skipFast ends at %d (%v), skipValue at %d", s.b, start, f.i, ferr, v.i)
	}
	switch s.peek() {
	case '{':
		err := s.eachMember(func(int, int) error {
			checkSkipFast(t, s, depth+1)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	case '[':
		err := s.eachElem(func(int) error {
			checkSkipFast(t, s, depth+1)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	default:
		s.i = v.i
	}
	if s.i != v.i {
		t.Fatalf("%q at %d: walked to %d, skipValue to %d", s.b, start, s.i, v.i)
	}
}

// FuzzSkipFast: on valid JSON the non-validating skip ends every value
// where the validating one does; on anything else it stays in bounds.
func FuzzSkipFast(f *testing.F) {
	for _, d := range []string{
		`{"a":[1,2,{"b":"}]\"\\"}],"c":-1.5e3,"d":true,"e":null,"f":{}}`, `["\\\\","\\\"",""]`, `"x\\"`, `[[],[[]],{}]`,
		`{"k" : [ 1 , 2 ] , "l" : { "m" : "n" } }`, "{\"a\":\"\xff\"}", `12`, `-0.5]`, `{"a":[72,101,108]}`,
		string(chatChunk(5)), `{"a":"` + strings.Repeat(`\"`, 9) + `"}`,
	} {
		f.Add([]byte(d))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var s scanner
		s.reset(b)
		s.ws()
		v := s
		if v.end(v.skipValue(0)) != nil {
			// skipFast is only for what was validated whole: a value
			// followed by a delimiter, never by another token ("0A0").
			// Not valid: skipFast must only stay in bounds.
			fs := scanner{b: b, i: s.i}
			if fs.skipFast() == nil && (fs.i < s.i || fs.i > len(b)) {
				t.Fatalf("%q: skipFast ended at %d", b, fs.i)
			}
			return
		}
		if s.i < len(b) {
			checkSkipFast(t, &s, 0)
		}
	})
}

// TestSpecial8MaskFirst: the lowest byte special8Mask flags is the first
// quote, backslash or control byte of the word, whatever follows it.
func TestSpecial8MaskFirst(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	var w [8]byte
	for n := 0; n < 200000; n++ {
		for j := range w {
			w[j] = byte(rng.IntN(256))
			if rng.IntN(3) > 0 {
				const picks = "\"\\\x00\x01\x1f !#[\\]\x7f\x80\xff"
				w[j] = picks[rng.IntN(len(picks))]
			}
		}
		first := 8
		for j, c := range w {
			if strStop[c] {
				first = j
				break
			}
		}
		m := special8Mask(uint64(w[0]) | uint64(w[1])<<8 | uint64(w[2])<<16 | uint64(w[3])<<24 |
			uint64(w[4])<<32 | uint64(w[5])<<40 | uint64(w[6])<<48 | uint64(w[7])<<56)
		got := 8
		if m != 0 {
			got = bits.TrailingZeros64(m) / 8
		}
		if got != first {
			t.Fatalf("%q: first special byte %d, mask says %d", w, first, got)
		}
	}
}

func TestMayHoldResponsesText(t *testing.T) {
	for _, c := range []struct {
		doc  string
		want bool
	}{
		{`{"type":"response.output_text.delta","delta":"x"}`, true},
		{`{"type":"response.output_text.done","text":"x"}`, true},
		{`{"output_index":0}`, true},
		{`{"content_index":0}`, true},
		{`{"type":"response.output_text.annotation.added"}`, false},
		{`{"choices":[{"index":0,"delta":{"content":"a_b"},"finish_reason":null}],"system_fingerprint":"fp_1"}`, false},
		{`{"a":"x_"}`, false},
		{`_`, false},
		{``, false},
	} {
		if got := mayHoldResponsesText([]byte(c.doc)); got != c.want {
			t.Errorf("%s: %v", c.doc, got)
		}
	}
}

// uintListEnd is uintArrayEnd's reference, byte by byte: the offset after
// the ']' that closes a compact list of non-negative integers starting
// at b[i], or -1.
func uintListEnd(b []byte, i int) int {
	start := true // at an element's first byte
	zero := false // the element is "0" so far
	for ; i < len(b); i++ {
		c := b[i]
		switch {
		case isDigit(c):
			if zero {
				return -1
			}
			zero = start && c == '0'
			start = false
		case c == ',' && !start:
			start, zero = true, false
		case c == ']' && !start:
			return i + 1
		default:
			return -1
		}
	}
	return -1
}

func checkUintArray(t *testing.T, b []byte, i int) {
	t.Helper()
	want := uintListEnd(b, i)
	got, ok := uintArrayEnd(b, i)
	if ok && got != want {
		t.Fatalf("%q from %d: end %d, want %d", b, i, got, want)
	}
	// Not found is allowed only when the ']' lies beyond the whole words.
	if !ok && want >= 0 && want <= i+(len(b)-i)/8*8 {
		t.Fatalf("%q from %d: not taken, want end %d", b, i, want)
	}
}

func TestUintArrayEnd(t *testing.T) {
	for _, d := range []string{
		`[45]}`, `[45]`, `[32,116,104,101]}]}`, `[0]xxxxxxxx`, `[0,0,0,0,0,0,0,0,0,0,0]........`, `[01]xxxxxxx`, `[1,01]xxxxxx`,
		`[10,100,1000,0]...`, `[1,,2]xxxxxxxx`, `[1,]xxxxxxxxx`, `[,1]xxxxxxxx`, `[1 ,2]xxxxxxx`, `[1.5]xxxxxxx`, `[-1]xxxxxxxx`,
		`[1234567]xxxxxxxx`, `[12345678]xxxxxxx`, `[1234567,0]xxxxxx`, `[123456,0]xxxxxxx`, `[1234567,01]xxxxx`, `[9"]xxxxxxx`,
	} {
		checkUintArray(t, []byte(d), 1)
	}
	rng := rand.New(rand.NewPCG(4, 4))
	const alphabet = "0123456789,,]]01 -.x"
	b := make([]byte, 40)
	for n := 0; n < 300000; n++ {
		l := 2 + rng.IntN(len(b)-2)
		for j := range l {
			b[j] = alphabet[rng.IntN(len(alphabet))]
			if rng.IntN(2) == 0 {
				b[j] = "0123456789"[rng.IntN(10)]
			}
		}
		checkUintArray(t, b[:l], rng.IntN(2))
	}
}

// FuzzUintArrayEnd: the word-at-a-time check of a token's bytes agrees
// with the byte-by-byte one.
func FuzzUintArrayEnd(f *testing.F) {
	f.Add([]byte("32,116,104,101]}]}"), 0)
	f.Add([]byte("0,01]xxxxxxxxxxxx"), 0)
	f.Fuzz(func(t *testing.T, b []byte, i int) {
		if i < 0 || i >= len(b) {
			return
		}
		checkUintArray(t, b, i)
	})
}
