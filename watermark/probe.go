package watermark

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Probing a suspect model: `distillguard watermark probe` sends a probe
// set to the suspect's inference API and writes the answers as they came,
// in the forms verify reads, so the evidence that a suspect model learned
// from marked output is collected and tested by one tool. It speaks the
// request shapes of the inference APIs distillguard guards: OpenAI Chat
// Completions (vLLM, TGI, llama.cpp's server and Ollama serve the same
// route), the legacy Completions API, the Responses API, Gemini's
// generateContent and Anthropic's Messages (text only: it returns no
// alternatives).

// The APIs probe speaks (ProbeConfig.API).
const (
	// APIChat: https://platform.openai.com/docs/api-reference/chat/create
	APIChat = "chat"
	// APICompletions: https://platform.openai.com/docs/api-reference/completions/create
	// (a probe is one prompt: a probe of one user message).
	APICompletions = "completions"
	// APIGemini: https://ai.google.dev/api/generate-content#method:-models.generatecontent
	// (the model is part of the URL; "assistant" turns are sent as
	// "model", system messages as systemInstruction).
	APIGemini = "gemini"
	// APIResponses: https://platform.openai.com/docs/api-reference/responses/create
	APIResponses = "responses"
	// APIAnthropic: https://docs.anthropic.com/en/api/messages (system
	// messages as "system"; max_tokens is required there, 1024 unless
	// set; no logprobs).
	APIAnthropic = "anthropic"
)

// anthropicVersion is the Messages API version probe speaks
// (https://docs.anthropic.com/en/api/versioning).
const anthropicVersion = "2023-06-01"

// apiNames lists the APIs, for errors.
const apiNames = "chat, completions, responses, gemini or anthropic"

// maxProbeResponse bounds one answer's body: a chat completion of a few
// thousand tokens with top-20 logprobs is well under it, and a suspect
// endpoint is not trusted to stop.
const maxProbeResponse = 16 << 20

// ProbeConfig configures Probe.
type ProbeConfig struct {
	// URL is the endpoint, e.g. http://suspect:8000/v1/chat/completions,
	// or https://generativelanguage.googleapis.com/v1beta/models/M:generateContent.
	URL string
	// API is the request and answer shape: APIChat (also when empty),
	// APICompletions, APIResponses, APIGemini or APIAnthropic.
	API string
	// Model is the request's "model" (omitted when empty; not with
	// APIGemini, whose URL names the model).
	Model string
	// Header is sent with every request (e.g. Authorization).
	Header http.Header
	// MaxTokens is the request's "max_tokens" (omitted when 0).
	MaxTokens int
	// Temperature is the request's "temperature" (omitted when negative).
	Temperature float64
	// TopLogprobs > 0 asks for that many alternatives per token (the
	// logprob watermark's spectral test needs them): chat "logprobs": true
	// and "top_logprobs"; completions "logprobs" (OpenAI allows 5 there);
	// Responses "top_logprobs" with the output text's logprobs included;
	// Gemini "responseLogprobs": true and "logprobs". Not with
	// APIAnthropic.
	TopLogprobs int
	// Concurrency is the number of requests in flight (at least 1).
	Concurrency int
	// Timeout bounds one attempt.
	Timeout time.Duration
	// Retries is how many times a probe is sent again after a transport
	// error, 408, 429 or 5xx (the answer's Retry-After is honoured, up to
	// MaxBackoff).
	Retries    int
	Backoff    time.Duration
	MaxBackoff time.Duration
	// Client sends the requests (nil: a client of its own).
	Client *http.Client
}

// ProbeError is a probe the endpoint did not answer usably.
type ProbeError struct {
	Index  int // 1-based position in the probe set (blank lines not counted)
	Status int // the answer's HTTP status, 0 for a transport error
	Err    error
}

func (e *ProbeError) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("probe %d: HTTP %d: %v", e.Index, e.Status, e.Err)
	}
	return fmt.Sprintf("probe %d: %v", e.Index, e.Err)
}

func (e *ProbeError) Unwrap() error { return e.Err }

