package lab

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"

	"github.com/distillguard/distillguard/mutate"
)

// labModel is the model name the simulated API serves; policies are resolved
// for it.
const labModel = "lab-model"

// maxTopLogprobs is OpenAI's upper bound on top_logprobs for chat
// completions (https://platform.openai.com/docs/api-reference/chat/create#chat-create-top_logprobs).
const maxTopLogprobs = 20

// maxBias bounds logit_bias values as OpenAI does ("values from -100 to 100",
// https://platform.openai.com/docs/api-reference/chat/create#chat-create-logit_bias).
const maxBias = 100

// Model is a simulated language model: it fills the next-token logits for a
// prompt. Implementations are deterministic functions of the prompt.
type Model interface {
	Vocab() int
	// Token is the text of token id; TokenID inverts it (the attacker knows
	// the tokenizer, as with any open tokenizer).
	Token(id int) string
	TokenID(text string) (int, bool)
	Logits(prompt string, dst []float64) error
}

// tokVocab is the simulated models' tokenizer: token id i is the text
// "tok<i>". Embedded in a model it provides Vocab, Token and TokenID.
type tokVocab struct {
	v     int
	names []string
}

func newTokVocab(v int) tokVocab {
	names := make([]string, v)
	for i := range names {
		names[i] = "tok" + strconv.Itoa(i)
	}
	return tokVocab{v: v, names: names}
}

func (t tokVocab) Vocab() int          { return t.v }
func (t tokVocab) Token(id int) string { return t.names[id] }

func (t tokVocab) TokenID(text string) (int, bool) {
	s, ok := strings.CutPrefix(text, "tok")
	if !ok {
		return 0, false
	}
	id, err := strconv.Atoi(s)
	return id, err == nil && id >= 0 && id < t.v
}

// Bias is one logit_bias entry.
type Bias struct {
	Token int
	Value float64
}

// Query is what an attacker (or an honest client) asks of the API: one
// greedy next token for a prompt.
type Query struct {
	Prompt string
	// TopLogprobs > 0 asks for logprobs with that many alternatives;
	// Logprobs alone asks for the chosen token's logprob only.
	Logprobs    bool
	TopLogprobs int
	LogitBias   []Bias
}

// TokenLogprob is one (token, logprob) pair as the client parsed it.
type TokenLogprob struct {
	Token   string
	Logprob float64
}

// Response is what the client parsed from the (rewritten) response body.
type Response struct {
	Chosen string
	// HasLogprob is false when the body carried no logprobs for the chosen
	// token (not requested, or stripped on the way).
	HasLogprob bool
	Logprob    float64
	Top        []TokenLogprob
}

// APIStats counts what one simulated API instance did.
type APIStats struct {
	Queries         int
	RequestRewrites int // requests whose bytes the request policy changed
	RewriteErrors   int // bodies mutate reported as invalid (passed through)
	FailedOpen      int // streams that failed open
}

// API is an OpenAI-compatible chat-completions endpoint for a simulated
// model, with the request and response bodies rewritten by package mutate
// exactly as the ext_proc server rewrites them: the client builds a JSON
// request, mutate.RewriteRequest applies the request policy, the "server"
// decodes the rewritten request and answers with chat.completion JSON (or a
// text/event-stream of chat.completion.chunk events), a mutate.Rewriter (or
// mutate.SSEStream over randomly split chunks) applies the output policy,
// and the client decodes what comes out. Not safe for concurrent use.
type API struct {
	model  Model
	policy Policy
	stream bool
	// The perturbation is keyed as the server keys it,
	// mutate.PerturbSeed(session, request body), with a new Rewriter (token
	// position 0) for every response. sessionOnly keys it by the session
	// alone, a rejected design kept for comparison.
	session     string
	sessionOnly bool
	chunks      *rand.Rand

	stats  APIStats
	logits []float64
	lp     []float64
	top    []int
	req    []byte
	rw     []byte
	body   []byte
	out    []byte
}

// APIOptions configures an API.
type APIOptions struct {
	// Stream answers with server-sent events, split into random chunks
	// before the rewrite, as Envoy may deliver them.
	Stream bool
	// Session names the client's session; the perturbation seed derives from it.
	Session string
	// SessionOnlySeed keys the perturbation by the session alone instead of
	// (session, request body), for comparison with the server's keying.
	SessionOnlySeed bool
	// Seed drives the chunk splitting.
	Seed uint64
}

