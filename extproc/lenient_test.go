package extproc

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"path"
	"strings"
	"testing"
	"unicode/utf16"

	procv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/extproc/envoytest"
	"github.com/distillguard/distillguard/scoring"
)

// The differential test: requests are sent through the real server (the
// Envoy emulation in every body mode) to an upstream that reads them the
// way vLLM does (envoytest.LenientUpstream: Python's json.loads, pydantic
// lax), and whatever reaches it must be safe under the lenient reading for
// the tier the request was scored into: no logit_bias (or a field that
// acts like it) together with logprobs, no more alternatives than the cap,
// no more choices than the cap. A request may instead be refused; then the
// client must get an OpenAI-style error.

// diffPartial is a partial configuration: a file that changes one field
// of the default set and adds a stricter set by model, which inherits the
// rest.
const diffPartial = `
policies:
  default:
    allow:
      output: {round_decimals: 3}
  strict:
    allow:
      request: {max_top_logprobs: 1, drop_logit_bias: true, max_n: 1}
routes:
  - model: "secret-*"
    policy: strict
`

// diffHarness serves two servers, the embedded default and diffPartial,
// each for an allow and a degrade scorer.
type diffHarness struct {
	cfgs    [2]*config.Config
	servers [2][2]*harness // [config][verdict]
}

func newDiffHarness(t testing.TB) *diffHarness {
	partial, err := config.Parse([]byte(diffPartial))
	if err != nil {
		t.Fatal(err)
	}
	d := &diffHarness{cfgs: [2]*config.Config{testConfig(nil), partial}}
	for c := range d.cfgs {
		for v, verdict := range []scoring.Verdict{scoring.Allow, scoring.Degrade} {
			d.servers[c][v] = newHarness(t, d.cfgs[c], verdictScorer(verdict))
		}
	}
	return d
}

// diffPaths are the request paths tried: the endpoints, and spellings a
// lenient router reaches them by.
var diffPaths = [...]string{
	"/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/%63hat/completions",
	"//v1/chat/completions", "/v1/embeddings/../chat/completions", "/v1/chat/completions/", "/v1/chat/completions?x=1",
}

// diffInput is one differential case.
type diffInput struct {
	mode    procv3.ProcessingMode_BodySendMode
	degrade bool
	partial bool
	header  int // a content-type / content-encoding variant (diffHeaders)
	path    int
	body    []byte
}

func (in diffInput) encode() []byte {
	m := map[procv3.ProcessingMode_BodySendMode]byte{mBuffered: 0, mStreamed: 1, mDuplex: 2, mPartial: 3}[in.mode]
	f := m
	if in.degrade {
		f |= 4
	}
	if in.partial {
		f |= 8
	}
	f |= byte(in.header) << 4
	return append([]byte{f, byte(in.path)}, in.body...)
}

func decodeDiff(b []byte) (diffInput, bool) {
	if len(b) < 2 {
		return diffInput{}, false
	}
	modes := [...]procv3.ProcessingMode_BodySendMode{mBuffered, mStreamed, mDuplex, mPartial}
	return diffInput{mode: modes[b[0]&3], degrade: b[0]&4 != 0, partial: b[0]&8 != 0,
		header: int(b[0] >> 4), path: int(b[1]) % len(diffPaths), body: b[2:]}, true
}

// diffHeaders is the request's content-type and content-encoding (and the
// body as sent) for a header variant.
func diffHeaders(v int, body []byte) (http.Header, []byte) {
	h := http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer diff"}}
	switch v % 12 {
	case 1:
		h.Del("Content-Type")
	case 2:
		h.Set("Content-Type", "application/json; charset=utf-16")
	case 3:
		h.Set("Content-Type", "text/plain")
	case 4:
		h.Set("Content-Encoding", "identity")
	case 5:
		h.Set("Content-Encoding", "identity, foo")
	case 6:
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		zw.Write(body)
		zw.Close()
		h.Set("Content-Encoding", "gzip")
		body = b.Bytes()
	case 7:
		h.Set("Content-Encoding", "gzip") // a label only
	case 8:
		h["Content-Encoding"] = []string{"identity", "br"}
	case 9:
		h["Authorization"] = []string{"Bearer junk", "Bearer diff"}
	case 10:
		h.Set("Content-Type", "application/json; charset=\"UTF-8\"")
	case 11:
		h.Set("Content-Encoding", "x-gzip") // a label only
	}
	return h, body
}

