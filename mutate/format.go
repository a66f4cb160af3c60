package mutate

import (
	"fmt"
	"strings"
)

// Format is the inference API a response body speaks. It chooses the walk
// a Rewriter runs over each document and the framing of a streamed body
// (Framing). Behind one gateway the same model is often reachable through
// several of these APIs, and each one leaks distributions in its own
// fields.
type Format uint8

// The formats. The zero value, FormatOpenAI, is what NewRewriter uses: any
// OpenAI-compatible body, its kind (chat, completions, responses,
// embeddings, with vLLM's extensions) read from each document's members.
// The four OpenAI kinds rewrite responses exactly like FormatOpenAI; they
// differ in their request fields (RequestFieldsFor).
const (
	FormatOpenAI            Format = iota // any OpenAI-compatible API (chat, completions, responses, embeddings; vLLM extensions)
	FormatOpenAIChat                      // /v1/chat/completions
	FormatOpenAICompletions               // /v1/completions (legacy text completions; vLLM echo and prompt_logprobs)
	FormatOpenAIResponses                 // /v1/responses
	FormatOpenAIEmbeddings                // /v1/embeddings
	FormatGemini                          // Google Gemini API and Vertex AI: generateContent, streamGenerateContent
	FormatTGI                             // Hugging Face text-generation-inference native: /generate, /generate_stream, /
	FormatLlamaCpp                        // llama.cpp server native: /completion, /completions, /infill
	FormatOllama                          // Ollama native: /api/generate, /api/chat
	FormatAnthropic                       // Anthropic Messages: /v1/messages
	numFormats
)

// formatNames are the names Format.String prints and ParseFormat reads
// (configuration spells formats this way).
func formatName(f Format) string {
	switch f {
	case FormatOpenAI:
		return "openai"
	case FormatOpenAIChat:
		return "openai-chat"
	case FormatOpenAICompletions:
		return "openai-completions"
	case FormatOpenAIResponses:
		return "openai-responses"
	case FormatOpenAIEmbeddings:
		return "openai-embeddings"
	case FormatGemini:
		return "gemini"
	case FormatTGI:
		return "tgi"
	case FormatLlamaCpp:
		return "llamacpp"
	case FormatOllama:
		return "ollama"
	case FormatAnthropic:
		return "anthropic"
	}
	return ""
}

// String returns the format's configuration name ("openai", "gemini",
// "tgi", "llamacpp", "ollama", "anthropic", "openai-chat", ...).
func (f Format) String() string {
	if n := formatName(f); n != "" {
		return n
	}
	return fmt.Sprintf("Format(%d)", uint8(f))
}

// Formats returns every format, in declaration order.
func Formats() []Format {
	fs := make([]Format, numFormats)
	for i := range fs {
		fs[i] = Format(i)
	}
	return fs
}

// ParseFormat returns the format named s (case-insensitive), the inverse
// of String.
func ParseFormat(s string) (Format, error) {
	for f := Format(0); f < numFormats; f++ {
		if strings.EqualFold(s, formatName(f)) {
			return f, nil
		}
	}
	return 0, fmt.Errorf("mutate: unknown API format %q", s)
}

// Framing is how a streamed response body is split into documents.
type Framing uint8

const (
	// FramingSSE is text/event-stream: each event's data is a document
	// (SSEStream).
	FramingSSE Framing = iota
	// FramingNDJSON is newline-delimited JSON (application/x-ndjson): each
	// line is a document (NDJSONStream).
	FramingNDJSON
)

// Framing returns how the format streams: NDJSON for Ollama's native API
// (https://docs.ollama.com/api/streaming; "stream" defaults to true there),
// server-sent events for every other one. Gemini's streamGenerateContent
// streams SSE only with ?alt=sse; without it the body is one JSON array of
// responses, which a Rewriter for FormatGemini reads as a whole (buffered)
// document.
func (f Format) Framing() Framing {
	if f == FormatOllama {
		return FramingNDJSON
	}
	return FramingSSE
}

// isOpenAI reports whether f is one of the OpenAI-compatible formats,
// which share one response walk (walkTop).
func (f Format) isOpenAI() bool { return f <= FormatOpenAIEmbeddings }

// acceptsArray reports whether a document of format f may be a JSON array
// at the top level: Gemini's streamGenerateContent without alt=sse (an
// array of responses), TGI's compatibility route / (an array of
// GenerateResponse) and llama.cpp's /completion with several prompts (an
// array of results).
func (f Format) acceptsArray() bool {
	return f == FormatGemini || f == FormatTGI || f == FormatLlamaCpp
}

// NewRewriterFor returns a Rewriter for responses of format f under policy
// p; seed keys the perturbation. NewRewriter(p, seed) is
// NewRewriterFor(FormatOpenAI, p, seed). A format outside the known ones
// is treated as FormatOpenAI.
func NewRewriterFor(f Format, p OutputPolicy, seed uint64, opts ...RewriterOption) *Rewriter {
	r := NewRewriter(p, seed)
	if f < numFormats {
		r.f = f
	}
	for _, o := range opts {
		o(r)
	}
	return r
}

// Format returns the format the Rewriter reads.
func (r *Rewriter) Format() Format { return r.f }

// Stream is a streamed response body being rewritten: the events or lines
// its framing delimits, each handed to a Rewriter. *SSEStream and
// *NDJSONStream implement it.
type Stream interface {
	// Write consumes chunk and appends to dst every document it completes,
	// rewritten; with eos the unfinished tail is flushed.
	Write(dst, chunk []byte, eos bool) []byte
	// Held is the number of bytes currently held back.
	Held() int
	// Stats returns the counts so far.
	Stats() StreamStats
}

// NewStream returns the framer for rw's format (Format.Framing): an
// NDJSONStream for Ollama, an SSEStream otherwise. maxHeld bounds the
// unfinished document held between chunks (<= 0: DefaultMaxHeld).
func NewStream(rw *Rewriter, maxHeld int) Stream {
	if rw.f.Framing() == FramingNDJSON {
		return NewNDJSONStream(rw, maxHeld)
	}
	return NewSSEStream(rw, maxHeld)
}
