package bench

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	procmodev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/distillguard/distillguard/extproc/envoytest"
	"github.com/distillguard/distillguard/internal/corpus"
)

// BodyKind is the shape of the upstream response an exchange carries.
type BodyKind int

const (
	// KindStream is a chat completion streamed as server-sent events, one
	// chat.completion.chunk per body message
	// (https://platform.openai.com/docs/api-reference/chat/streaming).
	KindStream BodyKind = iota
	// KindJSON is a non-streamed chat.completion with logprobs, sent as one
	// BUFFERED body (https://platform.openai.com/docs/api-reference/chat/object).
	KindJSON
	// KindEmbeddings is an embeddings response with one float vector, one
	// BUFFERED body (https://platform.openai.com/docs/api-reference/embeddings/object).
	KindEmbeddings
)

func (k BodyKind) String() string {
	switch k {
	case KindStream:
		return "stream"
	case KindJSON:
		return "json"
	case KindEmbeddings:
		return "embeddings"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// MarshalText writes the kind's name in JSON reports.
func (k BodyKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText is the inverse of MarshalText.
func (k *BodyKind) UnmarshalText(b []byte) error {
	for _, c := range []BodyKind{KindStream, KindJSON, KindEmbeddings} {
		if c.String() == string(b) {
			*k = c
			return nil
		}
	}
	return fmt.Errorf("unknown body kind %q", b)
}

// MixEntry weights one top_logprobs width in a workload. Alternatives 0 means
// the request does not ask for logprobs and events carry "logprobs":null.
type MixEntry struct {
	Alternatives int `json:"alternatives"`
	Weight       int `json:"weight"`
}

// ParseMix parses "0:1,5:2,20:1" (alternatives:weight, weight defaulting
// to 1).
func ParseMix(s string) ([]MixEntry, error) {
	var out []MixEntry
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		a, w, hasW := strings.Cut(part, ":")
		alt, err := strconv.Atoi(strings.TrimSpace(a))
		if err != nil || alt < 0 || alt > 20 {
			return nil, fmt.Errorf("mix %q: alternatives must be an integer in [0,20] (OpenAI's top_logprobs range)", part)
		}
		weight := 1
		if hasW {
			weight, err = strconv.Atoi(strings.TrimSpace(w))
			if err != nil || weight < 1 || weight > 1000 {
				return nil, fmt.Errorf("mix %q: weight must be an integer in [1,1000]", part)
			}
		}
		out = append(out, MixEntry{Alternatives: alt, Weight: weight})
		if len(out) > 21 {
			return nil, errors.New("mix: too many entries")
		}
	}
	if len(out) == 0 {
		return nil, errors.New("mix: empty")
	}
	return out, nil
}

// WorkloadSpec describes the exchanges a load run sends.
type WorkloadSpec struct {
	Kind BodyKind `json:"kind"`
	// Mix picks the top_logprobs width of each exchange (streams and JSON).
	Mix []MixEntry `json:"mix"`
	// Tokens is the number of content events per stream (plus a role
	// event, a finish event, a usage event and [DONE]).
	Tokens int `json:"tokens,omitempty"`
	// JSONBytes is the approximate size of a KindJSON response body.
	JSONBytes int `json:"json_bytes,omitempty"`
	// Dimensions is the embedding length of a KindEmbeddings response.
	Dimensions int `json:"dimensions,omitempty"`
	// Variants is how many distinct exchanges are prebuilt per mix entry.
	Variants int `json:"variants,omitempty"`
	// Prompts, when set, are the user prompts requests carry (for example
	// from the corpora); otherwise prompts are synthetic.
	Prompts []string `json:"-"`
}

// exchange is one prebuilt HTTP exchange: every message except the request
// headers (which carry the per-exchange session and clock) is allocated once
// and shared read-only by all workers.
type exchange struct {
	path         string
	alternatives int
	respMode     procmodev3.ProcessingMode_BodySendMode
	reqBody      *extprocv3.ProcessingRequest
	respHeaders  *extprocv3.ProcessingRequest
	chunks       []*extprocv3.ProcessingRequest
	raw          [][]byte // the chunks' bytes, for the in-process floor
	reqRaw       []byte
}

// Workload is a built WorkloadSpec.
type Workload struct {
	Spec      WorkloadSpec
	exchanges [][]*exchange // per mix entry
	weights   []int
	total     int
}

// Messages returns the average number of ext_proc messages per exchange.
func (w *Workload) Messages() float64 {
	var sum, n float64
	for i, xs := range w.exchanges {
		for _, x := range xs {
			sum += float64(w.weights[i]) * float64(3+len(x.chunks))
			n += float64(w.weights[i])
		}
	}
	return sum / n
}

// pick returns an exchange chosen by weight.
func (w *Workload) pick(r *rand.Rand) *exchange {
	n := r.IntN(w.total)
	for i, wt := range w.weights {
		if n < wt {
			xs := w.exchanges[i]
			return xs[r.IntN(len(xs))]
		}
		n -= wt
	}
	xs := w.exchanges[0]
	return xs[0]
}

// BuildWorkload prebuilds the exchanges of spec, deterministically from seed.
func BuildWorkload(spec WorkloadSpec, seed uint64) (*Workload, error) {
	if len(spec.Mix) == 0 {
		spec.Mix = []MixEntry{{Alternatives: 5, Weight: 1}}
	}
	if spec.Variants <= 0 {
		spec.Variants = 4
	}
	switch spec.Kind {
	case KindStream:
		if spec.Tokens <= 0 {
			spec.Tokens = 100
		}
		if spec.Tokens > 100000 {
			return nil, errors.New("workload: tokens above 100000")
		}
	case KindJSON:
		if spec.JSONBytes <= 0 {
			spec.JSONBytes = 100 << 10
		}
		if spec.JSONBytes > 64<<20 {
			return nil, errors.New("workload: json_bytes above 64 MiB")
		}
	case KindEmbeddings:
		if spec.Dimensions <= 0 {
			spec.Dimensions = 3072
		}
		if spec.Dimensions > 1<<20 {
			return nil, errors.New("workload: dimensions above 1Mi")
		}
	default:
		return nil, fmt.Errorf("workload: unknown kind %d", spec.Kind)
	}
	w := &Workload{Spec: spec}
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	g := &gen{r: r, prompts: spec.Prompts}
	for _, m := range spec.Mix {
		if m.Alternatives < 0 || m.Alternatives > 20 || m.Weight < 1 {
			return nil, fmt.Errorf("workload: bad mix entry %+v", m)
		}
		xs := make([]*exchange, spec.Variants)
		for v := range xs {
			switch spec.Kind {
			case KindStream:
				xs[v] = g.streamExchange(spec.Tokens, m.Alternatives)
			case KindJSON:
				xs[v] = g.jsonExchange(spec.JSONBytes, m.Alternatives)
			case KindEmbeddings:
				xs[v] = g.embeddingsExchange(spec.Dimensions)
			}
		}
		w.exchanges = append(w.exchanges, xs)
		w.weights = append(w.weights, m.Weight)
		w.total += m.Weight
	}
	return w, nil
}

// vocab is the token vocabulary of synthetic completions: common English
// tokens in the tiktoken style (leading space on word tokens).
var vocab = strings.Fields(`the of and to in is that for it as was with be by on not he
this are or his from at which but have an they you were her she there one all we their
can has been if more when will would who so no model answer data first then also time
about into only other some these two may any could after most over such where through
between each because just those while being both under same both against during without
however example result number value light water energy system process function given`)

var punct = []string{".", ",", ":", ";", "!", "?", "\n\n", " (", ")", " -", "'s", "\n"}

// gen builds JSON documents from a seeded source.
type gen struct {
	r       *rand.Rand
	prompts []string
}

func (g *gen) token() string {
	if g.r.IntN(7) == 0 {
		return punct[g.r.IntN(len(punct))]
	}
	w := vocab[g.r.IntN(len(vocab))]
	if g.r.IntN(9) == 0 {
		w = strings.ToUpper(w[:1]) + w[1:]
	}
	return " " + w
}

func (g *gen) prompt() string {
	if len(g.prompts) > 0 {
		return g.prompts[g.r.IntN(len(g.prompts))]
	}
	n := 20 + g.r.IntN(40)
	var b strings.Builder
	for i := 0; i < n; i++ {
		b.WriteString(g.token())
	}
	return strings.TrimSpace(b.String()) + "?"
}

func (g *gen) id(prefix string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	b := []byte(prefix)
	for i := 0; i < 29; i++ {
		b = append(b, alphabet[g.r.IntN(len(alphabet))])
	}
	return string(b)
}

// logprob draws a plausible chosen-token log probability: most tokens are
// near-certain, some are not.
func (g *gen) logprob() float64 {
	if g.r.IntN(3) == 0 {
		return -g.r.ExpFloat64() * 2
	}
	return -g.r.ExpFloat64() * 1e-3
}

// appendJSONString appends s as a JSON string.
func appendJSONString(dst []byte, s string) []byte {
	b, _ := json.Marshal(s) // cannot fail for a string
	return append(dst, b...)
}

// floatDigits is how many significant digits OpenAI's Python serializer
// prints float32 values with (exponent form when small).
const floatDigits = 8

// appendFloat writes a float the way OpenAI's serializer does.
func appendFloat(dst []byte, v float64) []byte {
	return strconv.AppendFloat(dst, v, 'g', floatDigits, 64)
}

// appendTokenLogprob writes one choices[].logprobs.content[] entry with k
// alternatives
// (https://platform.openai.com/docs/api-reference/chat/object#chat/object-choices).
func (g *gen) appendTokenLogprob(dst []byte, tok string, k int) []byte {
	lp := g.logprob()
	dst = envoytest.AppendTokenFields(dst, tok, lp, floatDigits)
	dst = append(dst, `,"top_logprobs":[`...)
	alt := lp
	for i := 0; i < k; i++ {
		t := tok
		if i > 0 {
			t = g.token()
			alt -= 0.5 + g.r.ExpFloat64()*2
		}
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = envoytest.AppendTokenFields(dst, t, alt, floatDigits)
		dst = append(dst, '}')
	}
	return append(dst, "]}"...)
}

const (
	requestModel   = "gpt-4o-mini"
	chatModel      = "gpt-4o-mini-2024-07-18"
	embeddingModel = "text-embedding-3-large"
	created        = "1741569952"
	fingerprint    = "fp_06737a9306"
)

// chunkHead writes the common prefix of a chat.completion.chunk.
func chunkHead(dst []byte, id string) []byte {
	dst = append(dst, "data: "...)
	dst = append(dst, `{"id":"`...)
	dst = append(dst, id...)
	dst = append(dst, `","object":"chat.completion.chunk","created":`+created+`,"model":"`+chatModel+`","system_fingerprint":"`+fingerprint+`","choices":[`...)
	return dst
}

func (g *gen) chatRequest(stream bool, k int) []byte {
	b := []byte(`{"model":"` + requestModel + `","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":`)
	b = appendJSONString(b, g.prompt())
	b = append(b, `}],"max_tokens":512,"temperature":0.7`...)
	if stream {
		b = append(b, `,"stream":true,"stream_options":{"include_usage":true}`...)
	}
	if k > 0 {
		b = append(b, `,"logprobs":true,"top_logprobs":`...)
		b = strconv.AppendInt(b, int64(k), 10)
	}
	return append(b, '}')
}

// streamEvents returns the SSE events of one streamed chat completion:
// role, tokens content events, finish, usage, [DONE].
func (g *gen) streamEvents(tokens, k int) [][]byte {
	id := g.id("chatcmpl-")
	events := make([][]byte, 0, tokens+4)
	var b []byte
	b = chunkHead(nil, id)
	b = append(b, `{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}`+"\n\n"...)
	events = append(events, b)
	for i := 0; i < tokens; i++ {
		tok := g.token()
		b = chunkHead(nil, id)
		b = append(b, `{"index":0,"delta":{"content":`...)
		b = appendJSONString(b, tok)
		b = append(b, `},"logprobs":`...)
		if k > 0 {
			b = append(b, `{"content":[`...)
			b = g.appendTokenLogprob(b, tok, k)
			b = append(b, `],"refusal":null}`...)
		} else {
			b = append(b, "null"...)
		}
		b = append(b, `,"finish_reason":null}],"usage":null}`+"\n\n"...)
		events = append(events, b)
	}
	b = chunkHead(nil, id)
	b = append(b, `{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}`+"\n\n"...)
	events = append(events, b)
	b = chunkHead(nil, id)
	b = append(b, `],"usage":{"prompt_tokens":41,"completion_tokens":`...)
	b = strconv.AppendInt(b, int64(tokens), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(tokens+41), 10)
	b = append(b, "}}\n\n"...)
	events = append(events, b)
	events = append(events, []byte("data: [DONE]\n\n"))
	return events
}

// jsonCompletion returns a non-streamed chat.completion of about size bytes.
func (g *gen) jsonCompletion(size, k int) []byte {
	var content strings.Builder
	var lps []byte
	n := 0
	for len(lps)+content.Len()+400 < size {
		tok := g.token()
		content.WriteString(tok)
		if k > 0 {
			if n > 0 {
				lps = append(lps, ',')
			}
			lps = g.appendTokenLogprob(lps, tok, k)
		}
		n++
	}
	b := []byte(`{"id":"`)
	b = append(b, g.id("chatcmpl-")...)
	b = append(b, `","object":"chat.completion","created":`+created+`,"model":"`+chatModel+`","choices":[{"index":0,"message":{"role":"assistant","content":`...)
	b = appendJSONString(b, strings.TrimSpace(content.String()))
	b = append(b, `,"refusal":null},"logprobs":`...)
	if k > 0 {
		b = append(b, `{"content":[`...)
		b = append(b, lps...)
		b = append(b, `],"refusal":null}`...)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"finish_reason":"stop"}],"usage":{"prompt_tokens":41,"completion_tokens":`...)
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(n+41), 10)
	b = append(b, `},"system_fingerprint":"`+fingerprint+`"}`...)
	return b
}

// embeddings returns an embeddings list response with one vector of dims
// float values, unit-normalised like OpenAI's.
func (g *gen) embeddings(dims int) []byte {
	v := make([]float64, dims)
	var norm float64
	for i := range v {
		v[i] = g.r.NormFloat64()
		norm += v[i] * v[i]
	}
	norm = math.Sqrt(norm)
	b := []byte(`{"object":"list","data":[{"object":"embedding","index":0,"embedding":[`)
	for i, x := range v {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendFloat(b, x/norm)
	}
	b = append(b, `]}],"model":"`+embeddingModel+`","usage":{"prompt_tokens":12,"total_tokens":12}}`...)
	return b
}

// responseHeaders is what Envoy sends for the upstream's response headers:
// lower-case keys, values in raw_value
// (envoy.service.ext_proc.v3.HttpHeaders.headers).
func responseHeaders(contentType string, length int) *extprocv3.ProcessingRequest {
	kv := []string{
		":status", "200",
		"content-type", contentType,
		"date", "Mon, 10 Mar 2025 01:25:52 GMT",
		"openai-processing-ms", "112",
		"x-request-id", "req_5b4c1a7e0f2d4f0c9a7f0e6d2c1b0a99",
	}
	if length >= 0 {
		kv = append(kv, "content-length", strconv.Itoa(length))
	}
	return envoytest.ResponseHeaders(envoytest.HeaderMap(kv...), false)
}

func (g *gen) streamExchange(tokens, k int) *exchange {
	events := g.streamEvents(tokens, k)
	req := g.chatRequest(true, k)
	x := &exchange{
		path:         "/v1/chat/completions",
		alternatives: k,
		respMode:     procmodev3.ProcessingMode_STREAMED,
		reqRaw:       req,
		reqBody:      envoytest.RequestBody(req, true),
		respHeaders:  responseHeaders("text/event-stream; charset=utf-8", -1),
		raw:          events,
	}
	for i, e := range events {
		x.chunks = append(x.chunks, envoytest.ResponseBody(e, i == len(events)-1))
	}
	return x
}

func (g *gen) jsonExchange(size, k int) *exchange {
	body := g.jsonCompletion(size, k)
	return bufferedExchange("/v1/chat/completions", k, g.chatRequest(false, k), body)
}

func (g *gen) embeddingsExchange(dims int) *exchange {
	body := g.embeddings(dims)
	req := []byte(`{"model":"` + embeddingModel + `","encoding_format":"float","input":`)
	req = appendJSONString(req, g.prompt())
	req = append(req, '}')
	return bufferedExchange("/v1/embeddings", 0, req, body)
}

// bufferedExchange is a JSON request answered by one JSON body that Envoy
// sends in a single BUFFERED message.
func bufferedExchange(path string, k int, req, body []byte) *exchange {
	return &exchange{
		path:         path,
		alternatives: k,
		respMode:     procmodev3.ProcessingMode_BUFFERED,
		reqRaw:       req,
		reqBody:      envoytest.RequestBody(req, true),
		respHeaders:  responseHeaders("application/json", len(body)),
		chunks:       []*extprocv3.ProcessingRequest{envoytest.ResponseBody(body, true)},
		raw:          [][]byte{body},
	}
}

// LoadPrompts reads user prompts from the corpora in dir (hh_rlhf_dialogs:
// first human turn; gsm8k_test: question; selfinstruct_seed_tasks:
// instruction and input), at most limit of them. Missing files are skipped;
// no prompt at all is an error.
func LoadPrompts(dir string, limit int) ([]string, error) {
	type line struct {
		Turns       []string `json:"turns"`
		Question    string   `json:"question"`
		Instruction string   `json:"instruction"`
		Input       string   `json:"input"`
	}
	var out []string
	for _, name := range corpus.Files() {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() && len(out) < limit {
			var l line
			if json.Unmarshal(sc.Bytes(), &l) != nil {
				continue
			}
			p := l.Question
			if len(l.Turns) > 0 {
				p = l.Turns[0]
			}
			if l.Instruction != "" {
				p = strings.TrimSpace(l.Instruction + "\n\n" + l.Input)
			}
			if p != "" {
				out = append(out, p)
			}
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no prompts found in %s", dir)
	}
	return out, nil
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x5eed)) }
