package mutate

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestFormatNames(t *testing.T) {
	seen := map[string]bool{}
	for _, f := range Formats() {
		name := f.String()
		if seen[name] || strings.HasPrefix(name, "Format(") {
			t.Fatalf("format %d has name %q", f, name)
		}
		seen[name] = true
		got, err := ParseFormat(strings.ToUpper(name))
		if err != nil || got != f {
			t.Fatalf("ParseFormat(%q) = %v, %v", name, got, err)
		}
	}
	if len(seen) != 10 {
		t.Fatalf("%d formats", len(seen))
	}
	if _, err := ParseFormat("bedrock"); err == nil {
		t.Fatalf("unknown format accepted")
	}
	if s := Format(200).String(); s != "Format(200)" {
		t.Fatalf("String of an unknown format: %q", s)
	}
	if NewRewriterFor(Format(200), allow, 1).Format() != FormatOpenAI {
		t.Fatalf("unknown format not read as OpenAI")
	}
}

func TestFormatFraming(t *testing.T) {
	for _, f := range Formats() {
		s := NewStream(NewRewriterFor(f, allow, 1), 0)
		_, nd := s.(*NDJSONStream)
		if nd != (f == FormatOllama) || nd != (f.Framing() == FramingNDJSON) {
			t.Fatalf("%v: framer %T, framing %v", f, s, f.Framing())
		}
	}
}

