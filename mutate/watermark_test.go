package mutate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/distillguard/distillguard/internal/tokens"
	"github.com/distillguard/distillguard/watermark"
)

// wmText is English with many synonym-set members, quotes, escapes
// (json.Marshal writes <, > and & as \u003c...), non-ASCII and a text
// that ends in a word, so the last delta's word is held to the end.
const wmText = "The big dog bought a huge car, and the children said \"it is quick\".\n" +
	"However, the large house seemed small & <tiny> to them; they wanted a bigger one. " +
	"Café owners often begin to purchase fast cars because they are rich — perhaps too rich. " +
	"Therefore the kids started to build a simple, easy plan and finally finished it"

func wmMarker(t testing.TB, seed uint64) *TextMark {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 0x776d))
	secret := make([]byte, 32)
	for i := range secret {
		secret[i] = byte(r.Uint32())
	}
	k, err := watermark.NewKey(fmt.Sprintf("k%d", seed), secret)
	if err != nil {
		t.Fatal(err)
	}
	return NewTextMark(watermark.NewMarker(watermark.DefaultLexicon(), k))
}

func wmQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func chatChunks(toks []string) []byte {
	var b strings.Builder
	b.WriteString(`data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}` + "\n\n")
	for _, tok := range toks {
		q := wmQuote(tok)
		fmt.Fprintf(&b, `data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"logprobs":{"content":[{"token":%s,"logprob":-0.25,"top_logprobs":[{"token":%s,"logprob":-0.25}]}]},"delta":{"content":%s},"finish_reason":null}]}`+"\n\n", q, q, q)
	}
	b.WriteString(`data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}` + "\n\ndata: [DONE]\n\n")
	return []byte(b.String())
}

// runChunked rewrites in through a fresh watermarking SSE stream, cut at
// random offsets (seeded; one piece when r is nil), and reports the most
// text held at a cut.
func runChunked(t testing.TB, f Format, m *TextMark, in []byte, r *rand.Rand) ([]byte, int) {
	t.Helper()
	wt := m.NewText()
	rw := NewRewriterFor(f, OutputPolicy{RoundDecimals: -1, MaxAlternatives: -1, EmbeddingDecimals: -1, Watermark: true}, 7, WithTextRewriter(wt))
	s := NewSSEStream(rw, 0)
	if r == nil {
		return s.Write(nil, in, true), 0
	}
	var out []byte
	most := 0
	for i := 0; i < len(in); {
		n := 1 + r.IntN(40)
		end := min(i+n, len(in))
		out = s.Write(out, in[i:end], end == len(in))
		if h := rw.TextHeld(); h > most {
			most = h
		}
		if s.Held() < rw.TextHeld() {
			t.Fatalf("SSE held %d < text held %d", s.Held(), rw.TextHeld())
		}
		i = end
	}
	if s.Held() != 0 {
		t.Fatalf("%d bytes held at the end", s.Held())
	}
	return out, most
}

type chatEvent struct {
	Choices []struct {
		Delta struct {
			Content *json.RawMessage `json:"content"`
		} `json:"delta"`
		Text     *json.RawMessage `json:"text"`
		Logprobs *struct {
			Content []struct {
				Token string `json:"token"`
			} `json:"content"`
		} `json:"logprobs"`
	} `json:"choices"`
	Type  string           `json:"type"`
	Delta *json.RawMessage `json:"delta"`
	Text  *json.RawMessage `json:"text"`
}

// sseData returns the data payloads of an SSE body (one data line each).
func sseData(t testing.TB, body []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for _, ev := range bytes.Split(body, []byte("\n\n")) {
		for _, line := range bytes.Split(ev, []byte("\n")) {
			if p, ok := bytes.CutPrefix(line, []byte("data: ")); ok && string(p) != "[DONE]" {
				out = append(out, p)
			}
		}
	}
	return out
}

func rawContent(m *json.RawMessage) []byte {
	if m == nil || string(*m) == "null" {
		return nil
	}
	return (*m)[1 : len(*m)-1]
}

func unquote(t testing.TB, raw []byte) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(append(append([]byte{'"'}, raw...), '"'), &s); err != nil {
		t.Fatalf("%q: %v", raw, err)
	}
	return s
}

