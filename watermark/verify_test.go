package watermark

import (
	"fmt"
	"math"
	"strings"
	"testing"
)

// TestLexicalCalibration: text never marked with a key gives conservative
// p-values over keys. 1,000 decoy keys (seeded) score each unmarked corpus
// and each corpus marked with another key; at every level a the share of
// keys with p <= a stays within a plus three binomial standard errors (the
// test is conservative by construction, so the share is usually far
// below a).
func TestLexicalCalibration(t *testing.T) {
	const decoys = 1000
	lex := DefaultLexicon()
	v := NewVerifier(lex)
	other := NewMarker(lex, testKey(t, "other", 424242))
	keys := make([]*Key, decoys)
	for i := range keys {
		keys[i] = testKey(t, "", 1_000_000+uint64(i))
	}
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
		ps := make([]float64, decoys)
		scored := 0
		for i, k := range keys {
			r := sm.Score(k)
			ps[i] = r.PValue
			scored += r.Scored
		}
		var line []string
		for _, a := range []float64{0.001, 0.01, 0.05, 0.2, 0.5} {
			n := 0
			for _, p := range ps {
				if p <= a {
					n++
				}
			}
			line = append(line, fmt.Sprintf("p<=%g: %d", a, n))
			if limit := a*decoys + 3*math.Sqrt(a*(1-a)*decoys); float64(n) > limit {
				t.Errorf("%s: p <= %g for %d of %d decoy keys (limit %.0f)", names[si], a, n, decoys, limit)
			}
		}
		t.Logf("%s: %d groups, %.0f scored per key; %s", names[si], sm.Groups(), float64(scored)/decoys, strings.Join(line, ", "))
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
	// Repeating the text adds positions but no trials: the groups are
	// the same, and only their counts grow (a count-based factor stays a
	// valid e-value for any counts, so the evidence may grow, never the
	// number of draws).
	sm.Add(marked)
	if r := sm.Score(k1); r.Scored != r1.Scored || r.Candidates != 2*r1.Candidates || r.PValue > r1.PValue {
		t.Errorf("repeated text changed the test: %+v vs %+v", r, r1)
	}
	if r := sm.Score(k2); r.PValue < 0.01 {
		t.Errorf("other key, repeated text: p = %g", r.PValue)
	}
}
