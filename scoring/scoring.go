// Package scoring decides, per request, how much to trust the session behind
// it. The ext_proc server calls a Scorer once per request (after the request
// body is known) and maps the returned Verdict onto the output policy.
package scoring

import (
	"fmt"
	"time"
)

// Verdict is the graduated answer for one request. Order matters: a larger
// value is a stronger response.
type Verdict int

const (
	Allow Verdict = iota
	Degrade
	Throttle
	Block
)

var verdictNames = [...]string{"allow", "degrade", "throttle", "block"}

func (v Verdict) String() string {
	if v < 0 || int(v) >= len(verdictNames) {
		return fmt.Sprintf("verdict(%d)", int(v))
	}
	return verdictNames[v]
}

// ParseVerdict is the inverse of String.
func ParseVerdict(s string) (Verdict, error) {
	for i, n := range verdictNames {
		if n == s {
			return Verdict(i), nil
		}
	}
	return Allow, fmt.Errorf("unknown verdict %q (want allow, degrade, throttle or block)", s)
}

// Request is everything the scorer may look at. The ext_proc server fills it
// from the request headers, Envoy's request attributes and the parsed body;
// it never carries the raw body.
type Request struct {
	// Time is the request's clock: Envoy's request.time attribute when sent,
	// otherwise the server clock at arrival.
	Time time.Time
	// Header returns the first value of a lower-case request header, or "".
	Header func(name string) string
	// SourceAddress is Envoy's source.address attribute ("ip:port"), or "".
	SourceAddress string
	Path          string
	// Identity overrides Config.Identity for this request (nil: the
	// configured sources), in the same syntax: the route's credential.
	Identity []string

	// Parsed body fields (zero values when there was no JSON body).
	Endpoint      string // "chat", "completions", "responses", "embeddings" or ""
	Model         string
	Prompt        string // user-authored text of the newest turn, capped by the server
	Messages      int    // number of messages in the conversation (chat), 1 for a prompt
	Stream        bool
	N             int      // 0 when unset
	MaxTokens     int      // 0 when unset
	Temperature   *float64 // nil when unset
	Logprobs      bool
	TopLogprobs   int
	LogitBiasSize int
	Echo          bool
	// ShapeKeys are the sorted top-level JSON keys of the body, for the
	// request-shape fingerprint.
	ShapeKeys []string

	// Conversation structure (mutate.Request's fields of the same names).
	// An application's fixed parts (System, Tools) identify the
	// application; an agent's tool loop re-sends the same newest user turn
	// with tool calls and results after it (AfterUser > 0, ToolTurns > 0),
	// which is not a new query.
	System         string
	Tools          string
	ToolCount      int
	FirstUser      string // first user turn of the conversation when it is not the newest
	UserTurns      int
	AssistantTurns int
	ToolTurns      int
	AfterUser      int // messages after the newest user turn
}

// Signal is one named contribution to a score, kept for explanation.
type Signal struct {
	Name         string  `json:"name"`
	Value        float64 `json:"value"`        // raw measurement
	Contribution float64 `json:"contribution"` // share of the score
}

// Decision is a scorer's answer for one request.
type Decision struct {
	Verdict Verdict
	Score   float64 // in [0,1]
	Session string  // hashed session key, safe to log
	Signals []Signal
	// Shadow is true when the scorer computed Verdict in shadow mode: the
	// server tags the request but acts as for Allow.
	Shadow bool
	// Trusted names the trusted identity the request matched ("" for
	// none); an allow-always identity gets Allow whatever its score.
	Trusted string
	// Explanation says in words why the session is at its tier (which
	// signals, on what evidence). It is filled when the tier changes;
	// the admin API explains any session on demand.
	Explanation string
	// Probation is true while the identity has not earned standing
	// (Config.Standing): the server then applies the route's probation
	// tier where it would apply allow.
	Probation bool
}

// Scorer scores a request. Implementations must be safe for concurrent use
// and must not block on I/O: they run on the request path.
type Scorer interface {
	Score(r *Request) Decision
}

// Usage is what one response delivered, from the response's usage object
// (chat/completions: usage.prompt_tokens, usage.completion_tokens and
// usage.completion_tokens_details.reasoning_tokens; Responses API:
// usage.input_tokens, usage.output_tokens and
// usage.output_tokens_details.reasoning_tokens; streamed responses carry
// it in the last chunk when stream_options.include_usage is set), or
// counted from the stream when the upstream sends none.
// https://platform.openai.com/docs/api-reference/chat/object#chat/object-usage
type Usage struct {
	// Time is the response's end (request time of the exchange is fine).
	Time             time.Time
	PromptTokens     int
	CompletionTokens int // output tokens, reasoning tokens included
	ReasoningTokens  int
}

// ResponseObserver is implemented by scorers that also learn from what
// responses deliver. The server calls ObserveResponse once per response,
// after its last body chunk, with the Decision.Session of the request. It
// must be safe for concurrent use and must not block; it has no effect on
// a response already sent, only on the session's later requests.
type ResponseObserver interface {
	ObserveResponse(session string, u Usage)
}

// AllowAll is a Scorer that allows everything. It is the scorer used when
// scoring is disabled.
type AllowAll struct{}

func (AllowAll) Score(*Request) Decision { return Decision{Verdict: Allow} }