// wantRaw is the raw (escaped) text the watermark must produce for text:
// the text's own escapes outside the substituted words (json.Marshal of
// each rune, which is how the fixtures are escaped), the replacement in
// them. It also returns the substituted spans of the decoded text.
func wantRaw(t testing.TB, m *TextMark, text string) (string, []watermark.Span) {
	t.Helper()
	st := m.Marker().NewStream()
	out := st.Write(nil, []byte(text))
	subs := append([]watermark.Substitution(nil), st.Substitutions()...)
	out = st.Flush(out)
	subs = append(subs, st.Substitutions()...)
	var b strings.Builder
	var spans []watermark.Span
	cur := 0
	esc := func(s string) {
		for _, r := range s {
			q := wmQuote(string(r))
			b.WriteString(q[1 : len(q)-1])
		}
	}
	for _, s := range subs {
		esc(text[cur:s.In.Start])
		b.Write(out[s.Out.Start:s.Out.End])
		cur = int(s.In.End)
		spans = append(spans, s.In)
	}
	esc(text[cur:])
	return b.String(), spans
}

func TestWatermarkChatStream(t *testing.T) {
	m := wmMarker(t, 1)
	toks := tokens.Split(wmText)
	in := chatChunks(toks)
	out, _ := runChunked(t, FormatOpenAI, m, in, nil)
	for seed := uint64(0); seed < 30; seed++ {
		got, most := runChunked(t, FormatOpenAI, m, in, rand.New(rand.NewPCG(seed, 1)))
		if !bytes.Equal(got, out) {
			t.Fatalf("chunking %d changed the output", seed)
		}
		if most > 32 {
			t.Fatalf("held %d text bytes: more than a word", most)
		}
	}
	want, spans := wantRaw(t, m, wmText)
	if len(spans) == 0 {
		t.Fatal("the fixture text got no substitution: the test tests nothing")
	}
	var raw []byte
	kept, overl := 0, 0
	pos := 0
	tokAt := map[string][]int{} // token -> its decoded offsets, in order
	for _, tok := range toks {
		tokAt[tok] = append(tokAt[tok], pos)
		pos += len(tok)
	}
	seen := map[string]int{}
	for _, d := range sseData(t, out) {
		var ev chatEvent
		if err := json.Unmarshal(d, &ev); err != nil {
			t.Fatalf("output event is not JSON: %s", d)
		}
		c := ev.Choices[0]
		raw = append(raw, rawContent(c.Delta.Content)...)
		if c.Logprobs != nil {
			for _, e := range c.Logprobs.Content {
				kept++
				// The token's place: the next unseen occurrence.
				k := seen[e.Token]
				seen[e.Token]++
				off := tokAt[e.Token][k]
				for _, sp := range spans {
					if int64(off) < sp.End && sp.Start < int64(off+len(e.Token)) {
						overl++
					}
				}
			}
		}
	}
	if string(raw) != want {
		t.Fatalf("text:\n got  %s\n want %s", raw, want)
	}
	if overl != 0 {
		t.Fatalf("%d logprob entries of substituted words survived", overl)
	}
	if kept < len(toks)/2 || kept == len(toks) {
		t.Fatalf("%d of %d entries kept", kept, len(toks))
	}
	// The envelope of every event is unchanged: only content strings and
	// logprob entries differ.
	if n, m := len(sseData(t, out)), len(sseData(t, in)); n != m {
		t.Fatalf("%d events out, %d in", n, m)
	}
	// The text ended in a word: the finish chunk's empty delta got it.
	last := sseData(t, out)
	if !bytes.Contains(last[len(last)-1], []byte(`"delta":{"content":"`)) {
		t.Fatalf("finish chunk %s", last[len(last)-1])
	}
}

