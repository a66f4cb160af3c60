package mutate

// THIS FILE IS A PLACEHOLDER: it fixes the package's exported API so other
// packages compile. The real implementations replace it.

import "errors"

// ErrNotJSON reports a document that is not a JSON object; it was passed
// through untouched.
var ErrNotJSON = errors.New("mutate: not a JSON object")

// Rewriter rewrites one JSON document at a time (an SSE event's data or a
// whole non-streamed body). One per HTTP stream; not safe for concurrent use.
// It carries the perturbation position across documents so that the output
// depends only on the sequence of documents, never on chunking.
type Rewriter struct {
	p    OutputPolicy
	seed uint64
}

// NewRewriter returns a Rewriter for policy p; seed keys the perturbation
// (derived from the session).
func NewRewriter(p OutputPolicy, seed uint64) *Rewriter { return &Rewriter{p: p, seed: seed} }

// Rewrite appends the rewritten doc to dst. When doc is not a JSON object it
// appends doc unchanged and returns an error wrapping ErrNotJSON.
func (r *Rewriter) Rewrite(dst, doc []byte) ([]byte, error) { return append(dst, doc...), nil }

// StreamStats counts what an SSEStream saw.
type StreamStats struct {
	Events     int64 // events framed
	Rewritten  int64 // events whose bytes changed
	Invalid    int64 // data events that were not JSON (passed through)
	FailedOpen bool  // the held tail exceeded maxHeld; the rest passed through raw
}

// SSEStream frames a text/event-stream body incrementally and rewrites each
// event's data with a Rewriter.
type SSEStream struct {
	rw      *Rewriter
	maxHeld int
	stats   StreamStats
}

// NewSSEStream returns a framer that holds at most maxHeld bytes of an
// unfinished event before failing open.
func NewSSEStream(rw *Rewriter, maxHeld int) *SSEStream {
	return &SSEStream{rw: rw, maxHeld: maxHeld}
}

// Write consumes chunk and appends to dst every event it completes,
// rewritten; the unfinished tail is held. With eos the tail is flushed.
func (s *SSEStream) Write(dst, chunk []byte, eos bool) []byte { return append(dst, chunk...) }

// Held is the number of bytes currently held back.
func (s *SSEStream) Held() int { return 0 }

// Stats returns the counts so far.
func (s *SSEStream) Stats() StreamStats { return s.stats }

// Gunzip decodes a gzip stream incrementally: each byte of input is
// decompressed once, whatever the chunking.
type Gunzip struct{ maxOut int64 }

// NewGunzip returns a decoder that fails once more than maxOut bytes have
// been produced (gzip bomb guard).
func NewGunzip(maxOut int64) *Gunzip { return &Gunzip{maxOut: maxOut} }

// Write feeds chunk and appends all output decodable so far to dst.
func (g *Gunzip) Write(dst, chunk []byte) ([]byte, error) { return dst, errors.New("not implemented") }

// Close ends the input, appends the remaining output and releases resources.
// It is safe to call more than once and after an error.
func (g *Gunzip) Close(dst []byte) ([]byte, error) { return dst, nil }

// Request is what the parser extracts from an OpenAI-compatible request body.
type Request struct {
	Model         string
	Prompt        string // text of the newest user turn (or the prompt/input)
	Messages      int    // messages in the conversation; 1 for prompt/input
	Stream        bool
	N             int // 0 when unset
	MaxTokens     int // max_tokens / max_completion_tokens / max_output_tokens; 0 when unset
	Temperature   *float64
	Logprobs      bool // logprobs requested in any form
	TopLogprobs   int  // top_logprobs, or the integer logprobs of legacy completions
	LogitBiasSize int
	Echo          bool
	ShapeKeys     []string // sorted top-level keys
}

// ParseRequest parses a chat/completions/responses/embeddings request body.
// maxPrompt caps the bytes of Prompt kept.
func ParseRequest(body []byte, maxPrompt int) (*Request, error) { return &Request{}, nil }

// RewriteRequest appends the body rewritten by p to dst and reports whether
// anything changed. Untouched bytes are copied through.
func RewriteRequest(dst, body []byte, p RequestPolicy) ([]byte, bool, error) {
	return append(dst, body...), false, nil
}