// run sends in through its server and checks what reached the upstream
// and what reached the client.
func (d *diffHarness) run(t testing.TB, in diffInput) {
	c, v := 0, 0
	if in.partial {
		c = 1
	}
	if in.degrade {
		v = 1
	}
	h := d.servers[c][v]
	cfg := d.cfgs[c]
	verdict := []scoring.Verdict{scoring.Allow, scoring.Degrade}[v]
	up := &envoytest.LenientUpstream{}
	hdr, body := diffHeaders(in.header, in.body)
	ec := envoyConfig(in.mode, mStreamed)
	ec.BufferLimit = 4 << 20
	res, err := envoytest.New(h.client, ec).Do(context.Background(), &envoytest.Exchange{
		Path: diffPaths[in.path], Header: hdr, Body: body, RequestChunker: envoytest.Fixed(7),
		Upstream: up,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range res.Violations {
		t.Fatalf("protocol violation: %s", v)
	}
	for _, req := range up.Requests() {
		lp := lenientRoutePath(req.Path)
		for _, r := range req.Readings {
			a := cfg.Resolve(lp, r.Model, verdict)
			lim := envoytest.Limits{MaxTopLogprobs: a.Request.MaxTopLogprobs, MaxN: a.Request.MaxN, DropLogitBias: a.Request.DropLogitBias,
				DropLogitBiasWithLogprobs: a.Request.DropLogitBiasWithLogprobs, StripLogprobs: a.Request.StripLogprobs}
			if a.Reject != nil {
				t.Fatalf("a %v request reached the upstream", verdict)
			}
			if why := r.Violation(lim); why != "" {
				t.Fatalf("%s (policy %s, %v, %s %s) reached the upstream\nsent %q\nforwarded %q", why, a.Policy, verdict, in.mode, diffPaths[in.path], in.body, req.Body)
			}
		}
	}
	if len(up.Requests()) == 0 && res.Status < 400 {
		t.Fatalf("the upstream was not reached, yet the client got %d %q", res.Status, res.Body)
	}
	if res.Immediate != nil {
		var e apiError
		if err := json.Unmarshal(res.Body, &e); err != nil || e.Error.Message == "" || e.Error.Type == "" {
			t.Fatalf("refusal %d is not an OpenAI-style error: %q", res.Status, res.Body)
		}
	}
}

// lenientRoutePath is the path as the lenient upstream resolved it, for
// finding the route whose limits apply.
func lenientRoutePath(p string) string {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	if u, err := url.PathUnescape(p); err == nil {
		p = u
	}
	return path.Clean("/" + p)
}

const probeMessages = `"messages":[{"role":"user","content":"Tell me a story"}]`

// diffSeeds are the wrappings of one logit-bias probe (logprobs, 20
// alternatives, a bias) found to reach upstreams around a lenient reader,
// and their kin.
func diffSeeds() [][]byte {
	probe := `{"model":"m",` + probeMessages + `,"logprobs":true,"top_logprobs":20,"logit_bias":{"1":100},"n":4}`
	nest := strings.Repeat(`{"a":`, 130) + "1" + strings.Repeat("}", 130)
	u16 := func(s string, le bool) string {
		var b []byte
		for _, c := range utf16.Encode([]rune(s)) {
			if le {
				b = append(b, byte(c), byte(c>>8))
			} else {
				b = append(b, byte(c>>8), byte(c))
			}
		}
		return string(b)
	}
	bodies := []string{
		probe,
		`{"x":NaN,` + probe[1:],
		`{"x":Infinity,` + probe[1:],
		`{"x":-Infinity,` + probe[1:],
		"\xef\xbb\xbf" + probe,
		`{"x":` + nest + `,` + probe[1:],
		`{"model":"m",` + probeMessages + `,"log\u0070robs":true,"top_logprob\u0073":20,"logit\u005fbias":{"1":100}}`,
		`{"model":"m",` + probeMessages + `,"logprobs":"true","top_logprobs":"20","logit_bias":{"1":100}}`,
		`{"model":"m",` + probeMessages + `,"logprobs":1,"top_logprobs":20.0,"logit_bias":{"1":100}}`,
		`{"model":"m",` + probeMessages + `,"logprobs":true,"top_logprobs":2e1,"logit_bias":{"1":100}}`,
		`{"model":"m",` + probeMessages + `,"logprobs":true,"top_logprobs":" 20 ","logit_bias":{"1":100}}`,
		`{"model":"m",` + probeMessages + `,"logprobs":true,"top_logprobs":1e400,"logit_bias":{"1":100}}`,
		`{"model":"m",` + probeMessages + `,"logprobs":true,"top_logprobs":100000000000000000000000,"logit_bias":{"1":100}}`,
		`{"model":"m",` + probeMessages + `,"logprobs":true,"top_logprobs":1,"top_logprobs":20,"logit_bias":{"1":100}}`,
		`{"model":"m",` + probeMessages + `,"logit_bias":{},"logprobs":true,"logit_bias":{"1":100}}`,
		`{"model":"m",` + probeMessages + `,"logprobs":false,"logprobs":true,"logit_bias":{"1":100}}`,
		`{"model":"m",` + probeMessages + `,"logprobs":true,"allowed_token_ids":[1,2]}`,
		`{"model":"m",` + probeMessages + `,"logprobs":true,"bad_words":["a"]}`,
		`{"model":"m",` + probeMessages + `,"logprobs":true,"vllm_xargs":{"bias":1}}`,
		`{"model":"m",` + probeMessages + `,"echo":true,"logit_bias":{"1":100}}`,
		`{"model":"m",` + probeMessages + `,"prompt_logprobs":20,"logit_bias":{"1":100}}`,
		`{"model":"m",` + probeMessages + `,"logprobs":true,"n_probs":20,"top_n_tokens":20}`,
		`{"model":"m","prompt":"x","logprobs":"20","echo":"yes","logit_bias":{"1":100},"best_of":"5"}`,
		`{"model":"m","prompt":"x","logprobs":true,"logit_bias":{"1":100}}`,
		`{"model":"m","input":"x","include":["message.output_text.logprob\u0073"],"top_logprobs":20}`,
		`{"model":"secret-1",` + probeMessages + `,"logprobs":true,"top_logprobs":3,"logit_bias":{"1":1}}`,
		`{"model":"m","model":"secret-1",` + probeMessages + `,"logprobs":true,"top_logprobs":3,"logit_bias":{"1":1}}`,
		`{"model":"secret\u002d1",` + probeMessages + `,"logprobs":true,"top_logprobs":3,"logit_bias":{"1":1}}`,
		`{"model":"m",` + probeMessages + `,"logprobs":true,"top_logprobs":20,"logit_bias":{"1":100},"x":"\ud800"}`,
		`{"model":"m",` + probeMessages + `,"logprobs":true,"top_logprobs":20,"logit_bias":{"1":100},"\ud800":1}`,
		`{"model":"m",` + probeMessages + `,"logprobs":true,"top_logprobs":20,"logit_bias":{"1":100}}` + " \x00",
		`{"model":"m",` + probeMessages + `,"logprobs":true,"top_logprobs":20,"logit_bias":{"1":100},}`,
		u16(probe, true),
		u16(probe, false),
		"\xff\xfe" + u16(probe, true),
		"{\"model\":\"m\xff\"," + probeMessages + `,"logprobs":true,"logit_bias":{"1":100}}`,
		"{\"model\":\"m\xed\xa0\x80\"," + probeMessages + `,"logprobs":true,"logit_bias":{"1":100}}`,
		`{"model":"m",` + probeMessages + `,"logprobs":true,"top_logprobs":20,"logit_bias":{"1":100},"n":true,"best_of":2.0}`,
		`[` + probe + `]`,
		``,
	}
	var out [][]byte
	for _, b := range bodies {
		out = append(out, []byte(b))
	}
	return out
}

// FuzzLenientDifferential is the differential fuzz target: a request
// (mode, tier, configuration, headers, path, body) through the server to
// the lenient upstream (see run).
func FuzzLenientDifferential(f *testing.F) {
	for i, b := range diffSeeds() {
		for _, m := range []procv3.ProcessingMode_BodySendMode{mBuffered, mStreamed, mDuplex} {
			f.Add(diffInput{mode: m, degrade: i%2 == 1, partial: i%3 == 0, header: i % 12, path: i % len(diffPaths), body: b}.encode())
		}
	}
	d := newDiffHarness(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		in, ok := decodeDiff(data)
		if !ok {
			return
		}
		d.run(t, in)
	})
}

// TestLenientDifferential runs every seed wrapping in every mode, header
// variant, path and tier, then 3,000 generated requests (a seeded grammar
// of field spellings, value forms, duplicates, extra members, encodings).
func TestLenientDifferential(t *testing.T) {
	d := newDiffHarness(t)
	n := 0
	for i, b := range diffSeeds() {
		for _, m := range []procv3.ProcessingMode_BodySendMode{mBuffered, mStreamed, mDuplex, mPartial} {
			for hv := range 12 {
				in := diffInput{mode: m, degrade: (i+hv)%2 == 1, partial: hv%3 == 0, header: hv, path: (i + hv) % len(diffPaths), body: b}
				d.run(t, in)
				n++
			}
		}
	}
	r := rand.New(rand.NewPCG(3, 4))
	for range 3000 {
		in := diffInput{
			mode:    []procv3.ProcessingMode_BodySendMode{mBuffered, mStreamed, mDuplex, mPartial}[r.IntN(4)],
			degrade: r.IntN(2) == 0, partial: r.IntN(2) == 0, header: r.IntN(12), path: r.IntN(len(diffPaths)),
			body: genRequest(r),
		}
		d.run(t, in)
		n++
	}
	t.Logf("%d exchanges", n)
}

// genRequest writes a request from a grammar of the spellings a lenient
// reader takes for the guarded fields.
func genRequest(r *rand.Rand) []byte {
	pick := func(s ...string) string { return s[r.IntN(len(s))] }
	name := func(n string) string {
		switch r.IntN(4) {
		case 0:
			// Escape one character.
			i := r.IntN(len(n))
			return n[:i] + fmt.Sprintf(`\u%04x`, n[i]) + n[i+1:]
		case 1:
			return strings.ToUpper(n[:1]) + n[1:] // a different name
		}
		return n
	}
	intv := func() string {
		return pick("20", "20.0", "2e1", `"20"`, `" 20 "`, `"+20"`, `"2_0"`, `"20.00"`, "true", "1", "0", "-1", "3", `"3"`, "1e400", "null", "[20]", `{"v":20}`, "200000000000000000000")
	}
	boolv := func() string {
		return pick("true", "false", `"true"`, `"yes"`, `"on"`, `"1"`, "1", "1.0", "0", `"false"`, "null", `"TRUE"`, `"t"`)
	}
	biasv := func() string {
		return pick(`{"1":100}`, `{}`, `{"1":"100"}`, `[[1,100]]`, `null`, `{"1":100,"1":-100}`, `"x"`)
	}
	var members []string
	add := func(k, v string) { members = append(members, `"`+name(k)+`":`+v) }
	add("model", pick(`"m"`, `"secret-x"`, `"secret\u002dx"`, `1`))
	members = append(members, probeMessages)
	for range 1 + r.IntN(6) {
		switch r.IntN(12) {
		case 0:
			add("logprobs", boolv())
		case 1:
			add("logprobs", intv())
		case 2:
			add("top_logprobs", intv())
		case 3:
			add("logit_bias", biasv())
		case 4:
			add("n", intv())
		case 5:
			add("best_of", intv())
		case 6:
			add("prompt_logprobs", intv())
		case 7:
			add("echo", boolv())
		case 8:
			add(pick("allowed_token_ids", "bad_words", "logits_processors"), pick(`[1]`, `[]`, `["a"]`, `null`, `{}`))
		case 9:
			add("include", pick(`["message.output_text.logprobs"]`, `["message.output_text.logprob\u0073"]`, `[1]`, `"x"`))
		case 10:
			members = append(members, pick(`"x":NaN`, `"x":1e999`, `"x":"\ud800"`, `"x":[[[[1]]]]`, `"\u0000":1`))
		default:
			add(pick("n_probs", "top_n_tokens", "stream", "max_tokens", "temperature"), pick(intv(), boolv()))
		}
	}
	r.Shuffle(len(members), func(i, j int) { members[i], members[j] = members[j], members[i] })
	body := "{" + strings.Join(members, pick(",", " , ", ",\n")) + "}"
	switch r.IntN(10) {
	case 0:
		body = "\xef\xbb\xbf" + body
	case 1:
		body = " " + body + "\n"
	}
	return []byte(body)
}
