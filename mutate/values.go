package mutate

import "math"

// Probability-valued fields. llama.cpp's /completion reports probabilities
// rather than logprobs in two layouts (the old {"content", "probs":
// [{"tok_str", "prob"}]} and, with post_sampling_probs, {"prob",
// "top_probs"}; https://github.com/ggml-org/llama.cpp/blob/master/tools/server/README.md).
// The policy keeps its meaning there: values are read as their logarithm,
// so that ranking, the noise scale (in nats) and the clamp to <= 0 (a
// probability <= 1) are those of logprobs, and are printed back as
// probabilities, rounded to RoundDecimals decimals as probabilities.

// value parses the number b as a logprob; under valProb a probability is
// returned as its natural logarithm (0 becomes -Inf, which ranks last and
// prints back as 0). A negative probability is not a value.
func (r *Rewriter) value(b []byte) (float64, bool) {
	v, ok := parseNumber(b)
	if ok && r.valProb {
		if v < 0 {
			return 0, false
		}
		v = math.Log(v)
	}
	return v, ok
}

// patchProb writes the probability of the noised log value out over the
// number at s:e (whose log value is orig), rounded to k decimals.
func (r *Rewriter) patchProb(s, e int, orig, out float64, k int) {
	if out == orig {
		r.roundNum(s, e, k)
		return
	}
	r.add(numPatch(s, e, math.Exp(out), k))
}