func TestWatermarkChatBodyMatchesStream(t *testing.T) {
	m := wmMarker(t, 2)
	body := []byte(`{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":` + wmQuote(wmText) + `},"finish_reason":"stop"}]}`)
	rw := NewRewriterFor(FormatOpenAI, OutputPolicy{RoundDecimals: -1, MaxAlternatives: -1, EmbeddingDecimals: -1, Watermark: true}, 1, WithTextRewriter(m.NewText()))
	out, err := rw.Rewrite(nil, body)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := wantRaw(t, m, wmText)
	i := bytes.Index(out, []byte(`"content":"`)) + len(`"content":"`)
	j := bytes.Index(out, []byte(`"},"finish_reason"`))
	if string(out[i:j]) != want {
		t.Fatalf("body text:\n got  %s\n want %s", out[i:j], want)
	}
	if string(out[:i]) != string(body[:i]) || !bytes.HasSuffix(out, body[bytes.Index(body, []byte(`"},"finish_reason"`)):]) {
		t.Fatalf("envelope changed: %s", out)
	}
	// Without a key the same policy changes nothing.
	plain := NewRewriterFor(FormatOpenAI, OutputPolicy{RoundDecimals: -1, MaxAlternatives: -1, EmbeddingDecimals: -1, Watermark: true}, 1)
	if got, _ := plain.Rewrite(nil, body); !bytes.Equal(got, body) {
		t.Fatal("a watermark policy without a text rewriter changed the body")
	}
}

func TestWatermarkLegacyStream(t *testing.T) {
	m := wmMarker(t, 3)
	toks := tokens.Split(wmText)
	in := legacyChunks(toks)
	out, _ := runChunked(t, FormatOpenAI, m, in, nil)
	got, _ := runChunked(t, FormatOpenAI, m, in, rand.New(rand.NewPCG(5, 5)))
	if !bytes.Equal(got, out) {
		t.Fatal("chunking changed the output")
	}
	var raw []byte
	nulled := 0
	for _, d := range sseData(t, out) {
		var ev chatEvent
		if err := json.Unmarshal(d, &ev); err != nil {
			t.Fatalf("not JSON: %s", d)
		}
		raw = append(raw, rawContent(ev.Choices[0].Text)...)
		if ev.Choices[0].Logprobs == nil {
			nulled++
		}
	}
	want, spans := wantRaw(t, m, wmText)
	if string(raw) != want {
		t.Fatalf("text:\n got  %s\n want %s", raw, want)
	}
	if nulled < len(spans) || nulled == len(toks) {
		t.Fatalf("%d of %d documents lost their logprobs for %d substitutions", nulled, len(toks), len(spans))
	}
}

func TestWatermarkResponsesStream(t *testing.T) {
	m := wmMarker(t, 4)
	toks := tokens.Split(wmText)
	var b strings.Builder
	seq := 0
	ev := func(typ, body string) {
		fmt.Fprintf(&b, "event: %s\ndata: {\"type\":%q,%s,\"sequence_number\":%d}\n\n", typ, typ, body, seq)
		seq++
	}
	ev("response.content_part.added", `"item_id":"m1","output_index":0,"content_index":0,"part":{"type":"output_text","text":"","annotations":[],"logprobs":[]}`)
	for _, tok := range toks {
		q := wmQuote(tok)
		ev("response.output_text.delta", fmt.Sprintf(`"item_id":"m1","output_index":0,"content_index":0,"delta":%s,"logprobs":[{"token":%s,"logprob":-0.5,"top_logprobs":[]}]`, q, q))
	}
	whole := wmQuote(wmText)
	ev("response.output_text.done", `"item_id":"m1","output_index":0,"content_index":0,"text":`+whole+`,"logprobs":[]`)
	ev("response.completed", `"response":{"id":"r","object":"response","output":[{"type":"message","id":"m1","content":[{"type":"output_text","text":`+whole+`,"annotations":[],"logprobs":[]}]}]}`)
	in := []byte(b.String())
	out, _ := runChunked(t, FormatOpenAI, m, in, nil)
	for seed := uint64(0); seed < 10; seed++ {
		if got, _ := runChunked(t, FormatOpenAI, m, in, rand.New(rand.NewPCG(seed, 9))); !bytes.Equal(got, out) {
			t.Fatalf("chunking %d changed the output", seed)
		}
	}
	want, _ := wantRaw(t, m, wmText)
	var deltas []byte
	var done, completed string
	for _, d := range sseData(t, out) {
		var e chatEvent
		if err := json.Unmarshal(d, &e); err != nil {
			t.Fatalf("not JSON: %s", d)
		}
		switch e.Type {
		case "response.output_text.delta":
			deltas = append(deltas, rawContent(e.Delta)...)
		case "response.output_text.done":
			done = string(rawContent(e.Text))
		case "response.completed":
			i := bytes.Index(d, []byte(`"text":"`)) + len(`"text":"`)
			j := bytes.Index(d, []byte(`","annotations"`))
			completed = string(d[i:j])
		}
	}
	if string(deltas) != want || done != want || completed != want {
		t.Fatalf("texts differ:\n deltas    %s\n done      %s\n completed %s\n want      %s", deltas, done, completed, want)
	}
	if !bytes.Contains(out, []byte("event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"item_id\":\"m1\",\"output_index\":0,\"content_index\":0,\"delta\":\"")) {
		t.Fatal("no delta event carried the held tail")
	}
	if unquote(t, deltas) != string(mustMark(m, wmText)) {
		t.Fatal("decoded deltas differ from the marker's output")
	}
}