// ReadProbeMessages reads a probe set, one JSON object a line as
// ReadProbeContexts reads it: {"prompt": TEXT} becomes one user message,
// {"messages": [...]} (each an object with a "role") is sent as written
// (chat), or translated (Gemini). Record probes ({"features": ...}) have no
// text form and are refused.
func ReadProbeMessages(r io.Reader) ([]json.RawMessage, error) {
	var out []json.RawMessage
	err := eachJSONLine(r, func(doc *struct {
		Prompt   *string           `json:"prompt"`
		Features json.RawMessage   `json:"features"`
		Messages []json.RawMessage `json:"messages"`
	}) error {
		switch {
		case doc.Messages != nil:
			if len(doc.Messages) == 0 {
				return errors.New("\"messages\" is empty")
			}
			for j, m := range doc.Messages {
				var msg struct {
					Role *string `json:"role"`
				}
				if json.Unmarshal(m, &msg) != nil || msg.Role == nil {
					return fmt.Errorf("message %d is not an object with a \"role\"", j+1)
				}
			}
			m, err := json.Marshal(doc.Messages)
			if err != nil {
				return err
			}
			out = append(out, m)
		case doc.Prompt != nil:
			m, err := json.Marshal([]map[string]string{{"role": "user", "content": *doc.Prompt}})
			if err != nil {
				return err
			}
			out = append(out, m)
		case doc.Features != nil:
			return errors.New("a \"features\" probe is for a record model and has no chat form")
		default:
			return errors.New("no \"prompt\" or \"messages\"")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("no probes")
	}
	return out, nil
}

// Probe sends every probe (a messages array) to the endpoint and returns
// the answers in probe order, each the answer object as the endpoint sent
// it (compacted): a chat.completion, a text_completion, a response, a
// Gemini GenerateContentResponse or an Anthropic message. The first probe that fails after its
// retries cancels the rest and is returned as a *ProbeError: the answers
// must line up with the probes, so a partial set is not returned.
func Probe(ctx context.Context, cfg ProbeConfig, probes []json.RawMessage) ([]json.RawMessage, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	// Every request is built before any is sent: a probe the API cannot
	// carry is refused before the endpoint is asked anything.
	bodies := make([][]byte, len(probes))
	for i, m := range probes {
		b, err := cfg.body(m)
		if err != nil {
			return nil, &ProbeError{Index: i + 1, Err: err}
		}
		bodies[i] = b
	}
	client := cfg.Client
	if client == nil {
		client = &http.Client{}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	out := make([]json.RawMessage, len(probes))
	next := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < min(cfg.Concurrency, len(probes)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if ctx.Err() != nil {
					continue // drain: the feeder stops at the cancellation
				}
				a, err := cfg.send(ctx, client, i, bodies[i])
				if err != nil {
					cancel(err)
					continue // drain: the feeder stops at the cancellation
				}
				out[i] = a
			}
		}()
	}
feed:
	for i := range probes {
		if ctx.Err() != nil {
			break
		}
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	return out, nil
}

func (cfg *ProbeConfig) validate() error {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return fmt.Errorf("-url: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("-url %q: want an http:// or https:// URL of the endpoint", cfg.URL)
	}
	switch cfg.api() {
	case APIChat, APICompletions, APIResponses:
	case APIAnthropic:
		if cfg.TopLogprobs > 0 {
			return errors.New("-top-logprobs: the Messages API returns no logprobs")
		}
	case APIGemini:
		if cfg.Model != "" {
			return errors.New("-model: a Gemini URL names the model (.../models/MODEL:generateContent)")
		}
		if !strings.HasSuffix(u.Path, ":generateContent") {
			// streamGenerateContent answers in events, which verify does
			// not read; a URL without the method is a typo.
			return fmt.Errorf("-url %q: want a Gemini .../models/MODEL:generateContent URL", cfg.URL)
		}
	default:
		return fmt.Errorf("-api %q: want %s", cfg.API, apiNames)
	}
	switch {
	case cfg.Concurrency < 1 || cfg.Concurrency > 256:
		return fmt.Errorf("-concurrency %d: want 1 to 256", cfg.Concurrency)
	case cfg.Timeout <= 0:
		return fmt.Errorf("-timeout %v: want a positive duration", cfg.Timeout)
	case cfg.Retries < 0 || cfg.Retries > 20:
		return fmt.Errorf("-retries %d: want 0 to 20", cfg.Retries)
	case cfg.TopLogprobs < 0 || cfg.TopLogprobs > 20:
		// Chat Completions and Gemini accept up to 20 alternatives.
		return fmt.Errorf("-top-logprobs %d: want 0 to 20", cfg.TopLogprobs)
	case cfg.MaxTokens < 0:
		return fmt.Errorf("-max-tokens %d: want 0 (the endpoint's default) or more", cfg.MaxTokens)
	case cfg.Backoff < 0 || cfg.MaxBackoff < cfg.Backoff:
		return fmt.Errorf("backoff %v up to %v: want 0 <= backoff <= max", cfg.Backoff, cfg.MaxBackoff)
	}
	return nil
}

func (cfg *ProbeConfig) api() string {
	if cfg.API == "" {
		return APIChat
	}
	return cfg.API
}

// body is the request for one probe.
func (cfg *ProbeConfig) body(messages json.RawMessage) ([]byte, error) {
	var req map[string]any
	switch cfg.api() {
	case APICompletions:
		prompt, err := completionPrompt(messages)
		if err != nil {
			return nil, err
		}
		req = map[string]any{"prompt": prompt, "stream": false}
		if cfg.TopLogprobs > 0 {
			req["logprobs"] = cfg.TopLogprobs
		}
	case APIGemini:
		return cfg.geminiBody(messages)
	case APIResponses:
		input, err := responsesInput(messages)
		if err != nil {
			return nil, err
		}
		req = map[string]any{"input": input, "stream": false, "store": false}
		if cfg.TopLogprobs > 0 {
			// https://platform.openai.com/docs/api-reference/responses/create#responses-create-include
			req["include"] = []string{"message.output_text.logprobs"}
			req["top_logprobs"] = cfg.TopLogprobs
		}
		if cfg.MaxTokens > 0 {
			req["max_output_tokens"] = cfg.MaxTokens
		}
	case APIAnthropic:
		// https://docs.anthropic.com/en/api/messages#body-system
		system, turns, err := splitTurns(messages, "Messages API")
		if err != nil {
			return nil, err
		}
		msgs := make([]map[string]string, len(turns))
		for i, t := range turns {
			msgs[i] = map[string]string{"role": t.role, "content": t.text}
		}
		req = map[string]any{"messages": msgs, "stream": false, "max_tokens": 1024}
		if system != nil {
			req["system"] = strings.Join(system, "\n\n")
		}
		if cfg.MaxTokens > 0 {
			req["max_tokens"] = cfg.MaxTokens
		}
	default:
		req = map[string]any{"messages": messages, "stream": false}
		if cfg.TopLogprobs > 0 {
			req["logprobs"] = true
			req["top_logprobs"] = cfg.TopLogprobs
		}
	}
	if cfg.Model != "" {
		req["model"] = cfg.Model
	}
	if cfg.MaxTokens > 0 && cfg.api() != APIResponses {
		req["max_tokens"] = cfg.MaxTokens
	}
	if cfg.Temperature >= 0 {
		req["temperature"] = cfg.Temperature
	}
	return json.Marshal(req)
}

// responsesInput is a probe's messages as Responses API input items:
// string contents as written, chat text parts ({"type": "text"}) as the
// Responses API spells them, input_text (output_text in assistant turns),
// other parts as written
// (https://platform.openai.com/docs/api-reference/responses/create#responses-create-input).
func responsesInput(messages json.RawMessage) ([]map[string]any, error) {
	var ms []map[string]any
	if err := json.Unmarshal(messages, &ms); err != nil {
		return nil, err
	}
	for _, m := range ms {
		parts, ok := m["content"].([]any)
		if !ok {
			continue
		}
		kind := "input_text"
		if m["role"] == "assistant" {
			kind = "output_text"
		}
		for _, p := range parts {
			if part, ok := p.(map[string]any); ok && part["type"] == "text" {
				part["type"] = kind
			}
		}
	}
	return ms, nil
}

// turn is a user or assistant message's role and text.
type turn struct{ role, text string }

// splitTurns is a probe for an API that takes the system prompt apart
// (Gemini, Anthropic; named by api in errors): its system (and developer)
// messages' texts, and its user and assistant turns.
func splitTurns(messages json.RawMessage, api string) (system []string, turns []turn, err error) {
	var ms []probeMessage
	if err := json.Unmarshal(messages, &ms); err != nil {
		return nil, nil, err
	}
	for _, m := range ms {
		t, err := m.text()
		if err != nil {
			return nil, nil, err
		}
		switch m.Role {
		case "system", "developer":
			system = append(system, t)
		case "user", "assistant":
			turns = append(turns, turn{m.Role, t})
		default:
			return nil, nil, fmt.Errorf("a %q message has no %s form (want user, assistant or system)", m.Role, api)
		}
	}
	if len(turns) == 0 {
		return nil, nil, errors.New("the probe has no user or assistant message")
	}
	return system, turns, nil
}

// probeMessage is one message of a probe; Content is a string or an array
// of content parts (https://platform.openai.com/docs/api-reference/chat/create).
type probeMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// text is the message's text: its string content, or its text parts
// joined by line feeds, as the server reads a prompt's parts
// (mutate.ParseRequest); any other part (an image, audio) has no text form
// and is an error, as is a message without content.
func (m probeMessage) text() (string, error) {
	var s string
	if json.Unmarshal(m.Content, &s) == nil {
		return s, nil
	}
	var parts []struct {
		Type string  `json:"type"`
		Text *string `json:"text"`
	}
	if err := json.Unmarshal(m.Content, &parts); err != nil || len(parts) == 0 {
		return "", fmt.Errorf("a %q message's content is neither a string nor content parts", m.Role)
	}
	texts := make([]string, len(parts))
	for i, p := range parts {
		if p.Type != "text" || p.Text == nil {
			return "", fmt.Errorf("a %q message has a %q part, which has no text form", m.Role, p.Type)
		}
		texts[i] = *p.Text
	}
	return strings.Join(texts, "\n"), nil
}

// completionPrompt is the prompt of a completions probe: a probe of one
// user message (a {"prompt"} line).
func completionPrompt(messages json.RawMessage) (string, error) {
	var ms []probeMessage
	if err := json.Unmarshal(messages, &ms); err != nil {
		return "", err
	}
	if len(ms) != 1 || ms[0].Role != "user" {
		return "", fmt.Errorf("-api %s sends one prompt; this probe has %d messages (use {\"prompt\": ...}, or -api %s)", APICompletions, len(ms), APIChat)
	}
	return ms[0].text()
}

// geminiBody is a generateContent request: user turns as "user",
// assistant turns as "model", system (and developer) messages joined into
// systemInstruction (https://ai.google.dev/api/generate-content#request-body).
func (cfg *ProbeConfig) geminiBody(messages json.RawMessage) ([]byte, error) {
	system, turns, err := splitTurns(messages, "Gemini")
	if err != nil {
		return nil, err
	}
	type part struct {
		Text string `json:"text"`
	}
	type content struct {
		Role  string `json:"role,omitempty"`
		Parts []part `json:"parts"`
	}
	contents := make([]content, len(turns))
	for i, t := range turns {
		role := t.role
		if role == "assistant" {
			role = "model"
		}
		contents[i] = content{Role: role, Parts: []part{{t.text}}}
	}
	req := map[string]any{"contents": contents}
	if system != nil {
		sys := content{}
		for _, t := range system {
			sys.Parts = append(sys.Parts, part{t})
		}
		req["systemInstruction"] = sys
	}
	gc := map[string]any{}
	if cfg.MaxTokens > 0 {
		gc["maxOutputTokens"] = cfg.MaxTokens
	}
	if cfg.Temperature >= 0 {
		gc["temperature"] = cfg.Temperature
	}
	if cfg.TopLogprobs > 0 {
		gc["responseLogprobs"] = true
		gc["logprobs"] = cfg.TopLogprobs
	}
	if len(gc) > 0 {
		req["generationConfig"] = gc
	}
	return json.Marshal(req)
}

// send sends probe i until it is answered, a permanent error, or its
// retries are spent.
func (cfg *ProbeConfig) send(ctx context.Context, client *http.Client, i int, body []byte) (json.RawMessage, error) {
	wait := cfg.Backoff
	for attempt := 0; ; attempt++ {
		a, status, retryAfter, err := cfg.attempt(ctx, client, body)
		if err == nil {
			return a, nil
		}
		if ctx.Err() != nil {
			// Cancelled: by the caller, or by another probe's failure,
			// which is the error to report.
			return nil, context.Cause(ctx)
		}
		retryable := status == 0 || status == http.StatusRequestTimeout || status == http.StatusTooManyRequests || status >= 500
		if !retryable || attempt >= cfg.Retries {
			return nil, &ProbeError{Index: i + 1, Status: status, Err: err}
		}
		d := wait
		if retryAfter >= 0 {
			d = retryAfter
		}
		d = min(d, cfg.MaxBackoff)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, context.Cause(ctx)
		}
		wait = min(2*wait, cfg.MaxBackoff)
	}
}

// attempt sends one request. status is the answer's HTTP status (0 for a
// transport error, or a 2xx answer that is not a usable answer:
// neither is worth a retry, except the transport error); retryAfter is
// its Retry-After in seconds, or -1 when it has none.
func (cfg *ProbeConfig) attempt(ctx context.Context, client *http.Client, body []byte) (answer json.RawMessage, status int, retryAfter time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cfg.URL, bytes.NewReader(body))
	if err != nil {
		return nil, 0, -1, err
	}
	for k, vs := range cfg.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	req.Header.Set("Content-Type", "application/json")
	if cfg.api() == APIAnthropic && req.Header.Get("Anthropic-Version") == "" {
		req.Header.Set("Anthropic-Version", anthropicVersion)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, 0, -1, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxProbeResponse+1))
	if err != nil {
		return nil, 0, -1, err
	}
	retryAfter = -1
	if s, err := strconv.Atoi(strings.TrimSpace(resp.Header.Get("Retry-After"))); err == nil && s >= 0 {
		retryAfter = time.Duration(s) * time.Second
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, resp.StatusCode, retryAfter, errors.New(snippet(b))
	}
	// A 2xx that is not an answer is the endpoint's answer, not a
	// transient failure: reported with its status, not retried.
	st := resp.StatusCode
	if len(b) > maxProbeResponse {
		return nil, st, -1, fmt.Errorf("answer over %d bytes", maxProbeResponse)
	}
	if err := cfg.checkAnswer(b); err != nil {
		return nil, st, -1, err
	}
	var c bytes.Buffer
	if err := json.Compact(&c, b); err != nil {
		return nil, st, -1, err
	}
	return c.Bytes(), st, -1, nil
}