func TestFormatRewriteTable(t *testing.T) {
	perturb := OutputPolicy{RoundDecimals: 3, MaxAlternatives: 1, Perturb: 0.5, EmbeddingDecimals: -1}
	tests := []struct {
		name string
		f    Format
		p    OutputPolicy
		in   string
		want string // "" : same as in
		err  bool
	}{
		{
			name: "gemini cap keeps pretty-printing",
			f:    FormatGemini, p: pol(func(p *OutputPolicy) { p.MaxAlternatives = 1 }),
			in:   "{\"candidates\": [{\"logprobsResult\": {\"topCandidates\": [{\"candidates\": [\n {\"token\": \"a\", \"logProbability\": -0.1},\n {\"token\": \"b\", \"logProbability\": -2}\n]}]}}]}",
			want: "{\"candidates\": [{\"logprobsResult\": {\"topCandidates\": [{\"candidates\": [\n {\"token\": \"a\", \"logProbability\": -0.1}\n]}]}}]}",
		},
		{
			name: "gemini strip keeps null and other members",
			f:    FormatGemini, p: strip,
			in:   `{"candidates":[{"logprobsResult":{"chosenCandidates":[]},"index":1,"avgLogprobs":-0.5},{"logprobsResult":null}],"usageMetadata":{}}`,
			want: `{"candidates":[{"index":1},{"logprobsResult":null}],"usageMetadata":{}}`,
		},
		{
			name: "gemini: the avgLogprobs of an answer without logprobs is rounded",
			f:    FormatGemini, p: round2,
			in:   `{"candidates":[{"content":{"parts":[{"text":"x"}]},"avgLogprobs":-0.38172023177146912}]}`,
			want: `{"candidates":[{"content":{"parts":[{"text":"x"}]},"avgLogprobs":-0.38}]}`,
		},
		{
			name: "gemini: a key like logprobsResult inside text is not a key",
			f:    FormatGemini, p: strip,
			in: `{"candidates":[{"content":{"parts":[{"text":"\"logprobsResult\": {}"}]}}]}`,
		},
		{
			name: "tgi prefill null logprob, non-number left alone",
			f:    FormatTGI, p: round2,
			in:   `{"details":{"prefill":[{"id":1,"text":"<s>","logprob":null},{"id":2,"text":"a","logprob":"x"},{"id":3,"text":"b","logprob":-1.23456}],"tokens":[]}}`,
			want: `{"details":{"prefill":[{"id":1,"text":"<s>","logprob":null},{"id":2,"text":"a","logprob":"x"},{"id":3,"text":"b","logprob":-1.23}],"tokens":[]}}`,
		},
		{
			name: "tgi best_of sequences",
			f:    FormatTGI, p: pol(func(p *OutputPolicy) { p.MaxAlternatives = 0 }),
			in:   `{"details":{"best_of_sequences":[{"tokens":[{"text":"a","logprob":-1}],"top_tokens":[[{"text":"a","logprob":-1}]]}],"top_tokens":[[{"text":"b","logprob":-1}]]}}`,
			want: `{"details":{"best_of_sequences":[{"tokens":[{"text":"a","logprob":-1}],"top_tokens":[[]]}],"top_tokens":[[]]}}`,
		},
		{
			name: "tgi compat array",
			f:    FormatTGI, p: strip,
			in:   `[{"generated_text":"a","details":{"tokens":[{"id":1,"text":"a","logprob":-1,"special":false}],"top_tokens":[[]]}}]`,
			want: `[{"generated_text":"a","details":{"tokens":[{"id":1,"text":"a","logprob":null,"special":false}],"top_tokens":[]}}]`,
		},
		{
			name: "llama.cpp probabilities: 0 and 1 stay, rounding as probabilities",
			f:    FormatLlamaCpp, p: round2,
			in:   `{"completion_probabilities":[{"content":"a","probs":[{"tok_str":"a","prob":1},{"tok_str":"b","prob":0.0049},{"tok_str":"c","prob":0}]}]}`,
			want: `{"completion_probabilities":[{"content":"a","probs":[{"tok_str":"a","prob":1},{"tok_str":"b","prob":0},{"tok_str":"c","prob":0}]}]}`,
		},
		{
			name: "llama.cpp array of results",
			f:    FormatLlamaCpp, p: strip,
			in:   `[{"index":0,"completion_probabilities":[]},{"completion_probabilities":[],"index":1}]`,
			want: `[{"index":0},{"index":1}]`,
		},
		{
			name: "ollama strip the only member",
			f:    FormatOllama, p: strip,
			in:   `{ "logprobs" : [ ] }`,
			want: `{}`,
		},
		{
			name: "ollama pretty entries",
			f:    FormatOllama, p: allow,
			in:   "{\n  \"logprobs\": [\n    {\n      \"token\": \"a\",\n      \"logprob\": -0.123456\n    }\n  ]\n}",
			want: "{\n  \"logprobs\": [\n    {\n      \"token\": \"a\",\n      \"logprob\": -0.12\n    }\n  ]\n}",
		},
		{
			name: "anthropic untouched by every logprob policy",
			f:    FormatAnthropic, p: perturb,
			in: `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"logprobs"}}`,
		},
		{
			name: "openai format refuses a top-level array",
			f:    FormatOpenAI, p: allow,
			in: `[{"choices":[]}]`, err: true,
		},
		{
			name: "gemini invalid json untouched",
			f:    FormatGemini, p: allow,
			in: `{"candidates":[{"avgLogprobs":-0.12345,}]}`, err: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.want
			if want == "" {
				want = tc.in
			}
			got, err := NewRewriterFor(tc.f, tc.p, 1).Rewrite(nil, []byte(tc.in))
			if (err != nil) != tc.err {
				t.Fatalf("err = %v", err)
			}
			if err != nil && !errors.Is(err, ErrNotJSON) {
				t.Fatalf("error %v does not wrap ErrNotJSON", err)
			}
			if string(got) != want {
				t.Fatalf("\ngot  %s\nwant %s", got, want)
			}
		})
	}
}

// TestFormatMemberOrder checks that noise keys do not depend on where the
// index member is.
func TestFormatMemberOrder(t *testing.T) {
	p := OutputPolicy{RoundDecimals: 4, MaxAlternatives: -1, Perturb: 0.5, EmbeddingDecimals: -1}
	pairs := []struct {
		f    Format
		a, b string
	}{
		{FormatGemini,
			`{"candidates":[{"index":1,"logprobsResult":{"chosenCandidates":[{"token":"a","logProbability":-1}]}}]}`,
			`{"candidates":[{"logprobsResult":{"chosenCandidates":[{"token":"a","logProbability":-1}]},"index":1}]}`},
		{FormatLlamaCpp,
			`{"index":1,"completion_probabilities":[{"token":"a","logprob":-1,"top_logprobs":[]}]}`,
			`{"completion_probabilities":[{"token":"a","logprob":-1,"top_logprobs":[]}],"index":1}`},
	}
	for _, pr := range pairs {
		x, _ := NewRewriterFor(pr.f, p, 3).Rewrite(nil, []byte(pr.a))
		y, _ := NewRewriterFor(pr.f, p, 3).Rewrite(nil, []byte(pr.b))
		// Same values, in the other order of members.
		vx := x[bytes.LastIndex(x, []byte(`:-`)):]
		vy := y[bytes.LastIndex(y, []byte(`:-`)):]
		if !bytes.Equal(vx[:bytes.IndexAny(vx, "}")], vy[:bytes.IndexAny(vy, "}")]) {
			t.Errorf("%v: %s vs %s", pr.f, x, y)
		}
		z, _ := NewRewriterFor(pr.f, p, 3).Rewrite(nil, bytes.Replace([]byte(pr.a), []byte(`"index":1`), []byte(`"index":2`), 1))
		if bytes.Equal(z[bytes.LastIndex(z, []byte(`:-`)):], x[bytes.LastIndex(x, []byte(`:-`)):]) {
			t.Errorf("%v: index 1 and 2 drew the same noise", pr.f)
		}
	}
}

