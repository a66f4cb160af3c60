package watermark

import "math"

// exactLimit is the largest number of independent trials whose
// Poisson-binomial distribution is computed exactly (O(n^2) time, O(n)
// memory: 2,000 trials take 2M multiply-adds, so a thousand decoy keys stay
// cheap). Beyond it the tail is the normal approximation with continuity
// correction, whose error for n > 2,000 trials with success probabilities bounded away from 0 and 1 is
// far below any decision threshold (Berry-Esseen: O(1/sqrt(n))).
const exactLimit = 2000

// Tail is the upper tail of a Poisson-binomial count (a sum of independent
// Bernoulli(p_i)) at an observed value k.
type Tail struct {
	Mean, Variance float64
	// Z is (k - mean) / sd, the count's standardised excess.
	Z float64
	// PValue is P(X >= k): exact when Exact, else the normal approximation
	// with continuity correction, 1 - Phi((k - 0.5 - mean) / sd).
	PValue float64
	// PEqual is P(X = k) (exact mode only; used for randomised p-values).
	PEqual float64
	Exact  bool
}

// poissonBinomialTail returns the upper tail of sum of Bernoulli(ps[i]) at k.
func poissonBinomialTail(ps []float64, k int) Tail {
	var t Tail
	for _, p := range ps {
		t.Mean += p
		t.Variance += p * (1 - p)
	}
	if t.Variance > 0 {
		t.Z = (float64(k) - t.Mean) / math.Sqrt(t.Variance)
	}
	n := len(ps)
	switch {
	case k <= 0:
		t.PValue, t.Exact = 1, true
		if n == 0 {
			t.PEqual = 1
		}
		if k == 0 {
			t.PEqual = 1
			for _, p := range ps {
				t.PEqual *= 1 - p
			}
		}
		return t
	case k > n:
		t.PValue, t.Exact = 0, true
		return t
	case n > exactLimit:
		sd := math.Sqrt(t.Variance)
		if sd == 0 {
			t.PValue = 0
			if float64(k) <= t.Mean {
				t.PValue = 1
			}
			return t
		}
		t.PValue = normalUpper((float64(k) - 0.5 - t.Mean) / sd)
		return t
	}
	// dist[j] = P(j successes among the trials so far).
	dist := make([]float64, n+1)
	dist[0] = 1
	for i, p := range ps {
		q := 1 - p
		for j := i + 1; j >= 1; j-- {
			dist[j] = dist[j]*q + dist[j-1]*p
		}
		dist[0] *= q
	}
	var tail float64
	for j := n; j >= k; j-- {
		tail += dist[j]
	}
	t.PValue = math.Min(tail, 1)
	t.PEqual = dist[k]
	t.Exact = true
	return t
}

// normalUpper is 1 - Phi(z), accurate in the far tail (erfc, not 1-erf).
func normalUpper(z float64) float64 { return 0.5 * math.Erfc(z/math.Sqrt2) }
