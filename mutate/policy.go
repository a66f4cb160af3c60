// Package mutate rewrites OpenAI-compatible request and response bodies at the
// field level: logprobs, alternatives, embeddings, logit_bias, n. Every byte
// that a policy does not touch is copied through unchanged (field order,
// whitespace, content text), and the output never depends on how the body was
// split into chunks.
package mutate

// OutputPolicy says how response bodies are rewritten.
type OutputPolicy struct {
	// StripLogprobs replaces every logprobs value with the form its API
	// uses for "absent": null for choices[].logprobs and prompt_logprobs,
	// [] for Responses API logprobs arrays.
	StripLogprobs bool
	// RoundDecimals rounds every logprob value to this many decimals.
	// Negative leaves values as they are.
	RoundDecimals int
	// MaxAlternatives caps top_logprobs alternatives per position. Negative
	// leaves them; 0 empties them.
	MaxAlternatives int
	// Perturb is the scale of the noise added to logprob values (before
	// rounding). The noise is seeded by the session and the token position,
	// keeps the chosen token ranked first and every value <= 0. 0 disables.
	Perturb float64
	// EmbeddingDecimals rounds embedding values (float arrays and base64
	// float32). Negative leaves them.
	EmbeddingDecimals int
	// Watermark marks generated text (and, where logprobs are kept, the
	// returned alternatives) with the gateway's watermark key. The policy
	// only says that the tier wants it: the marks themselves are given to
	// NewRewriterFor as options (WithTextRewriter, WithLogprobShift), built
	// from the configured key, so that no key lives in a policy value.
	Watermark bool
}

// Passthrough returns the policy that changes nothing. It is a function,
// not a variable, so that no caller can change what every other caller
// gets.
func Passthrough() OutputPolicy {
	return OutputPolicy{RoundDecimals: -1, MaxAlternatives: -1, EmbeddingDecimals: -1}
}

// IsNoop reports whether p leaves every body unchanged, so callers can skip
// parsing entirely.
func (p OutputPolicy) IsNoop() bool {
	return !p.StripLogprobs && p.RoundDecimals < 0 && p.MaxAlternatives < 0 && p.Perturb == 0 && p.EmbeddingDecimals < 0 && !p.Watermark
}

// RequestPolicy says how request bodies are rewritten before they go upstream.
type RequestPolicy struct {
	// MaxTopLogprobs caps top_logprobs (chat, responses) and the integer
	// logprobs of legacy completions. Negative leaves them.
	MaxTopLogprobs int
	// MaxN caps n (and best_of for legacy completions). Non-positive leaves it.
	MaxN int
	// DropLogitBiasWithLogprobs removes logit_bias when the request also asks
	// for logprobs: together they recover the output projection (Carlini et
	// al. 2024, Finlayson et al. 2024).
	DropLogitBiasWithLogprobs bool
	// DropLogitBias removes logit_bias always.
	DropLogitBias bool
	// StripLogprobs removes the logprobs request entirely (logprobs false,
	// top_logprobs removed).
	StripLogprobs bool
}

// IsNoop reports whether p leaves every request unchanged.
func (p RequestPolicy) IsNoop() bool {
	return p.MaxTopLogprobs < 0 && p.MaxN <= 0 && !p.DropLogitBiasWithLogprobs && !p.DropLogitBias && !p.StripLogprobs
}

// PerturbSeed keys the output perturbation of one request by its session
// and its request body (FNV-1a 64). Repeating a request therefore returns
// the same noise, so averaging repeated answers buys nothing; distinct
// requests get independent noise, so an attacker cannot solve for a
// per-session offset shared by every answer (the attack lab measured that
// weakness of a session-only key on the Tramer et al. 2016 attack).
func PerturbSeed(session string, body []byte) uint64 {
	const prime = 1099511628211
	h := uint64(14695981039346656037)
	for i := 0; i < len(session); i++ {
		h ^= uint64(session[i])
		h *= prime
	}
	h ^= 0xff // separator: no session/body split collides with another
	h *= prime
	for _, b := range body {
		h ^= uint64(b)
		h *= prime
	}
	return h
}
