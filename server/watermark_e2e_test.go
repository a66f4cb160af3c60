package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	procv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/evidence"
	"github.com/distillguard/distillguard/extproc/envoytest"
	"github.com/distillguard/distillguard/internal/corpus"
	"github.com/distillguard/distillguard/internal/corpus/corpustest"
	"github.com/distillguard/distillguard/internal/tokens"
	"github.com/distillguard/distillguard/watermark"
)

// heldOut reads n gsm8k worked answers: text the lexicon's context
// statistics were not built from (those come from the HH-RLHF turns and
// the self-instruct tasks; watermark/contexts_table.go).
func heldOut(t *testing.T, n int) []string {
	t.Helper()
	dir := corpustest.Require(t)
	f, err := os.Open(filepath.Join(dir, corpus.QuestionsFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 4<<20)
	var out []string
	for sc.Scan() && len(out) < n {
		var m struct {
			Answer string `json:"answer"`
		}
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m.Answer)
	}
	if len(out) < n {
		t.Fatalf("%d answers in the corpus, want %d", len(out), n)
	}
	return out
}

// topOf is the upstream's top_logprobs at a position: the sampled token
// first, then three alternatives, values fixed by the position.
func topOf(tok string, pos int) []watermark.TokenLogprob {
	return []watermark.TokenLogprob{
		{Token: tok, Logprob: -0.05},
		{Token: fmt.Sprintf(" alt%d", pos%97), Logprob: -1.25},
		{Token: fmt.Sprintf(" other%d", pos%89), Logprob: -2.5},
		{Token: fmt.Sprintf(" rare%d", pos%83), Logprob: -4},
	}
}

// corpusUpstream answers chat completions by streaming the answer its
// prompt names ("problem N"), token by token, with logprobs.
type corpusUpstream struct{ texts []string }

// problem reads which of n texts a request's last message names
// ("problem N"), answering 400 itself when it names none.
func problem(w http.ResponseWriter, r *http.Request, n int) (int, bool) {
	var req struct {
		Messages []struct {
			Content string `json:"content"`
		} `json:"messages"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Messages) == 0 {
		http.Error(w, "bad request", http.StatusBadRequest)
		return 0, false
	}
	i, err := strconv.Atoi(strings.TrimPrefix(req.Messages[len(req.Messages)-1].Content, "problem "))
	if err != nil || i < 0 || i >= n {
		http.Error(w, "unknown problem", http.StatusBadRequest)
		return 0, false
	}
	return i, true
}

func (u corpusUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	i, ok := problem(w, r, len(u.texts))
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	var b bytes.Buffer
	b.WriteString(`data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}` + "\n\n")
	for pos, tok := range tokens.Split(u.texts[i]) {
		top, _ := json.Marshal(topOf(tok, pos))
		q, _ := json.Marshal(tok)
		fmt.Fprintf(&b, `data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":%s},"logprobs":{"content":[{"token":%s,"logprob":-0.05,"top_logprobs":%s}]},"finish_reason":null}]}`+"\n\n", q, q, top)
	}
	b.WriteString(`data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}` + "\n\ndata: [DONE]\n\n")
	_, _ = w.Write(b.Bytes())
}

type chunk struct {
	Choices []struct {
		Delta struct {
			Content *string `json:"content"`
		} `json:"delta"`
		Logprobs *struct {
			Content []struct {
				Token string                   `json:"token"`
				Top   []watermark.TokenLogprob `json:"top_logprobs"`
			} `json:"content"`
		} `json:"logprobs"`
	} `json:"choices"`
}

// sseChunks decodes the chat chunks of an SSE body (every data event but
// [DONE]).
func sseChunks(t *testing.T, body []byte) []chunk {
	t.Helper()
	var out []chunk
	for _, line := range bytes.Split(body, []byte("\n")) {
		p, ok := bytes.CutPrefix(line, []byte("data: "))
		if !ok || string(p) == "[DONE]" {
			continue
		}
		var ch chunk
		if err := json.Unmarshal(p, &ch); err != nil {
			t.Fatalf("event %s: %v", p, err)
		}
		out = append(out, ch)
	}
	return out
}

// texts20 joins held-out answers twenty to a response: the maths text has
// few substitutable words, and the verifier needs a few hundred
// candidates for a small p-value.
func texts20(answers []string) []string {
	var texts []string
	for i := 0; i < len(answers); i += 20 {
		texts = append(texts, strings.Join(answers[i:min(i+20, len(answers))], "\n\n"))
	}
	return texts
}

