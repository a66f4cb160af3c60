package watermark

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestPoissonBinomialTail(t *testing.T) {
	// Exact mode against brute-force enumeration of all outcomes.
	r := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 30; trial++ {
		n := 1 + r.IntN(12)
		ps := make([]float64, n)
		for i := range ps {
			ps[i] = r.Float64()
		}
		dist := make([]float64, n+1)
		for mask := 0; mask < 1<<n; mask++ {
			p, c := 1.0, 0
			for i := range ps {
				if mask&(1<<i) != 0 {
					p *= ps[i]
					c++
				} else {
					p *= 1 - ps[i]
				}
			}
			dist[c] += p
		}
		for k := 0; k <= n+1; k++ {
			var want float64
			for j := k; j <= n; j++ {
				want += dist[j]
			}
			got := poissonBinomialTail(ps, k)
			if math.Abs(got.PValue-math.Min(want, 1)) > 1e-12 || !got.Exact {
				t.Fatalf("n=%d k=%d: p = %v, want %v", n, k, got.PValue, want)
			}
			if k <= n && math.Abs(got.PEqual-dist[k]) > 1e-12 {
				t.Fatalf("n=%d k=%d: P(X=k) = %v, want %v", n, k, got.PEqual, dist[k])
			}
		}
	}
	// Just past the exact limit the normal approximation agrees with the
	// exact tail computed below the limit on the same distribution.
	ps := make([]float64, exactLimit+1)
	for i := range ps {
		ps[i] = 0.3 + 0.4*float64(i%5)/4
	}
	mean := 0.0
	for _, p := range ps {
		mean += p
	}
	for _, dz := range []float64{0, 1, 2, 3} {
		k := int(mean + dz*math.Sqrt(float64(len(ps))*0.22))
		approx := poissonBinomialTail(ps, k)
		exact := poissonBinomialTail(ps[:exactLimit], k-int(math.Round(ps[exactLimit])))
		if approx.Exact || !exact.Exact {
			t.Fatal("modes")
		}
		if rel := math.Abs(approx.PValue-exact.PValue) / exact.PValue; rel > 0.1 {
			t.Errorf("k=%d: normal %g vs exact %g (rel %.3f)", k, approx.PValue, exact.PValue, rel)
		}
	}
}

// ksUniform returns the Kolmogorov-Smirnov statistic of xs against U(0,1)
// and its asymptotic p-value (Kolmogorov distribution, Stephens' small-n
// correction; Numerical Recipes 3rd ed., 14.3.3).
func ksUniform(xs []float64) (d, p float64) {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := float64(len(s))
	for i, x := range s {
		d = math.Max(d, math.Max(float64(i+1)/n-x, x-float64(i)/n))
	}
	en := math.Sqrt(n)
	lambda := (en + 0.12 + 0.11/en) * d
	for j := 1; j <= 100; j++ {
		term := 2 * math.Pow(-1, float64(j-1)) * math.Exp(-2*float64(j*j)*lambda*lambda)
		p += term
		if math.Abs(term) < 1e-12 {
			break
		}
	}
	return d, math.Min(math.Max(p, 0), 1)
}

// TestLexicalCalibration: text never marked with a key gives uniform
// p-values over keys. 1,000 decoy keys (seeded) score each unmarked corpus,
// and a corpus marked with another key; the randomised p-values pass a KS
// test against U(0,1) and the conservative p-values are below 0.01 in at
// most 1.5% of trials (the target is 1%; the slack covers the binomial
// spread of 1,000 trials).
func TestLexicalCalibration(t *testing.T) {
	const decoys = 1000
	lex := DefaultLexicon()
	v := NewVerifier(lex)
	other := NewMarker(lex, testKey(t, "other", 424242))
	keys := make([]*Key, decoys)
	for i := range keys {
		keys[i] = testKey(t, "", 1_000_000+uint64(i))
	}
	u := rand.New(rand.NewPCG(5, 6))
	var samples []*Sample
	var names []string
	for _, c := range loadCorpora(t) {
		plain, marked := v.NewSample(), v.NewSample()
		for _, text := range c.texts {
			plain.Add([]byte(text))
			out, _ := other.Mark([]byte(text))
			marked.Add(out)
		}
		samples = append(samples, plain, marked)
		names = append(names, c.name+" (unmarked)", c.name+" (marked with another key)")
	}
	for si, sm := range samples {
		rand01 := make([]float64, decoys)
		below := 0
		for i, k := range keys {
			r := sm.Score(k)
			rand01[i] = r.Randomized(u.Float64())
			if r.PValue < 0.01 {
				below++
			}
		}
		d, p := ksUniform(rand01)
		t.Logf("%s: %d groups; KS D = %.4f (p = %.3f); conservative p < 0.01 in %d of %d decoy keys",
			names[si], sm.Groups(), d, p, below, decoys)
		if p < 0.001 {
			t.Errorf("%s: randomised p-values not uniform: KS D = %.4f, p = %.2g", names[si], d, p)
		}
		if below > decoys*15/1000 {
			t.Errorf("%s: p < 0.01 for %d of %d decoy keys", names[si], below, decoys)
		}
	}
}

func TestScoreDistinguishesKeys(t *testing.T) {
	lex := DefaultLexicon()
	k1, k2 := testKey(t, "one", 1), testKey(t, "two", 2)
	text := synthText(9, 60)
	marked, st := NewMarker(lex, k1).Mark(text)
	if st.Substituted == 0 {
		t.Fatal("nothing substituted")
	}
	sm := NewVerifier(lex).NewSample()
	sm.Add(marked)
	r1, r2 := sm.Score(k1), sm.Score(k2)
	if r1.KeyID != "one" || r1.PValue > 1e-10 || r1.Matches != r1.Scored {
		t.Errorf("true key: %+v", r1)
	}
	if r2.PValue < 0.01 {
		t.Errorf("other key: p = %g", r2.PValue)
	}
	if r1.Candidates != st.Candidates || r1.Texts != 1 || r1.Words != st.Words {
		t.Errorf("counts %+v vs marker %+v", r1, st)
	}
	// Repeating the text adds positions but no independent trials.
	sm.Add(marked)
	if r := sm.Score(k1); r.Scored != r1.Scored || r.Candidates != 2*r1.Candidates || r.PValue != r1.PValue {
		t.Errorf("repeated text changed the test: %+v vs %+v", r, r1)
	}
}