// NewAPI returns an API serving m under policy p.
func NewAPI(m Model, p Policy, o APIOptions) *API {
	return &API{
		model:       m,
		policy:      p,
		stream:      o.Stream,
		session:     o.Session,
		sessionOnly: o.SessionOnlySeed,
		chunks:      rand.New(rand.NewPCG(o.Seed, 0x5eed)),
		logits:      make([]float64, m.Vocab()),
		lp:          make([]float64, m.Vocab()),
	}
}

// Stats returns the counts so far.
func (a *API) Stats() APIStats { return a.stats }

// Query sends q and returns the parsed, rewritten response.
func (a *API) Query(q Query) (Response, error) {
	a.stats.Queries++
	a.req = appendRequest(a.req[:0], q, a.stream)
	body := a.req
	if !a.policy.Request.IsNoop() {
		var changed bool
		var err error
		a.rw, changed, err = mutate.RewriteRequest(a.rw[:0], a.req, a.policy.Request)
		if err != nil {
			return Response{}, fmt.Errorf("rewrite request: %w", err)
		}
		if changed {
			a.stats.RequestRewrites++
		}
		body = a.rw
	}
	var err error
	a.body, err = a.serve(a.body[:0], body)
	if err != nil {
		return Response{}, err
	}
	out := a.body
	if !a.policy.Output.IsNoop() {
		seed := mutate.PerturbSeed(a.session, a.req)
		if a.sessionOnly {
			seed = mutate.PerturbSeed(a.session, nil)
		}
		rw := mutate.NewRewriter(a.policy.Output, seed)
		if a.stream {
			s := mutate.NewSSEStream(rw, 1<<20)
			a.out = a.out[:0]
			rest := a.body
			for len(rest) > 0 {
				n := 1 + a.chunks.IntN(96)
				n = min(n, len(rest))
				a.out = s.Write(a.out, rest[:n], n == len(rest))
				rest = rest[n:]
			}
			st := s.Stats()
			a.stats.RewriteErrors += int(st.Invalid)
			if st.FailedOpen {
				a.stats.FailedOpen++
			}
		} else {
			a.out, err = rw.Rewrite(a.out[:0], a.body)
			if err != nil {
				a.stats.RewriteErrors++
			}
		}
		out = a.out
	}
	if a.stream {
		return parseSSE(out)
	}
	return parseCompletion(out)
}

func appendRequest(b []byte, q Query, stream bool) []byte {
	b = append(b, `{"model":"`+labModel+`","messages":[{"role":"user","content":`...)
	b = appendJSONString(b, q.Prompt)
	b = append(b, `}],"max_tokens":1,"temperature":0`...)
	if q.Logprobs || q.TopLogprobs > 0 {
		b = append(b, `,"logprobs":true`...)
	}
	if q.TopLogprobs > 0 {
		b = append(b, `,"top_logprobs":`...)
		b = strconv.AppendInt(b, int64(q.TopLogprobs), 10)
	}
	if len(q.LogitBias) > 0 {
		b = append(b, `,"logit_bias":{`...)
		for i, e := range q.LogitBias {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, '"')
			b = strconv.AppendInt(b, int64(e.Token), 10)
			b = append(b, `":`...)
			b = strconv.AppendFloat(b, e.Value, 'g', -1, 64)
		}
		b = append(b, '}')
	}
	if stream {
		b = append(b, `,"stream":true`...)
	}
	return append(b, '}')
}

func appendJSONString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always marshals
	return append(b, q...)
}

// wireRequest is the subset of the chat-completions request the simulated
// server honours (https://platform.openai.com/docs/api-reference/chat/create).
type wireRequest struct {
	Model    string `json:"model"`
	Messages []struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	} `json:"messages"`
	MaxTokens   int                `json:"max_tokens"`
	Logprobs    bool               `json:"logprobs"`
	TopLogprobs *int               `json:"top_logprobs"`
	LogitBias   map[string]float64 `json:"logit_bias"`
	Stream      bool               `json:"stream"`
}

var errBadRequest = errors.New("simulated API: bad request")