// writeWatermarkKey writes a key set with one active key, id, of 32 bytes
// drawn from seed, and returns its path.
func writeWatermarkKey(t *testing.T, dir, id string, seed uint64) string {
	t.Helper()
	r := rand.New(rand.NewPCG(2026, seed))
	secret := make([]byte, 32)
	for i := range secret {
		secret[i] = byte(r.Uint32())
	}
	path := filepath.Join(dir, "wm.key")
	if err := os.WriteFile(path, []byte(watermark.KeySetHeader+"\n"+id+" "+fmt.Sprintf("%x", secret)+" active\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// markedConfig marks every response under /v1/ with the key set in
// wmFile (the allow tier watermarks, probation off); extra is more YAML.
func markedConfig(t *testing.T, wmFile, extra string) *config.Config {
	t.Helper()
	return markedConfigWM(t, wmFile, "", extra)
}

// markedConfigWM is markedConfig with more watermark settings (wm: flow
// mapping entries, each after a comma).
func markedConfigWM(t *testing.T, wmFile, wm, extra string) *config.Config {
	t.Helper()
	return parse(t, fmt.Sprintf(`
watermark: {key_file: %q%s}
scoring: {secret: e2e-secret-e2e-secret-e2e-secret}
policies:
  marked:
    allow: {output: {watermark: true}}
    probation: null
routes:
  - path_prefix: /v1/
    policy: marked
`, wmFile, wm)+extra)
}

// markingEnvoy is the emulated Envoy of the watermark tests: request body
// buffered, response body streamed, as envoy/envoy.yaml configures them.
func markingEnvoy(t *testing.T, s *Server, source string) *envoytest.Envoy {
	t.Helper()
	return envoytest.New(extprocv3.NewExternalProcessorClient(dial(t, s.GRPCAddr())), envoytest.Config{
		ProcessingMode: &procv3.ProcessingMode{
			RequestHeaderMode: procv3.ProcessingMode_SEND, ResponseHeaderMode: procv3.ProcessingMode_SEND,
			RequestBodyMode: procv3.ProcessingMode_BUFFERED, ResponseBodyMode: procv3.ProcessingMode_STREAMED,
			RequestTrailerMode: procv3.ProcessingMode_SKIP, ResponseTrailerMode: procv3.ProcessingMode_SKIP,
		},
		AllowModeOverride: true, SendProtocolConfig: true, RequestAttributes: true,
		SourceAddress: source, ReceivingNamespaces: []string{"distillguard"},
	})
}

// chunkings runs exchange c = 0, 1, 2 of text i through env: whole, then
// cut anywhere (inside events, words, escapes and UTF-8 sequences) at up
// to base bytes and base+span, with empty chunks on the last. Every one
// must succeed with the same body, which it returns; each result is
// handed to check first.
func chunkings(t *testing.T, env *envoytest.Envoy, i, base, span int, ex func(c int) *envoytest.Exchange, check func(res *envoytest.Result)) []byte {
	t.Helper()
	var first []byte
	for c := 0; c < 3; c++ {
		x := ex(c)
		x.ResponseChunker = envoytest.Whole()
		if c > 0 {
			x.ResponseChunker = envoytest.Random(uint64(i*10+c), base+span*(c-1), c == 2)
		}
		res, err := env.Do(context.Background(), x)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Violations) > 0 || res.Status != 200 {
			t.Fatalf("text %d chunking %d: status %d, violations %v", i, c, res.Status, res.Violations)
		}
		if check != nil {
			check(res)
		}
		if c == 0 {
			first = res.Body
		} else if !bytes.Equal(res.Body, first) {
			k := 0
			for k < len(first) && k < len(res.Body) && first[k] == res.Body[k] {
				k++
			}
			t.Fatalf("text %d: chunking %d changed the output at byte %d:\n%q\n%q", i, c, k, first[max(0, k-300):min(len(first), k+200)], res.Body[max(0, k-300):min(len(res.Body), k+200)])
		}
	}
	return first
}

// sameText fails unless got, what the client assembled of text i, is what
// the marker makes of it, quoting where they part.
func sameText(t *testing.T, i int, got, want string) {
	t.Helper()
	if got == want {
		return
	}
	k := 0
	for k < len(got) && k < len(want) && got[k] == want[k] {
		k++
	}
	t.Fatalf("text %d: the client got\n%q\nthe marker makes\n%q", i, got[max(0, k-80):min(len(got), k+80)], want[max(0, k-80):min(len(want), k+80)])
}

// TestWatermarkEndToEnd streams held-out text through the assembled
// server on a route with output.watermark: true, in random chunkings, and
// runs the verifiers on what came out, on the originals and with a decoy
// key.
func TestWatermarkEndToEnd(t *testing.T) {
	leakCheck(t)
	texts := texts20(heldOut(t, 500))
	dir := t.TempDir()
	wmFile := writeWatermarkKey(t, dir, "e2e-2026", 12)
	evFile := filepath.Join(dir, "ev.key")
	if err := os.WriteFile(evFile, bytes.Repeat([]byte{0x5c}, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := markedConfig(t, wmFile, fmt.Sprintf("evidence: {key_file: %q}\nadmin: {token: e2e-admin}\n", evFile))
	key := cfg.Marks().Keys.Active()
	if key.ID() != "e2e-2026" {
		t.Fatalf("active key %s", key.ID())
	}
	s := start(t, cfg, Options{})
	env := markingEnvoy(t, s, "203.0.113.9:40000")
	up := corpusUpstream{texts: texts}
	marker := watermark.NewMarker(watermark.DefaultLexicon(), key)
	lex := marker.Lexicon()
	v := watermark.NewVerifier(lex)
	marked, orig := v.NewSample(), v.NewSample()
	var suspect, reference []watermark.LogprobPosition
	var probes []watermark.ProbeContext
	var words, changed int64
	session := ""
	for i, text := range texts {
		body := []byte(fmt.Sprintf(`{"model":"m","stream":true,"logprobs":true,"top_logprobs":4,"messages":[{"role":"user","content":"problem %d"}]}`, i))
		first := chunkings(t, env, i, 97, 900, func(c int) *envoytest.Exchange {
			return &envoytest.Exchange{
				Path: "/v1/chat/completions", Body: body, Upstream: up,
				Header: http.Header{"Content-Type": {"application/json"}, "Authorization": {fmt.Sprintf("Bearer sk-e2e-%d-%d", i, c)}},
			}
		}, func(res *envoytest.Result) {
			md := res.Metadata["distillguard"].GetFields()
			if got := md["watermark_key"].GetStringValue(); got != key.ID() {
				t.Fatalf("metadata watermark_key %q", got)
			}
			session = md["session"].GetStringValue()
		})
		// What the client got: the text, and the alternatives.
		var out strings.Builder
		pos := 0
		for _, ch := range sseChunks(t, first) {
			if c := ch.Choices[0].Delta.Content; c != nil {
				out.WriteString(*c)
			}
			if lp := ch.Choices[0].Logprobs; lp != nil {
				for _, e := range lp.Content {
					suspect = append(suspect, watermark.LogprobPosition{Probe: i, Index: pos, Top: e.Top})
					pos++
				}
			}
		}
		want, st := marker.Mark([]byte(text))
		sameText(t, i, out.String(), string(want))
		words += st.Words
		changed += st.Substituted
		marked.Add([]byte(out.String()))
		orig.Add([]byte(text))
		for p, tok := range tokens.Split(text) {
			reference = append(reference, watermark.LogprobPosition{Probe: i, Index: p, Top: topOf(tok, p)})
		}
		probes = append(probes, watermark.ProbeContext{Text: fmt.Sprintf("problem %d", i)})
	}
	decoys, err := watermark.DecoyKeys(1)
	if err != nil {
		t.Fatal(err)
	}
	got, clean, decoy := marked.Score(key), orig.Score(key), marked.Score(decoys[0])
	t.Logf("lexical: %d words, %.2f%% changed; marked p=%.3g (%d/%d groups), originals p=%.3g, decoy key p=%.3g",
		words, 100*float64(changed)/float64(words), got.PValue, got.Matches, got.Scored, clean.PValue, decoy.PValue)
	if got.PValue > 1e-6 || clean.PValue < 1e-3 || decoy.PValue < 1e-3 {
		t.Fatalf("lexical verification: marked p=%g, originals p=%g, decoy p=%g", got.PValue, clean.PValue, decoy.PValue)
	}
	if changed == 0 || float64(changed) > 0.1*float64(words) {
		t.Fatalf("%d of %d words changed", changed, words)
	}
	ls, err := watermark.NewLogprobSample(suspect, reference, probes)
	if err != nil {
		t.Fatal(err)
	}
	lr, ld := ls.Score(key), ls.Score(decoys[0])
	t.Logf("logprobs: %d positions; key p=%.3g, decoy p=%.3g", len(suspect), lr.PValue, ld.PValue)
	if lr.PValue > 1e-3 || ld.PValue < 1e-2 {
		t.Fatalf("logprob verification: key p=%g, decoy p=%g", lr.PValue, ld.PValue)
	}

	// The evidence export of the last session verifies and names the key.
	req, _ := http.NewRequest(http.MethodGet, "http://"+s.AdminAddr()+"/v1/sessions/"+session+"/evidence", nil)
	req.Header.Set("Authorization", "Bearer e2e-admin")
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var eb bytes.Buffer
	_, _ = eb.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("evidence: %d %s", resp.StatusCode, eb.Bytes())
	}
	ek, err := evidence.LoadKey(evFile)
	if err != nil {
		t.Fatal(err)
	}
	ex, _, err := evidence.Verify(eb.Bytes(), ek.Public())
	if err != nil {
		t.Fatal(err)
	}
	if ex.Session.ID != session || ex.Session.Requests != 1 || ex.Watermark == nil || ex.Watermark.KeyID != key.ID() || ex.Watermark.Contexts != watermark.EmbeddedContexts || ex.Watermark.MaxPromptBytes != cfg.Processing.MaxPromptBytes || ex.Watermark.ServedRecords || ex.ConfigFingerprint != cfg.Fingerprint() {
		t.Fatalf("export %+v", ex)
	}
	if bytes.Contains(eb.Bytes(), []byte("sk-e2e")) || bytes.Contains(eb.Bytes(), []byte("problem ")) {
		t.Fatal("the export holds a credential or a prompt")
	}
}
