package envoytest

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"hash/fnv"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// Upstream is a mock OpenAI-compatible server (an http.Handler) serving
// /v1/chat/completions, /v1/completions, /v1/responses and /v1/embeddings,
// streamed (one SSE event per token, flushed) and not. Its answers are
// deterministic in Seed and the request body. Safe for concurrent use.
type Upstream struct {
	Seed  uint64
	Model string // default mock-gpt-4o-mini
	// Gzip compresses responses when the request accepts gzip.
	Gzip bool
	// MaxTokens caps completion length (default 16); a smaller max_tokens
	// in the request wins.
	MaxTokens int
	// EmbeddingDims is the default embedding size (default 16).
	EmbeddingDims int

	mu   sync.Mutex
	last RecordedRequest
	n    int
}

// RecordedRequest is a request the upstream received.
type RecordedRequest struct {
	Method string
	Path   string
	Header http.Header
	Body   []byte
}

// LastRequest returns the last request received and how many were.
func (u *Upstream) LastRequest() (RecordedRequest, int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.last, u.n
}

// request is the subset of OpenAI request fields the mock honours.
type request struct {
	Model         string          `json:"model"`
	Stream        bool            `json:"stream"`
	Logprobs      json.RawMessage `json:"logprobs"` // bool (chat) or int (completions)
	TopLogprobs   int             `json:"top_logprobs"`
	MaxTokens     int             `json:"max_tokens"`
	MaxCompletion int             `json:"max_completion_tokens"`
	MaxOutput     int             `json:"max_output_tokens"`
	N             int             `json:"n"`
	Include       []string        `json:"include"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	EncodingFormat string          `json:"encoding_format"`
	Dimensions     int             `json:"dimensions"`
	Input          json.RawMessage `json:"input"`
}

func (u *Upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		apiError(w, http.StatusBadRequest, "could not read the body")
		return
	}
	u.mu.Lock()
	u.last = RecordedRequest{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body}
	u.n++
	u.mu.Unlock()

	var req request
	if err := json.Unmarshal(body, &req); err != nil {
		apiError(w, http.StatusBadRequest, "We could not parse the JSON body of your request.")
		return
	}
	h := fnv.New64a()
	h.Write(body)
	g := NewGen(u.Seed ^ h.Sum64())
	if u.Model != "" {
		g.Model = u.Model
	}
	if req.Model != "" {
		g.Model = req.Model
	}
	o := Options{Tokens: u.maxTokens(req), N: req.N, Usage: req.StreamOptions != nil && req.StreamOptions.IncludeUsage}
	lp := strings.TrimSpace(string(req.Logprobs))
	path := strings.TrimSuffix(r.URL.Path, "/")
	switch {
	case strings.HasSuffix(path, "/chat/completions"):
		o.Logprobs = lp == "true"
		o.TopLogprobs = req.TopLogprobs
		if req.Stream {
			u.stream(w, r, g.ChatStream(o))
			return
		}
		u.json(w, r, g.ChatCompletion(o))
	case strings.HasSuffix(path, "/completions"):
		if n, err := strconv.Atoi(lp); err == nil {
			o.Logprobs, o.TopLogprobs = true, n
		}
		o.N = 1
		if req.Stream {
			u.stream(w, r, g.CompletionStream(o))
			return
		}
		u.json(w, r, g.Completion(o))
	case strings.HasSuffix(path, "/responses"):
		o.TopLogprobs = req.TopLogprobs
		for _, inc := range req.Include {
			if inc == "message.output_text.logprobs" {
				o.Logprobs = true
			}
		}
		o.N = 1
		if req.Stream {
			u.stream(w, r, g.ResponsesStream(o))
			return
		}
		events := g.ResponsesStream(o)
		last := events[len(events)-1]
		i := bytes.Index(last, []byte(`"response":`))
		u.json(w, r, bytes.TrimSuffix(bytes.TrimSuffix(last[i+len(`"response":`):], []byte("\n\n")), []byte("}")))
	case strings.HasSuffix(path, "/embeddings"):
		dims := u.EmbeddingDims
		if dims <= 0 {
			dims = 16
		}
		if req.Dimensions > 0 {
			dims = req.Dimensions
		}
		n := 1
		var inputs []json.RawMessage
		if json.Unmarshal(req.Input, &inputs) == nil && len(inputs) > 0 {
			n = len(inputs)
		}
		u.json(w, r, g.Embeddings(n, dims, req.EncodingFormat == "base64"))
	default:
		apiError(w, http.StatusNotFound, "Invalid URL ("+r.Method+" "+r.URL.Path+")")
	}
}

func (u *Upstream) maxTokens(req request) int {
	n := u.MaxTokens
	if n <= 0 {
		n = 16
	}
	for _, m := range []int{req.MaxTokens, req.MaxCompletion, req.MaxOutput} {
		if m > 0 && m < n {
			n = m
		}
	}
	return n
}

func (u *Upstream) gzipOK(r *http.Request) bool {
	return u.Gzip && strings.Contains(r.Header.Get("Accept-Encoding"), "gzip")
}

func (u *Upstream) json(w http.ResponseWriter, r *http.Request, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	if u.gzipOK(r) {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write(b)
		zw.Close()
		b = buf.Bytes()
		w.Header().Set("Content-Encoding", "gzip")
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}

func (u *Upstream) stream(w http.ResponseWriter, r *http.Request, events [][]byte) {
	w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	fl, _ := w.(http.Flusher)
	var out io.Writer = w
	var zw *gzip.Writer
	if u.gzipOK(r) {
		w.Header().Set("Content-Encoding", "gzip")
		zw = gzip.NewWriter(w)
		out = zw
	}
	w.WriteHeader(http.StatusOK)
	for _, e := range events {
		out.Write(e)
		if zw != nil {
			zw.Flush()
		}
		if fl != nil {
			fl.Flush()
		}
	}
	if zw != nil {
		zw.Close()
	}
}

func apiError(w http.ResponseWriter, status int, msg string) {
	b, _ := json.Marshal(map[string]any{"error": map[string]any{
		"message": msg, "type": "invalid_request_error", "param": nil, "code": nil,
	}})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}
