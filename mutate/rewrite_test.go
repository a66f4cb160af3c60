package mutate

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
)

func pol(f func(*OutputPolicy)) OutputPolicy {
	p := Passthrough()
	f(&p)
	return p
}

var (
	round2 = pol(func(p *OutputPolicy) { p.RoundDecimals = 2 })
	allow  = OutputPolicy{RoundDecimals: 2, MaxAlternatives: 5, EmbeddingDecimals: -1}
	strip  = pol(func(p *OutputPolicy) { p.StripLogprobs = true })
)

func TestRewriteTable(t *testing.T) {
	tests := []struct {
		name string
		p    OutputPolicy
		in   string
		want string
	}{
		{
			name: "chat round",
			p:    round2,
			in:   `{"choices":[{"index":0,"logprobs":{"content":[{"token":"a","logprob":-0.123456,"bytes":[97],"top_logprobs":[{"token":"a","logprob":-0.123456,"bytes":[97]},{"token":"b","logprob":-2.5,"bytes":[98]}]}]}}]}`,
			want: `{"choices":[{"index":0,"logprobs":{"content":[{"token":"a","logprob":-0.12,"bytes":[97],"top_logprobs":[{"token":"a","logprob":-0.12,"bytes":[97]},{"token":"b","logprob":-2.5,"bytes":[98]}]}]}}]}`,
		},
		{
			name: "round never prints -0 and keeps exact values' bytes",
			p:    round2,
			in:   `{"choices":[{"logprobs":{"content":[{"token":"a","logprob":-0.004,"top_logprobs":[{"token":"a","logprob":-1e-7},{"token":"b","logprob":-0.50},{"token":"c","logprob":-9999},{"token":"d","logprob":null},{"token":"e","logprob":-1.23456E+1}]}]}}]}`,
			want: `{"choices":[{"logprobs":{"content":[{"token":"a","logprob":0,"top_logprobs":[{"token":"a","logprob":0},{"token":"b","logprob":-0.50},{"token":"c","logprob":-9999},{"token":"d","logprob":null},{"token":"e","logprob":-12.35}]}]}}]}`,
		},
		{
			name: "cap alternatives keeps pretty-printing",
			p:    pol(func(p *OutputPolicy) { p.MaxAlternatives = 2 }),
			in:   "{\"choices\": [{\"logprobs\": {\"content\": [{\"token\": \"a\", \"logprob\": -1, \"top_logprobs\": [\n  {\"token\": \"a\", \"logprob\": -1},\n  {\"token\": \"b\", \"logprob\": -2},\n  {\"token\": \"c\", \"logprob\": -3}\n ]}]}}]}",
			want: "{\"choices\": [{\"logprobs\": {\"content\": [{\"token\": \"a\", \"logprob\": -1, \"top_logprobs\": [\n  {\"token\": \"a\", \"logprob\": -1},\n  {\"token\": \"b\", \"logprob\": -2}\n ]}]}}]}",
		},
		{
			name: "zero alternatives",
			p:    pol(func(p *OutputPolicy) { p.MaxAlternatives = 0 }),
			in:   `{"choices":[{"logprobs":{"content":[{"token":"a","logprob":-1,"top_logprobs":[ {"token":"a","logprob":-1} , {"token":"b","logprob":-2} ]}],"refusal":[{"token":"r","logprob":-1,"top_logprobs":[{"token":"r","logprob":-1}]}]}}]}`,
			want: `{"choices":[{"logprobs":{"content":[{"token":"a","logprob":-1,"top_logprobs":[]}],"refusal":[{"token":"r","logprob":-1,"top_logprobs":[]}]}}]}`,
		},
		{
			name: "fewer alternatives than the cap",
			p:    allow,
			in:   `{"choices":[{"logprobs":{"content":[{"token":"a","logprob":-1,"top_logprobs":[{"token":"a","logprob":-1}]}]}}]}`,
			want: `{"choices":[{"logprobs":{"content":[{"token":"a","logprob":-1,"top_logprobs":[{"token":"a","logprob":-1}]}]}}]}`,
		},
		{
			name: "strip chat and prompt logprobs",
			p:    strip,
			in:   `{"choices":[{"index":0,"logprobs":{"content":[{"token":"a","logprob":-1}]},"finish_reason":null},{"index":1,"logprobs":null}],"prompt_logprobs":[null,{"1":{"logprob":-1,"rank":1,"decoded_token":"x"}}]}`,
			want: `{"choices":[{"index":0,"logprobs":null,"finish_reason":null},{"index":1,"logprobs":null}],"prompt_logprobs":null}`,
		},
		{
			name: "strip responses logprobs",
			p:    strip,
			in:   `{"type":"response.output_text.delta","output_index":0,"content_index":0,"delta":"a","logprobs":[{"token":"a","logprob":-1,"top_logprobs":[]}]}`,
			want: `{"type":"response.output_text.delta","output_index":0,"content_index":0,"delta":"a","logprobs":[]}`,
		},
		{
			name: "strip response object",
			p:    strip,
			in:   `{"type":"response.completed","response":{"output":[{"type":"message","content":[{"type":"output_text","text":"a","logprobs":[{"token":"a","logprob":-1}]}]}]}}`,
			want: `{"type":"response.completed","response":{"output":[{"type":"message","content":[{"type":"output_text","text":"a","logprobs":[]}]}]}}`,
		},
		{
			name: "responses part and item",
			p:    allow,
			in:   `{"type":"response.content_part.done","output_index":0,"content_index":0,"part":{"type":"output_text","logprobs":[{"token":"a","logprob":-0.1234}]}}`,
			want: `{"type":"response.content_part.done","output_index":0,"content_index":0,"part":{"type":"output_text","logprobs":[{"token":"a","logprob":-0.12}]}}`,
		},
		{
			name: "legacy completion: k largest, member order kept",
			p:    OutputPolicy{RoundDecimals: 1, MaxAlternatives: 2, EmbeddingDecimals: -1},
			in:   `{"choices":[{"text":"x","logprobs":{"tokens":["a","b"],"token_logprobs":[null,-0.26],"top_logprobs":[null,{"c": -3.0, "a": -0.26, "d": -5, "b": -1.04}],"text_offset":[0,1]}}]}`,
			want: `{"choices":[{"text":"x","logprobs":{"tokens":["a","b"],"token_logprobs":[null,-0.3],"top_logprobs":[null,{"a": -0.3, "b": -1}],"text_offset":[0,1]}}]}`,
		},
		{
			name: "legacy completion: zero alternatives",
			p:    pol(func(p *OutputPolicy) { p.MaxAlternatives = 0 }),
			in:   `{"choices":[{"logprobs":{"tokens":["a"],"token_logprobs":[-0.26],"top_logprobs":[{"c":-3.0,"a":-0.26}],"text_offset":[0]}}]}`,
			want: `{"choices":[{"logprobs":{"tokens":["a"],"token_logprobs":[-0.26],"top_logprobs":[{}],"text_offset":[0]}}]}`,
		},
		{
			name: "prompt_logprobs per choice",
			p:    OutputPolicy{RoundDecimals: 1, MaxAlternatives: 1, EmbeddingDecimals: -1},
			in:   `{"choices":[{"index":0,"prompt_logprobs":[null,{"791":{"logprob":-7.25,"rank":3,"decoded_token":"The"},"9906":{"logprob":-1.55,"rank":1,"decoded_token":"Hi"}}]}]}`,
			want: `{"choices":[{"index":0,"prompt_logprobs":[null,{"9906":{"logprob":-1.6,"rank":1,"decoded_token":"Hi"}}]}]}`,
		},
		{
			name: "escaped and unicode tokens untouched",
			p:    round2,
			in:   `{"choices":[{"logprobs":{"content":[{"token":"\"\\\u00e9\n","logprob":-0.555,"bytes":[34,92,195,169,10],"top_logprobs":[]}]}}],"note":"logprobs\" in text"}`,
			want: `{"choices":[{"logprobs":{"content":[{"token":"\"\\\u00e9\n","logprob":-0.56,"bytes":[34,92,195,169,10],"top_logprobs":[]}]}}],"note":"logprobs\" in text"}`,
		},
		{
			name: "invalid UTF-8 in content copied through",
			p:    round2,
			in:   "{\"choices\":[{\"delta\":{\"content\":\"\xff\xfe\"},\"logprobs\":{\"content\":[{\"token\":\"\xc3\",\"logprob\":-0.111}]}}]}",
			want: "{\"choices\":[{\"delta\":{\"content\":\"\xff\xfe\"},\"logprobs\":{\"content\":[{\"token\":\"\xc3\",\"logprob\":-0.11}]}}]}",
		},
		{
			name: "no logprobs: untouched",
			p:    allow,
			in:   `{"id":"x","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}`,
			want: `{"id":"x","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}`,
		},
		{
			name: "passthrough policy",
			p:    Passthrough(),
			in:   `{"choices":[{"logprobs":{"content":[{"token":"a","logprob":-0.123456}]}}]}`,
			want: `{"choices":[{"logprobs":{"content":[{"token":"a","logprob":-0.123456}]}}]}`,
		},
		{
			name: "embedding floats",
			p:    pol(func(p *OutputPolicy) { p.EmbeddingDecimals = 3 }),
			in:   `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.0123456,-0.98765,-1e-7,2.5,1E2]}]}`,
			want: `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.012,-0.988,0,2.5,1E2]}]}`,
		},
		{
			name: "logprobs policy leaves embeddings",
			p:    allow,
			in:   `{"object":"list","data":[{"object":"embedding","embedding":[0.0123456]}]}`,
			want: `{"object":"list","data":[{"object":"embedding","embedding":[0.0123456]}]}`,
		},
		{
			name: "duplicate top_logprobs are both capped",
			p:    pol(func(p *OutputPolicy) { p.MaxAlternatives = 1 }),
			in:   `{"choices":[{"logprobs":{"content":[{"top_logprobs":[{"logprob":-1},{"logprob":-2}],"logprob":-1,"top_logprobs":[{"logprob":-1},{"logprob":-3}]}]}}]}`,
			want: `{"choices":[{"logprobs":{"content":[{"top_logprobs":[{"logprob":-1}],"logprob":-1,"top_logprobs":[{"logprob":-1}]}]}}]}`,
		},
		{
			name: "unexpected types pass through",
			p:    allow,
			in:   `{"choices":[{"logprobs":{"content":"x","refusal":7}},{"logprobs":[1,2]},3],"prompt_logprobs":{"a":1},"logprobs":{"x":1}}`,
			want: `{"choices":[{"logprobs":{"content":"x","refusal":7}},{"logprobs":[1,2]},3],"prompt_logprobs":{"a":1},"logprobs":{"x":1}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRewriter(tt.p, 1)
			got, err := r.Rewrite([]byte("prefix:"), []byte(tt.in))
			if err != nil {
				t.Fatalf("Rewrite: %v", err)
			}
			if string(got) != "prefix:"+tt.want {
				t.Errorf("got\n%s\nwant\n%s", got[len("prefix:"):], tt.want)
			}
			if json.Valid([]byte(tt.in)) && !json.Valid(got[len("prefix:"):]) {
				t.Errorf("output is not valid JSON")
			}
			st := r.Stats()
			if changed := tt.in != tt.want; (st.Rewritten == 1) != changed {
				t.Errorf("Stats.Rewritten = %d, changed = %v", st.Rewritten, changed)
			}
		})
	}
}

func TestRewriteInvalid(t *testing.T) {
	deep := strings.Repeat(`{"a":`, 130) + "1" + strings.Repeat("}", 130)
	deepLP := `{"logprobs":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + "}"
	okDepth := strings.Repeat(`{"logprobs":`, 128) + "1" + strings.Repeat("}", 128)
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"array", `[{"logprobs":1}]`, false},
		{"string", `"logprobs"`, false},
		{"empty", ``, false},
		{"truncated", `{"choices":[{"logprobs":{"content":[{"token":"a","logprob":-0.1`, false},
		{"trailing", `{"choices":[],"logprobs":[]} {}`, false},
		{"bad number", `{"choices":[{"logprobs":{"content":[{"logprob":-.5}]}}]}`, false},
		{"bad escape", `{"choices":[{"logprobs":{"content":[{"token":"\x","logprob":-1}]}}]}`, false},
		{"control char", "{\"logprobs\":[{\"token\":\"a\tb\"}]}", false},
		{"missing comma", `{"logprobs":[{"token":"a" "logprob":-1}]}`, false},
		{"trailing comma", `{"logprobs":[{"token":"a","logprob":-1},]}`, false},
		{"deep", deep + `"logprobs"`[:0], false},
		{"deep logprobs", deepLP, false},
		{"depth 128 ok", okDepth, true},
		{"whitespace around", " \r\n\t{\"logprobs\":[]} \n", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.in
			if tt.name == "deep" {
				in = `{"logprobs":[],"x":` + deep + "}"
			}
			r := NewRewriter(allow, 1)
			got, err := r.Rewrite(nil, []byte(in))
			if string(got) != in {
				t.Errorf("output changed:\n%s", got)
			}
			if tt.ok != (err == nil) {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrNotJSON) {
				t.Errorf("error %v does not wrap ErrNotJSON", err)
			}
			if !tt.ok && r.Stats().NotJSON != 1 {
				t.Errorf("NotJSON = %d, want 1", r.Stats().NotJSON)
			}
			if tt.ok && !json.Valid([]byte(in)) {
				t.Errorf("accepted a document encoding/json rejects")
			}
		})
	}
}

func TestPerturb(t *testing.T) {
	doc := func(index string) []byte {
		return []byte(`{"choices":[{` + index + `"logprobs":{"content":[
			{"token":"a","logprob":-0.01,"top_logprobs":[{"token":"a","logprob":-0.01},{"token":"b","logprob":-0.02},{"token":"c","logprob":-4}]},
			{"token":"z","logprob":-3,"top_logprobs":[{"token":"y","logprob":-0.5},{"token":"z","logprob":-3}]},
			{"token":"q","logprob":-0.001,"top_logprobs":[{"token":"r","logprob":-0.002}]}]}}]}`)
	}
	p := pol(func(p *OutputPolicy) { p.Perturb = 0.5 })
	type entry struct {
		Token   string  `json:"token"`
		Logprob float64 `json:"logprob"`
		Top     []struct {
			Token   string  `json:"token"`
			Logprob float64 `json:"logprob"`
		} `json:"top_logprobs"`
	}
	decode := func(b []byte) []entry {
		var v struct {
			Choices []struct {
				Logprobs struct {
					Content []entry `json:"content"`
				} `json:"logprobs"`
			} `json:"choices"`
		}
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("output not JSON: %v\n%s", err, b)
		}
		return v.Choices[0].Logprobs.Content
	}
	a, _ := NewRewriter(p, 7).Rewrite(nil, doc(`"index":0,`))
	b, _ := NewRewriter(p, 7).Rewrite(nil, doc(``))
	c, _ := NewRewriter(p, 8).Rewrite(nil, doc(`"index":0,`))
	after := doc(``)
	after = append(after[:len(after)-3:len(after)-3], `,"index":0}]}`...)
	d, _ := NewRewriter(p, 7).Rewrite(nil, after)
	ea, eb, ec, ed := decode(a), decode(b), decode(c), decode(d)
	if ea[0].Logprob != eb[0].Logprob || ea[1].Logprob != eb[1].Logprob {
		t.Errorf("index 0 given or defaulted differ")
	}
	for i := range ea {
		if ea[i].Logprob != ed[i].Logprob {
			t.Errorf("entry %d: index after logprobs gives %v, before %v", i, ed[i].Logprob, ea[i].Logprob)
		}
	}
	if ea[0].Logprob == ec[0].Logprob && ea[1].Logprob == ec[1].Logprob {
		t.Errorf("different seeds gave the same noise")
	}
	if ea[0].Logprob == -0.01 && ea[1].Logprob == -3 {
		t.Errorf("no noise applied")
	}
	for i, e := range ea {
		if e.Logprob > 0 {
			t.Errorf("entry %d: logprob %v > 0", i, e.Logprob)
		}
		for j, alt := range e.Top {
			if alt.Logprob > 0 {
				t.Errorf("entry %d alt %d: %v > 0", i, j, alt.Logprob)
			}
			if j > 0 && alt.Logprob > e.Top[j-1].Logprob {
				t.Errorf("entry %d: alternatives out of order: %v", i, e.Top)
			}
		}
	}
	// The chosen token listed first keeps the same value as its alternative.
	if ea[0].Logprob != ea[0].Top[0].Logprob {
		t.Errorf("chosen %v != its alternative %v", ea[0].Logprob, ea[0].Top[0].Logprob)
	}
	// q was the most likely (not listed): alternatives stay at or below it.
	if ea[2].Top[0].Logprob > ea[2].Logprob {
		t.Errorf("chosen top token %v ranked below alternative %v", ea[2].Logprob, ea[2].Top[0].Logprob)
	}
}