func TestNDJSONStream(t *testing.T) {
	lp := `{"logprobs":[{"token":"a","logprob":-0.123456,"top_logprobs":[]}]}`
	lpR := `{"logprobs":[{"token":"a","logprob":-0.12,"top_logprobs":[]}]}`
	tests := []struct {
		name, in, want string
		events         int64
		invalid        int64
	}{
		{"LF", lp + "\n" + lp + "\n", lpR + "\n" + lpR + "\n", 2, 0},
		{"CRLF", lp + "\r\n" + lp + "\r\n", lpR + "\r\n" + lpR + "\r\n", 2, 0},
		{"last line without LF", lp + "\n" + lp, lpR + "\n" + lpR, 2, 0},
		{"empty lines and data: text", "\n\n" + lp + "\ndata: x\n", "\n\n" + lpR + "\ndata: x\n", 4, 1},
		// A line with logprobs that does not parse (here: a BOM before
		// it) is dropped with its LF: fail closed, never passed raw.
		{"leading space and a BOM", " " + lp + "\n\xef\xbb\xbf" + lp + "\n", " " + lpR + "\n", 2, 1},
		// [DONE] is the SSE end marker, passed without counting.
		{"not JSON", "[DONE]\n{\"logprobs\":[{\"logprob\":-0.1234}]\n", "[DONE]\n", 2, 1},
		{"not JSON, nothing to change", "[DONE]\n{\"content\":\"x\"\n", "[DONE]\n{\"content\":\"x\"\n", 2, 0}, // not even parsed: nothing in it to change
		{"empty", "", "", 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, cuts := range [][]int{nil, everyByte(len(tc.in))} {
				got, st := feedFormat(FormatOllama, round2, 1, []byte(tc.in), cuts)
				if string(got) != tc.want {
					t.Fatalf("\ngot  %q\nwant %q", got, tc.want)
				}
				if st.Events != tc.events || st.Invalid != tc.invalid {
					t.Fatalf("stats %+v", st)
				}
			}
		})
	}
}

// TestNDJSONOversize: a line longer than the hold bound that carries
// logprobs is dropped (with its LF), and rewriting goes on for the lines
// after it.
func TestNDJSONOversize(t *testing.T) {
	lp := `{"logprobs":[{"token":"a","logprob":-0.123456,"top_logprobs":[]}]}`
	long := `{"logprobs":[],"pad":"` + strings.Repeat("x", 300) + `"}`
	in := lp + "\n" + long + "\n" + lp + "\n"
	s := NewNDJSONStream(NewRewriterFor(FormatOllama, round2, 1), 100)
	var out []byte
	for i := 0; i < len(in); i += 7 {
		out = s.Write(out, []byte(in[i:min(i+7, len(in))]), i+7 >= len(in))
	}
	lpR := `{"logprobs":[{"token":"a","logprob":-0.12,"top_logprobs":[]}]}`
	if want := lpR + "\n" + lpR + "\n"; string(out) != want {
		t.Fatalf("\ngot  %q\nwant %q", out, want)
	}
	if st := s.Stats(); st.Oversize != 1 || st.FailedOpen || s.Held() != 0 {
		t.Fatalf("stats %+v, held %d", st, s.Held())
	}
}

// markText appends "+" to every piece of text and records where it was.
type markText struct{ locs []TextLoc }

func (m *markText) RewriteText(dst []byte, loc TextLoc, raw []byte) ([]byte, bool) {
	m.locs = append(m.locs, loc)
	dst = append(dst, raw...)
	return append(dst, '+'), true
}