// serve answers a request body like an inference server with greedy
// decoding: logit_bias is added to the logits before the softmax, and the
// returned logprobs are those of the biased distribution, as OpenAI's API
// returns them.
func (a *API) serve(dst, body []byte) ([]byte, error) {
	var r wireRequest
	if err := json.Unmarshal(body, &r); err != nil {
		return dst, fmt.Errorf("%w: %v", errBadRequest, err)
	}
	if len(r.Messages) == 0 {
		return dst, fmt.Errorf("%w: no messages", errBadRequest)
	}
	top := 0
	if r.TopLogprobs != nil {
		top = *r.TopLogprobs
		if top < 0 || top > maxTopLogprobs || (top > 0 && !r.Logprobs) {
			return dst, fmt.Errorf("%w: top_logprobs %d", errBadRequest, top)
		}
	}
	if err := a.model.Logits(r.Messages[len(r.Messages)-1].Content, a.logits); err != nil {
		return dst, err
	}
	z := a.lp
	copy(z, a.logits)
	// Decoding logit_bias keys in any order gives the same sum per token.
	for k, v := range r.LogitBias {
		id, err := strconv.Atoi(k)
		if err != nil || id < 0 || id >= len(z) || v < -maxBias || v > maxBias {
			return dst, fmt.Errorf("%w: logit_bias %q: %g", errBadRequest, k, v)
		}
		z[id] += v
	}
	var chosen int
	if r.Logprobs {
		chosen = logSoftmax(z)
		a.top = topK(a.top[:0], z, top)
	} else {
		// Greedy decoding needs only the argmax; the softmax is skipped
		// when no logprobs are returned (same output, less work).
		chosen = argmax(z)
	}
	if r.Stream {
		return a.appendStream(dst, chosen, z, r.Logprobs), nil
	}
	return a.appendCompletion(dst, chosen, z, r.Logprobs), nil
}

// logSoftmax turns z into log-probabilities in place and returns the argmax
// (lowest id on ties, as a deterministic greedy decoder would).
func logSoftmax(z []float64) int {
	best := argmax(z)
	m := z[best]
	var s float64
	for _, v := range z {
		s += math.Exp(v - m)
	}
	lse := m + math.Log(s)
	for i := range z {
		z[i] -= lse
	}
	return best
}

// argmax returns the index of the largest value, the lowest on ties.
func argmax(z []float64) int {
	best := 0
	for i, v := range z {
		if v > z[best] {
			best = i
		}
	}
	return best
}

// topK appends the indices of the k largest values of z, largest first,
// lower index first on ties.
func topK(dst []int, z []float64, k int) []int {
	k = min(k, len(z))
	if k <= 0 {
		return dst
	}
	for i, v := range z {
		if len(dst) == k && v <= z[dst[k-1]] {
			continue
		}
		if len(dst) < k {
			dst = append(dst, i)
		} else {
			dst[k-1] = i
		}
		for j := len(dst) - 1; j > 0 && z[dst[j]] > z[dst[j-1]]; j-- {
			dst[j], dst[j-1] = dst[j-1], dst[j]
		}
	}
	return dst
}

const completionHead = `{"id":"chatcmpl-lab","object":"chat.completion","created":1700000000,"model":"` + labModel + `","choices":[{"index":0,"message":{"role":"assistant","content":`

func (a *API) appendCompletion(b []byte, chosen int, lp []float64, logprobs bool) []byte {
	b = append(b, completionHead...)
	b = appendJSONString(b, a.model.Token(chosen))
	b = append(b, `,"refusal":null},"logprobs":`...)
	if logprobs {
		b = a.appendLogprobs(b, chosen, lp)
	} else {
		b = append(b, "null"...)
	}
	return append(b, `,"finish_reason":"length"}],"usage":{"prompt_tokens":16,"completion_tokens":1,"total_tokens":17},"system_fingerprint":"fp_lab"}`...)
}

const chunkHead = `data: {"id":"chatcmpl-lab","object":"chat.completion.chunk","created":1700000000,"model":"` + labModel + `","system_fingerprint":"fp_lab","choices":[{"index":0,`