func TestPerturbPositionsAcrossDocuments(t *testing.T) {
	p := OutputPolicy{RoundDecimals: 3, MaxAlternatives: -1, Perturb: 0.4, EmbeddingDecimals: -1}
	ent := func(tok string, lp string) string {
		return `{"token":"` + tok + `","logprob":` + lp + `,"top_logprobs":[{"token":"` + tok + `","logprob":` + lp + `}]}`
	}
	toks := []string{"a", "b", "c", "d"}
	lps := []string{"-0.1", "-0.2", "-0.3", "-0.4"}
	var all []string
	for i := range toks {
		all = append(all, ent(toks[i], lps[i]))
	}
	body := `{"object":"chat.completion","choices":[{"index":1,"logprobs":{"content":[` + strings.Join(all, ",") + `]}}]}`
	rb := NewRewriter(p, 99)
	gotBody, err := rb.Rewrite(nil, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	rs := NewRewriter(p, 99)
	var values []float64
	for i := range toks {
		chunk := `{"object":"chat.completion.chunk","choices":[{"index":1,"logprobs":{"content":[` + all[i] + `]}}]}`
		// An interleaved choice must not shift choice 1's positions.
		other := `{"choices":[{"index":0,"logprobs":{"content":[` + all[i] + `]}}]}`
		if _, err := rs.Rewrite(nil, []byte(other)); err != nil {
			t.Fatal(err)
		}
		out, err := rs.Rewrite(nil, []byte(chunk))
		if err != nil {
			t.Fatal(err)
		}
		values = append(values, logprobsOf(t, out)...)
	}
	want := logprobsOf(t, gotBody)
	if len(values) != len(want) {
		t.Fatalf("%d values streamed, %d in body", len(values), len(want))
	}
	for i := range want {
		if values[i] != want[i] {
			t.Errorf("value %d: stream %v, body %v", i, values[i], want[i])
		}
	}
}

// logprobsOf returns every chat logprob value in doc, in order.
func logprobsOf(t *testing.T, doc []byte) []float64 {
	t.Helper()
	var v struct {
		Choices []struct {
			Logprobs *struct {
				Content []struct {
					Logprob float64 `json:"logprob"`
					Top     []struct {
						Logprob float64 `json:"logprob"`
					} `json:"top_logprobs"`
				} `json:"content"`
			} `json:"logprobs"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(doc, &v); err != nil {
		t.Fatalf("%v\n%s", err, doc)
	}
	var out []float64
	for _, c := range v.Choices {
		if c.Logprobs == nil {
			continue
		}
		for _, e := range c.Logprobs.Content {
			out = append(out, e.Logprob)
			for _, a := range e.Top {
				out = append(out, a.Logprob)
			}
		}
	}
	return out
}

func TestEmbeddingBase64(t *testing.T) {
	vals := []float32{0.0123456, -0.98765, 1e-7, -1e-7, 3.14159, float32(math.Inf(1)), 1e30}
	raw := make([]byte, 4*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	enc := base64.StdEncoding.EncodeToString(raw)
	doc := `{"object":"list","data":[{"object":"embedding","index":0,"embedding":"` + enc + `"}],"model":"m"}`
	r := NewRewriter(pol(func(p *OutputPolicy) { p.EmbeddingDecimals = 2 }), 0)
	out, err := r.Rewrite(nil, []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(doc) {
		t.Fatalf("length changed: %d -> %d", len(doc), len(out))
	}
	var v struct {
		Data []struct {
			Embedding string `json:"embedding"`
		} `json:"data"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatal(err)
	}
	got, err := base64.StdEncoding.DecodeString(v.Data[0].Embedding)
	if err != nil {
		t.Fatal(err)
	}
	want := []float32{0.01, -0.99, 0, 0, 3.14, float32(math.Inf(1)), 1e30}
	for i := range want {
		g := math.Float32frombits(binary.LittleEndian.Uint32(got[4*i:]))
		if g != want[i] || math.Signbit(float64(g)) != math.Signbit(float64(want[i])) {
			t.Errorf("value %d: got %v want %v", i, g, want[i])
		}
	}
	// Not canonical base64, or escaped: left alone.
	for _, s := range []string{"AAAA", "AAAAAA==", `AAAA\/AA`, "!!!!"} {
		d := `{"data":[{"embedding":"` + s + `"}]}`
		out, err := r.Rewrite(nil, []byte(d))
		if err != nil || string(out) != d {
			t.Errorf("%q: got %s, %v", s, out, err)
		}
	}
}

func TestCountersBounded(t *testing.T) {
	r := NewRewriter(pol(func(p *OutputPolicy) { p.Perturb = 0.1 }), 1)
	for i := 0; i < 3*maxCounters; i++ {
		doc := `{"choices":[{"index":` + itoa(i) + `,"logprobs":{"content":[{"token":"a","logprob":-1}]}}]}`
		if _, err := r.Rewrite(nil, []byte(doc)); err != nil {
			t.Fatal(err)
		}
	}
	if len(r.ctr) > maxCounters {
		t.Fatalf("%d counters kept, bound %d", len(r.ctr), maxCounters)
	}
}

func itoa(i int) string { return string(appendScaled(nil, int64(i), 0)) }

func TestHasLiveKey(t *testing.T) {
	tests := []struct {
		doc  string
		want bool
	}{
		{`{"logprobs":null}`, false},
		{`{"logprobs" : null,"x":{"logprobs":null}}`, false},
		{`{"logprobs":{"content":[]}}`, true},
		{`{"logprobs":null,"prompt_logprobs":[null]}`, true},
		{`{"delta":{"content":"logprobs"}}`, false},
		{`{"delta":{"content":"\"logprobs\": [1]"}}`, false},
		{`{"logprobs":nul`, true}, // conservative: the parse rejects it
		{`{"logprobs":`, true},
		{`{"a":"x"}`, false},
	}
	for _, tt := range tests {
		if got := hasLiveKey([]byte(tt.doc), keyLogprobs); got != tt.want {
			t.Errorf("%s: got %v", tt.doc, got)
		}
	}
	if hasLiveKey([]byte(`{"object":"embedding","x":1}`), keyEmbedding) {
		t.Errorf(`"object":"embedding" is not a key`)
	}
	if !hasLiveKey([]byte(`{"object":"embedding","embedding":[1]}`), keyEmbedding) {
		t.Errorf("embedding key missed")
	}
}
