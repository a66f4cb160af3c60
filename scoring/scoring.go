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
}

// Scorer scores a request. Implementations must be safe for concurrent use
// and must not block on I/O: they run on the request path.
type Scorer interface {
	Score(r *Request) Decision
}

// AllowAll is a Scorer that allows everything. It is the scorer used when
// scoring is disabled.
type AllowAll struct{}

func (AllowAll) Score(*Request) Decision { return Decision{Verdict: Allow} }