func mustMark(m *TextMark, text string) []byte {
	out, _ := m.Marker().Mark([]byte(text))
	return out
}

func TestDecodeMapped(t *testing.T) {
	for _, c := range []struct{ raw, dec string }{
		{`a\"b`, "a\"b"},
		{`\u00e9x`, "éx"},
		{`\ud83d\ude00!`, "😀!"},
		{`\ud83d!`, "\uFFFD!"},
		{`\n\t\/\\`, "\n\t/\\"},
	} {
		dec, off := decodeMapped(nil, nil, []byte(c.raw), 3)
		if string(dec) != c.dec || len(off) != len(dec) {
			t.Errorf("%s: %q (%d offsets)", c.raw, dec, len(off))
		}
		if decodedLen([]byte(c.raw)) != len(c.dec) {
			t.Errorf("%s: decodedLen %d", c.raw, decodedLen([]byte(c.raw)))
		}
		for i := 1; i < len(off); i++ {
			if off[i] < off[i-1] || off[0] != 3 {
				t.Errorf("%s: offsets %v", c.raw, off)
			}
		}
		if !utf8.ValidString(string(dec)) {
			t.Errorf("%s: invalid UTF-8", c.raw)
		}
	}
}

// FuzzWatermarkText: for any text, split into tokens and streamed in any
// chunking, the deltas decode to what the marker makes of the whole text,
// and the output does not depend on the chunking.
func FuzzWatermarkText(f *testing.F) {
	f.Add("The big dog bought a huge car", uint64(1))
	f.Add("Ünïcödé “big” words—huge `big` ```x``` BIG Big bIg\n\t\"quick\"", uint64(2))
	f.Add(wmText, uint64(3))
	m := wmMarker(f, 9)
	f.Fuzz(func(t *testing.T, text string, seed uint64) {
		if !utf8.ValidString(text) {
			return // JSON strings from an upstream hold text, not bytes
		}
		in := chatChunks(tokens.Split(text))
		out, _ := runChunked(t, FormatOpenAI, m, in, nil)
		got, _ := runChunked(t, FormatOpenAI, m, in, rand.New(rand.NewPCG(seed, 3)))
		if !bytes.Equal(got, out) {
			t.Fatal("chunking changed the output")
		}
		var raw []byte
		for _, d := range sseData(t, out) {
			var ev chatEvent
			if err := json.Unmarshal(d, &ev); err != nil {
				t.Fatalf("output event is not JSON: %s", d)
			}
			raw = append(raw, rawContent(ev.Choices[0].Delta.Content)...)
		}
		if unquote(t, raw) != string(mustMark(m, text)) {
			t.Fatalf("deltas %q, marker %q", unquote(t, raw), mustMark(m, text))
		}
		// Outside the substituted words the escaped bytes are the input's.
		if want, _ := wantRaw(t, m, text); string(raw) != want {
			t.Fatalf("raw text:\n got  %s\n want %s", raw, want)
		}
	})
}