// appendStream writes the event stream OpenAI sends with stream=true: a role
// chunk, one chunk per token with its logprobs, a finish chunk and [DONE]
// (https://platform.openai.com/docs/api-reference/chat-streaming).
func (a *API) appendStream(b []byte, chosen int, lp []float64, logprobs bool) []byte {
	b = append(b, chunkHead...)
	b = append(b, `"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}`+"\n\n"...)
	b = append(b, chunkHead...)
	b = append(b, `"delta":{"content":`...)
	b = appendJSONString(b, a.model.Token(chosen))
	b = append(b, `},"logprobs":`...)
	if logprobs {
		b = a.appendLogprobs(b, chosen, lp)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"finish_reason":null}]}`+"\n\n"...)
	b = append(b, chunkHead...)
	b = append(b, `"delta":{},"logprobs":null,"finish_reason":"length"}]}`+"\n\n"...)
	return append(b, "data: [DONE]\n\n"...)
}

func (a *API) appendLogprobs(b []byte, chosen int, lp []float64) []byte {
	b = append(b, `{"content":[`...)
	b = a.appendTokenLogprob(b, chosen, lp[chosen])
	b = append(b, `,"top_logprobs":[`...)
	for i, id := range a.top {
		if i > 0 {
			b = append(b, ',')
		}
		b = a.appendTokenLogprob(b, id, lp[id])
		b = append(b, '}')
	}
	return append(b, `]}],"refusal":null}`...)
}

// appendTokenLogprob writes a token logprob object without its closing
// brace, so the chosen token's object can carry top_logprobs.
func (a *API) appendTokenLogprob(b []byte, id int, lp float64) []byte {
	t := a.model.Token(id)
	b = append(b, `{"token":`...)
	b = appendJSONString(b, t)
	b = append(b, `,"logprob":`...)
	b = strconv.AppendFloat(b, lp, 'g', -1, 64)
	b = append(b, `,"bytes":[`...)
	for i := 0; i < len(t); i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(t[i]), 10)
	}
	return append(b, ']')
}

type wireTokenLogprob struct {
	Token       string  `json:"token"`
	Logprob     float64 `json:"logprob"`
	TopLogprobs []struct {
		Token   string  `json:"token"`
		Logprob float64 `json:"logprob"`
	} `json:"top_logprobs"`
}

type wireChoice struct {
	Message *struct {
		Content string `json:"content"`
	} `json:"message"`
	Delta *struct {
		Content string `json:"content"`
	} `json:"delta"`
	Logprobs *struct {
		Content []wireTokenLogprob `json:"content"`
	} `json:"logprobs"`
}

type wireResponse struct {
	Choices []wireChoice `json:"choices"`
}

func (r *Response) add(c wireChoice) {
	if c.Message != nil {
		r.Chosen += c.Message.Content
	}
	if c.Delta != nil {
		r.Chosen += c.Delta.Content
	}
	if c.Logprobs == nil {
		return
	}
	for _, t := range c.Logprobs.Content {
		r.HasLogprob = true
		r.Logprob = t.Logprob
		r.Top = r.Top[:0]
		for _, e := range t.TopLogprobs {
			r.Top = append(r.Top, TokenLogprob{Token: e.Token, Logprob: e.Logprob})
		}
	}
}

// parseCompletion decodes a chat.completion body as a client would.
func parseCompletion(body []byte) (Response, error) {
	var w wireResponse
	if err := json.Unmarshal(body, &w); err != nil {
		return Response{}, fmt.Errorf("client: decode completion: %w", err)
	}
	if len(w.Choices) != 1 {
		return Response{}, fmt.Errorf("client: %d choices", len(w.Choices))
	}
	var r Response
	r.add(w.Choices[0])
	return r, nil
}

// parseSSE decodes a text/event-stream of chat.completion.chunk events as a
// client would (https://html.spec.whatwg.org/multipage/server-sent-events.html).
func parseSSE(body []byte) (Response, error) {
	var r Response
	done := false
	for len(body) > 0 {
		ev, rest, _ := bytes.Cut(body, []byte("\n\n"))
		body = rest
		for _, line := range bytes.Split(ev, []byte("\n")) {
			data, ok := bytes.CutPrefix(line, []byte("data:"))
			if !ok {
				continue
			}
			data = bytes.TrimSpace(data)
			if string(data) == "[DONE]" {
				done = true
				continue
			}
			var w wireResponse
			if err := json.Unmarshal(data, &w); err != nil {
				return Response{}, fmt.Errorf("client: decode chunk: %w", err)
			}
			for _, c := range w.Choices {
				r.add(c)
			}
		}
	}
	if !done {
		return Response{}, errors.New("client: stream ended without [DONE]")
	}
	return r, nil
}