// keepText sees every piece and replaces none.
type keepText struct{ n int }

func (k *keepText) RewriteText(dst []byte, _ TextLoc, _ []byte) ([]byte, bool) {
	k.n++
	return dst, false
}

func TestAnthropicText(t *testing.T) {
	in := readFixture(t, "anthropic_messages_stream.sse")
	rw := NewRewriterFor(FormatAnthropic, allow, 1)
	m := &markText{}
	rw.SetTextRewriter(m)
	out := NewStream(rw, 0).Write(nil, in, true)
	want := string(in)
	for _, r := range []struct{ from, to string }{
		{`"thinking":""`, `"thinking":"+"`},
		{`Rayleigh scattering."`, `Rayleigh scattering.+"`},
		{`"text":""`, `"text":"+"`},
		{`looks blue because"`, `looks blue because+"`},
		{`more than red ones."`, `more than red ones.+"`},
	} {
		if !strings.Contains(want, r.from) {
			t.Fatalf("fixture lacks %q", r.from)
		}
		want = strings.Replace(want, r.from, r.to, 1)
	}
	// Every content_block_stop asks the rewriter for the block's held
	// tail (End); markText answers "+", which goes out as a delta event
	// before the stop.
	for _, i := range []string{"0", "1", "2"} {
		stop := "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":" + i + "}"
		want = strings.Replace(want, stop, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":"+i+
			",\"delta\":{\"type\":\"text_delta\",\"text\":\"+\"}}\n\n"+stop, 1)
	}
	if string(out) != want {
		t.Fatalf("\ngot  %s\nwant %s", out, want)
	}
	wantLocs := []TextLoc{
		{Block: 0, Kind: TextReasoning}, {Block: 0, Kind: TextReasoning, Delta: true}, {Block: 0, Kind: TextOutput, Delta: true, End: true},
		{Block: 1, Kind: TextOutput}, {Block: 1, Kind: TextOutput, Delta: true}, {Block: 1, Kind: TextOutput, Delta: true},
		{Block: 1, Kind: TextOutput, Delta: true, End: true}, {Block: 2, Kind: TextOutput, Delta: true, End: true},
	}
	if len(m.locs) != len(wantLocs) {
		t.Fatalf("locations %+v", m.locs)
	}
	for i := range wantLocs {
		if m.locs[i] != wantLocs[i] {
			t.Fatalf("location %d: %+v, want %+v", i, m.locs[i], wantLocs[i])
		}
	}
	// Chunking changes nothing.
	rw2 := NewRewriterFor(FormatAnthropic, allow, 1)
	rw2.SetTextRewriter(&markText{})
	s := NewStream(rw2, 0)
	var got []byte
	for i := 0; i < len(in); i += 3 {
		got = s.Write(got, in[i:min(i+3, len(in))], i+3 >= len(in))
	}
	if !bytes.Equal(got, out) {
		t.Fatalf("chunked text rewrite differs")
	}

	body := readFixture(t, "anthropic_message_body.json")
	rw3 := NewRewriterFor(FormatAnthropic, allow, 1)
	m3 := &markText{}
	rw3.SetTextRewriter(m3)
	bout, err := rw3.Rewrite(nil, body)
	if err != nil {
		t.Fatal(err)
	}
	wantBody := strings.Replace(string(body), `shorter wavelengths scatter more."`, `shorter wavelengths scatter more.+"`, 1)
	wantBody = strings.Replace(wantBody, `more than red light."`, `more than red light.+"`, 1)
	if string(bout) != wantBody {
		t.Fatalf("body:\n%s", bout)
	}
	if len(m3.locs) != 2 || m3.locs[0] != (TextLoc{Block: 0, Kind: TextReasoning}) || m3.locs[1] != (TextLoc{Block: 1, Kind: TextOutput}) {
		t.Fatalf("body locations %+v", m3.locs)
	}

	k := &keepText{}
	rw4 := NewRewriterFor(FormatAnthropic, allow, 1)
	rw4.SetTextRewriter(k)
	// 5 pieces, and each of the 3 stops asks for a text and a thinking tail.
	if kout := NewStream(rw4, 0).Write(nil, in, true); !bytes.Equal(kout, in) || k.n != 5+3*2 {
		t.Fatalf("a text rewriter that replaces nothing changed the stream (%d pieces seen)", k.n)
	}
}