// BenchmarkWatermarkChatStream: the lexical watermark over a streamed
// chat completion, one token per event with logprobs, against the same
// stream rewritten without it (rounding only).
func BenchmarkWatermarkChatStream(b *testing.B) {
	m := wmMarker(b, 1)
	in := chatChunks(tokens.Split(strings.Repeat(wmText+" ", 8)))
	p := OutputPolicy{RoundDecimals: 2, MaxAlternatives: -1, EmbeddingDecimals: -1, Watermark: true}
	// served: with the served record too (watermark.log_served).
	for _, c := range []struct {
		name         string
		mark, served bool
	}{{"round-only", false, false}, {"watermark", true, false}, {"watermark+served", true, true}} {
		mark := c.mark
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(in)))
			b.ReportAllocs()
			out := make([]byte, 0, 2*len(in))
			for i := 0; i < b.N; i++ {
				var opts []RewriterOption
				if mark {
					tx := m.NewText()
					if c.served {
						tx.RecordServed(m.Marker().Key().NewServed())
					}
					opts = append(opts, WithTextRewriter(tx))
				}
				rw := NewRewriterFor(FormatOpenAI, p, 1, opts...)
				s := NewSSEStream(rw, 0)
				for off := 0; off < len(in); off += 512 {
					out = s.Write(out[:0], in[off:min(off+512, len(in))], off+512 >= len(in))
				}
			}
		})
	}
}

// TestWatermarkAnthropicStream: an Anthropic Messages stream is marked
// like a chat stream: chunking-invariant, the text block's deltas (one
// added before content_block_stop with the held tail) concatenate to the
// marker's output of the whole text, tool input and the thinking block's
// signature untouched.
func TestWatermarkAnthropicStream(t *testing.T) {
	m := wmMarker(t, 5)
	toks := tokens.Split(wmText)
	var b strings.Builder
	ev := func(typ, body string) {
		fmt.Fprintf(&b, "event: %s\ndata: {\"type\":%q%s}\n\n", typ, typ, body)
	}
	ev("message_start", `,"message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude","stop_reason":null,"usage":{"input_tokens":10,"output_tokens":1}}`)
	ev("content_block_start", `,"index":0,"content_block":{"type":"text","text":""}`)
	ev("ping", "")
	for _, tok := range toks {
		ev("content_block_delta", `,"index":0,"delta":{"type":"text_delta","text":`+wmQuote(tok)+`}`)
	}
	ev("content_block_stop", `,"index":0`)
	const tool = `,"index":1,"delta":{"type":"input_json_delta","partial_json":"{\"big\": \"huge car\"}"}`
	ev("content_block_start", `,"index":1,"content_block":{"type":"tool_use","id":"t1","name":"buy","input":{}}`)
	ev("content_block_delta", tool)
	ev("content_block_stop", `,"index":1`)
	ev("message_delta", `,"delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":40}`)
	ev("message_stop", "")
	in := []byte(b.String())
	out, _ := runChunked(t, FormatAnthropic, m, in, nil)
	for seed := uint64(0); seed < 10; seed++ {
		if got, _ := runChunked(t, FormatAnthropic, m, in, rand.New(rand.NewPCG(seed, 11))); !bytes.Equal(got, out) {
			t.Fatalf("chunking %d changed the output", seed)
		}
	}
	var text []byte
	for _, d := range sseData(t, out) {
		var e struct {
			Type  string `json:"type"`
			Index int    `json:"index"`
			Delta struct {
				Type string           `json:"type"`
				Text *json.RawMessage `json:"text"`
			} `json:"delta"`
		}
		if err := json.Unmarshal(d, &e); err != nil {
			t.Fatalf("not JSON: %s", d)
		}
		if e.Type == "content_block_delta" && e.Index == 0 {
			text = append(text, rawContent(e.Delta.Text)...)
		}
	}
	want, _ := wantRaw(t, m, wmText)
	if string(text) != want {
		t.Fatalf("text deltas:\n got  %s\n want %s", text, want)
	}
	if unquote(t, text) == wmText {
		t.Fatal("nothing was marked: the test text has synonym-set members")
	}
	if !bytes.Contains(out, []byte("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"")) ||
		!bytes.Contains(out, []byte("\"}}\n\nevent: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}")) {
		t.Fatal("no delta event carried the held tail before content_block_stop")
	}
	if !bytes.Contains(out, []byte(tool)) {
		t.Fatal("tool input changed")
	}
}