// checkAnswer refuses an answer that carries nothing to verify: one that
// is not JSON, or has no choices (chat, completions), no candidates
// (Gemini, whose blocked prompts answer 200 with promptFeedback only), no
// output (Responses; a failed response) or no content (Anthropic).
func (cfg *ProbeConfig) checkAnswer(b []byte) error {
	switch cfg.api() {
	case APIResponses:
		var doc struct {
			Output []json.RawMessage `json:"output"`
			Status string            `json:"status"`
			Error  json.RawMessage   `json:"error"`
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			return fmt.Errorf("answer is not a JSON response: %w", err)
		}
		if doc.Status == "failed" {
			return fmt.Errorf("the response failed: %s", snippet(doc.Error))
		}
		if len(doc.Output) == 0 {
			return errors.New("answer has no output")
		}
		return nil
	case APIAnthropic:
		var doc struct {
			Type    string            `json:"type"`
			Content []json.RawMessage `json:"content"`
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			return fmt.Errorf("answer is not a JSON message: %w", err)
		}
		if doc.Type != "message" || doc.Content == nil {
			return errors.New("answer is not a message with content")
		}
		return nil
	}
	if cfg.api() == APIGemini {
		var doc struct {
			Candidates     []json.RawMessage `json:"candidates"`
			PromptFeedback *struct {
				BlockReason string `json:"blockReason"`
			} `json:"promptFeedback"`
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			return fmt.Errorf("answer is not a JSON GenerateContentResponse: %w", err)
		}
		if len(doc.Candidates) == 0 {
			if f := doc.PromptFeedback; f != nil && f.BlockReason != "" {
				return fmt.Errorf("answer has no candidates: the prompt was blocked (%s)", f.BlockReason)
			}
			return errors.New("answer has no candidates")
		}
		return nil
	}
	var doc struct {
		Choices []json.RawMessage `json:"choices"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		what := "chat completion"
		if cfg.api() == APICompletions {
			what = "completion"
		}
		return fmt.Errorf("answer is not a JSON %s: %w", what, err)
	}
	if len(doc.Choices) == 0 {
		return errors.New("answer has no choices")
	}
	return nil
}

// snippet is the start of an error answer, on one line.
func snippet(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	if s == "" {
		s = "empty answer"
	}
	return s
}

// headerFlags collects repeated -header "Name: value" flags.
type headerFlags http.Header

func (h headerFlags) String() string { return "" }

func (h headerFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, ":")
	k = strings.TrimSpace(k)
	if !ok || k == "" {
		return fmt.Errorf("%q: want \"Name: value\"", s)
	}
	http.Header(h).Add(k, strings.TrimSpace(v))
	return nil
}

// RunProbe is the command `distillguard watermark probe`:
//
//	probe -url URL -prompts P -o OUT [-api chat|completions|responses|gemini|anthropic] [-model M] [-api-key-env VAR] [-header "K: V"]...
//	      [-max-tokens N] [-temperature T] [-top-logprobs K] [-concurrency C] [-timeout D] [-retries R] [-key-file F [-decoys N]]
//
// It sends each probe of P to the endpoint and writes the answers to OUT,
// one answer object a line in probe order, as the endpoint sent it: the
// forms verify reads in both modes (text; logprobs: with -prompts P). The
// file is written only once every probe is answered, so that the answers
// line up with the probes. With -key-file it then verifies OUT as
// verify would (text mode, and logprobs mode when -top-logprobs asked for
// them) and prints the reports. The API key is read from the environment
// variable -api-key-env names, never from a flag (flags show in ps and
// shell histories), and sent as a bearer token (Gemini: x-goog-api-key).
//
// Exit status: 0 when every probe was answered (and verified), 2 on a
// usage, input or endpoint error.
func RunProbe(args []string, stdout, stderr io.Writer) int {
	fs, fail := subcommand("probe", "-url URL -prompts P -o OUT [-api chat|completions|responses|gemini|anthropic] [-model M] [-api-key-env VAR] [-header \"K: V\"]... [-max-tokens N] [-temperature T] [-top-logprobs K] [-concurrency C] [-timeout D] [-retries R] [-key-file F [-decoys N]]", stderr)
	cfg := ProbeConfig{Header: http.Header{}, Backoff: 500 * time.Millisecond, MaxBackoff: 30 * time.Second}
	fs.StringVar(&cfg.URL, "url", "", "the suspect's endpoint, e.g. http://host:8000/v1/chat/completions")
	fs.StringVar(&cfg.API, "api", APIChat, "the endpoint's API: chat (Chat Completions), completions (legacy Completions), responses (Responses), gemini (generateContent) or anthropic (Messages)")
	fs.StringVar(&cfg.Model, "model", "", "the request's model")
	promptFile := fs.String("prompts", "", "the probe set: one {\"prompt\": ...} or {\"messages\": [...]} a line")
	outFile := fs.String("o", "", "where to write the answers (JSONL, probe order)")
	keyEnv := fs.String("api-key-env", "", "environment variable holding the API key (sent as a bearer token; Gemini: x-goog-api-key)")
	fs.Var(headerFlags(cfg.Header), "header", "an extra request header, \"Name: value\" (repeatable)")
	fs.IntVar(&cfg.MaxTokens, "max-tokens", 0, "the request's max_tokens (0: the endpoint's default)")
	fs.Float64Var(&cfg.Temperature, "temperature", -1, "the request's temperature (negative: the endpoint's default)")
	fs.IntVar(&cfg.TopLogprobs, "top-logprobs", 0, "ask for logprobs with this many alternatives (0: none)")
	fs.IntVar(&cfg.Concurrency, "concurrency", 4, "requests in flight")
	fs.DurationVar(&cfg.Timeout, "timeout", 120*time.Second, "bound on one request")
	fs.IntVar(&cfg.Retries, "retries", 3, "retries of a probe after a transport error, 408, 429 or 5xx")
	keyFile := fs.String("key-file", "", "verify the answers against this key file's keys")
	decoys := fs.Int("decoys", 0, "with -key-file: also score this many decoy keys")
	maxPrompt := fs.Int("max-prompt-bytes", DefaultMaxPromptBytes, "with -key-file and -top-logprobs: the provider's processing.max_prompt_bytes (the prompt bytes it keyed the logprob mark on)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if cfg.URL == "" || *promptFile == "" || *outFile == "" || fs.NArg() != 0 {
		fs.Usage()
		return 2
	}
	if *decoys != 0 && *keyFile == "" {
		return fail(errors.New("-decoys applies with -key-file"))
	}
	if *decoys < 0 || *decoys > 100000 {
		return fail(fmt.Errorf("-decoys %d: want 0 to 100000", *decoys))
	}
	if *keyEnv != "" {
		k := os.Getenv(*keyEnv)
		if k == "" {
			return fail(fmt.Errorf("-api-key-env %s: the variable is empty or unset", *keyEnv))
		}
		switch cfg.API {
		case APIGemini:
			// https://ai.google.dev/api#authentication
			cfg.Header.Set("X-Goog-Api-Key", k)
		case APIAnthropic:
			// https://docs.anthropic.com/en/api/overview#authentication
			cfg.Header.Set("X-Api-Key", k)
		default:
			cfg.Header.Set("Authorization", "Bearer "+k)
		}
	}
	if err := cfg.validate(); err != nil {
		return fail(err)
	}
	var ks *KeySet
	var dk []*Key
	if *keyFile != "" {
		var err error
		if ks, err = LoadKeyFile(*keyFile); err != nil {
			return fail(err)
		}
		if dk, err = DecoyKeys(*decoys); err != nil {
			return fail(err)
		}
	}
	// Read once: the logprob test reads the same probes again, and "-"
	// (standard input) can be read only once.
	pb, err := readInput(*promptFile)
	if err != nil {
		return fail(err)
	}
	probes, err := ReadProbeMessages(bytes.NewReader(pb))
	if err != nil {
		return fail(fmt.Errorf("%s: %w", *promptFile, err))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	start := time.Now()
	answers, err := Probe(ctx, cfg, probes)
	if err != nil {
		return fail(err)
	}
	if err := writeAnswers(*outFile, answers); err != nil {
		return fail(err)
	}
	fmt.Fprintf(stderr, "watermark probe: %d probes answered in %v, written to %s\n", len(answers), time.Since(start).Round(time.Millisecond), *outFile)
	if ks == nil {
		return 0
	}
	enc := json.NewEncoder(stdout)
	rep, err := verifyTextFile(DefaultLexicon(), EmbeddedContexts, *outFile, ks, dk, nil)
	if err != nil {
		return fail(err)
	}
	if err := enc.Encode(rep); err != nil {
		return fail(err)
	}
	if cfg.TopLogprobs == 0 {
		return 0
	}
	ctxs, err := ReadProbeContexts(bytes.NewReader(pb), *maxPrompt)
	if err != nil {
		return fail(fmt.Errorf("%s: %w", *promptFile, err))
	}
	lrep, err := verifyLogprobFile(*outFile, nil, ctxs, ks, dk)
	if err != nil {
		return fail(err)
	}
	if err := enc.Encode(lrep); err != nil {
		return fail(err)
	}
	return 0
}

// readInput reads the whole of name ("-": standard input).
func readInput(name string) ([]byte, error) {
	f, err := openInput(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// writeAnswers writes the answers to path through a temporary file in the
// same directory, so a reader never sees half a set.
func writeAnswers(path string, answers []json.RawMessage) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	w := bufio.NewWriter(tmp)
	for _, a := range answers {
		w.Write(a)
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
