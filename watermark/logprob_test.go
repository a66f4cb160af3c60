package watermark

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func TestShiftTopInvariants(t *testing.T) {
	m, err := NewLogprobMark(testKey(t, "", 3), 0.3)
	if err != nil {
		t.Fatal(err)
	}
	s := m.NewShifter()
	r := rand.New(rand.NewPCG(1, 1))
	for trial := 0; trial < 2000; trial++ {
		h := 2*r.Float64() - 1
		if trial%7 == 0 {
			h = []float64{-1, 1, 3, -3, math.NaN()}[trial%5]
		}
		n := 1 + r.IntN(20)
		alts := make([]TokenLogprob, n)
		for i := range alts {
			alts[i] = TokenLogprob{Token: fmt.Sprintf("t%d", r.IntN(500)), Logprob: -r.ExpFloat64() * 3}
			if r.IntN(10) == 0 {
				alts[i].Logprob = 0
			}
		}
		slices.SortStableFunc(alts, func(a, b TokenLogprob) int { return -compareF(a.Logprob, b.Logprob) })
		orig := slices.Clone(alts)
		s.ShiftTop(h, alts)
		if alts[0] != orig[0] {
			t.Fatalf("first alternative changed: %v -> %v", orig[0], alts[0])
		}
		for i := range alts {
			d := alts[i].Logprob - orig[i].Logprob
			if alts[i].Logprob > 0 || d > 0 || d < -0.3-1e-12 || alts[i].Token != orig[i].Token {
				t.Fatalf("alternative %d: %v -> %v", i, orig[i], alts[i])
			}
			if i > 0 && alts[i].Logprob > alts[i-1].Logprob {
				t.Fatalf("order broken at %d: %v", i, alts)
			}
		}
	}
	// Pure: the same token and value give the same result on any shifter.
	s2 := m.NewShifter()
	var plus, minus int
	for i := 0; i < 200; i++ {
		tok := []byte(fmt.Sprintf("token-%d-with-a-long-name", i))
		h := float64(i%21)/10 - 1
		if s.Shift(h, tok, -1, false) != s2.Shift(h, tok, -1, false) || s.Shift(h, tok, -1, true) != -1 {
			t.Fatal("Shift is not a function of its arguments")
		}
		if d := s.Delta(h, tok); d > 0 || d < -0.3 {
			t.Fatalf("Delta %v outside [-0.3, 0]", d)
		}
		// The two groups move in opposite directions with h, by A in
		// total from h = -1 to h = 1.
		lo, hi := s.Delta(-1, tok), s.Delta(1, tok)
		switch s.Sign(tok) {
		case 1:
			plus++
			if lo != -0.3 || hi != 0 {
				t.Fatalf("group +1: Delta(-1) %v, Delta(1) %v", lo, hi)
			}
		case -1:
			minus++
			if lo != 0 || hi != -0.3 {
				t.Fatalf("group -1: Delta(-1) %v, Delta(1) %v", lo, hi)
			}
		}
	}
	if plus < 70 || minus < 70 {
		t.Errorf("token groups %d / %d of 200", plus, minus)
	}
	if _, err := NewLogprobMark(testKey(t, "", 3), 0); err == nil {
		t.Error("amplitude 0 accepted")
	}
	if _, err := NewLogprobMark(testKey(t, "", 3), math.NaN()); err == nil {
		t.Error("amplitude NaN accepted")
	}
}

func compareF(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// synthModel is a toy model over vocab tokens whose natural logprobs
// depend on the probe's features (a per-token level and slope), as a real
// model's do.
type synthModel struct {
	level []float64
	slope [][]float64
}

func newSynthModel(vocab, dim int) *synthModel {
	r := rand.New(rand.NewPCG(1, 78))
	m := &synthModel{level: make([]float64, vocab), slope: make([][]float64, vocab)}
	for i := range m.level {
		m.level[i] = -2 - 2*r.Float64()
		m.slope[i] = make([]float64, dim)
		for j := range m.slope[i] {
			m.slope[i][j] = 0.3 * r.NormFloat64()
		}
	}
	return m
}

// synthProbes returns n probes with standard normal features.
func synthProbes(n, dim int, seed uint64) []ProbeContext {
	r := rand.New(rand.NewPCG(seed, 79))
	out := make([]ProbeContext, n)
	for i := range out {
		out[i].Features = make([]float64, dim)
		for j := range out[i].Features {
			out[i].Features[j] = r.NormFloat64()
		}
	}
	return out
}

// answers simulates answers to probes: k alternatives per probe after a
// fixed first token, the natural logprob plus noise, plus (when marked) the
// shift a student fully inherits from mark.
func (m *synthModel) answers(mark *Shifter, probes []ProbeContext, k int, seed uint64, noise float64) []LogprobPosition {
	r := rand.New(rand.NewPCG(seed, 77))
	var out []LogprobPosition
	for p, pc := range probes {
		top := []TokenLogprob{{Token: "top", Logprob: -0.1}}
		h := 0.0
		if mark != nil {
			h = mark.VectorContext(pc.Features)
		}
		for _, w := range rand.New(rand.NewPCG(uint64(p), 80)).Perm(len(m.level))[:k] {
			tok := fmt.Sprintf("w%d", w)
			v := m.level[w] + noise*r.NormFloat64()
			for j, x := range pc.Features {
				v += m.slope[w][j] * x
			}
			if mark != nil {
				v += mark.Delta(h, []byte(tok))
			}
			top = append(top, TokenLogprob{Token: tok, Logprob: math.Min(v, -0.2)})
		}
		slices.SortStableFunc(top[1:], func(a, b TokenLogprob) int { return -compareF(a.Logprob, b.Logprob) })
		out = append(out, LogprobPosition{Probe: p, Top: top})
	}
	return out
}

func TestLogprobVerifier(t *testing.T) {
	k := testKey(t, "lp", 5)
	m, _ := NewLogprobMark(k, 0.2)
	model := newSynthModel(300, 16)
	probes := synthProbes(400, 16, 3)
	// With the reference (the provider's unmarked answers to the same
	// probes) the tokens' natural levels and slopes cancel: 400 probes
	// with 19 alternatives each give a strong signal.
	suspect := model.answers(m.NewShifter(), probes, 19, 1, 0.3)
	ref := model.answers(nil, probes, 19, 1, 0)
	marked, err := NewLogprobSample(suspect, ref, probes)
	if err != nil {
		t.Fatal(err)
	}
	r := marked.Score(k)
	if r.PValue > 1e-6 || r.KeyID != "lp" || !r.Reference || r.PValue < r.PValueNormal || r.Probes != 400 {
		t.Errorf("marked, with reference: %+v", r)
	}
	t.Logf("marked, with reference: z = %.2f, p = %.3g (normal %.3g)", r.Z, r.PValue, r.PValueNormal)
	// Without it, each token's natural slope along the key's projection
	// is noise that more probes do not average away: weaker.
	noRef, _ := NewLogprobSample(suspect, nil, probes)
	rn := noRef.Score(k)
	t.Logf("marked, no reference: z = %.2f, p = %.3g", rn.Z, rn.PValue)
	if rn.Z < 1 || rn.Z >= r.Z {
		t.Errorf("marked, no reference: %+v", rn)
	}
	// Calibration: 1,000 decoy keys on an unmarked suspect and on the
	// marked one (a mark of one key is noise to another), with and
	// without reference. The bound is conservative, so at every level a
	// the share below a stays under a (plus three binomial standard
	// errors).
	plain := model.answers(nil, probes, 19, 2, 0.3)
	for _, c := range []struct {
		name      string
		susp, ref []LogprobPosition
	}{{"unmarked", plain, ref}, {"unmarked, no reference", plain, nil}, {"marked, decoy keys", suspect, ref}, {"marked, decoy keys, no reference", suspect, nil}} {
		ls, err := NewLogprobSample(c.susp, c.ref, probes)
		if err != nil {
			t.Fatal(err)
		}
		ps := make([]float64, 1000)
		for i := range ps {
			ps[i] = ls.Score(testKey(t, "", 5_000_000+uint64(i))).PValue
		}
		for _, a := range []float64{0.01, 0.05, 0.2} {
			n := 0
			for _, p := range ps {
				if p <= a {
					n++
				}
			}
			if limit := 1000*a + 3*math.Sqrt(1000*a*(1-a)); float64(n) > limit {
				t.Errorf("%s: p <= %g for %d of 1000 decoy keys", c.name, a, n)
			}
		}
	}
	if _, err := NewLogprobSample([]LogprobPosition{{Top: []TokenLogprob{{"a", -1}}}}, nil, probes); err != ErrNoLogprobs {
		t.Errorf("single-alternative positions: err = %v", err)
	}
	if _, err := NewLogprobSample(suspect, nil, probes[:10]); err == nil || !strings.Contains(err.Error(), "no probe context") {
		t.Errorf("missing contexts: err = %v", err)
	}
}

func TestContextSignals(t *testing.T) {
	m, _ := NewLogprobMark(testKey(t, "", 8), 0.2)
	s := m.NewShifter()
	// Text: case and separators do not matter, words do; no words, no
	// signal.
	a := s.TextContext([]byte("How many apples does Maria have?"))
	if b := s.TextContext([]byte("how   MANY apples, does maria have")); a != b {
		t.Errorf("case/separators changed h: %v vs %v", a, b)
	}
	if s.TextContext([]byte("  ?! ")) != 0 || s.VectorContext(nil) != 0 {
		t.Error("empty context gave a signal")
	}
	// Over many prompts h spreads over [-1, 1] with mean near 0.
	r := rand.New(rand.NewPCG(4, 4))
	var sum, sq float64
	for i := 0; i < 4000; i++ {
		var b strings.Builder
		for j := 0; j < 5+r.IntN(30); j++ {
			fmt.Fprintf(&b, "w%d ", r.IntN(5000))
		}
		h := s.TextContext([]byte(b.String()))
		if h < -1 || h > 1 {
			t.Fatalf("h = %v", h)
		}
		sum += h
		sq += h * h
	}
	if mean, ms := sum/4000, sq/4000; math.Abs(mean) > 0.05 || ms < 0.3 || ms > 0.55 {
		t.Errorf("text signal mean %.3f, mean square %.3f (want ~0, ~0.43)", mean, ms)
	}
	// Vector: a keyed projection, linear in x before the sine.
	x := []float64{0.3, -1.2, 0.7, 2.0}
	u := math.Asin(s.VectorContext(x))
	neg := make([]float64, len(x))
	for i := range x {
		neg[i] = -x[i] / 2
	}
	if d := math.Asin(s.VectorContext(neg)) + u/2; math.Abs(d) > 1e-12 {
		t.Errorf("projection not linear: %v", d)
	}
	// Two keys project differently: their signals over many prompts are
	// nearly uncorrelated.
	os := func() *Shifter { o, _ := NewLogprobMark(testKey(t, "", 9), 0.2); return o.NewShifter() }()
	var xy, xx, yy float64
	for i := 0; i < 2000; i++ {
		p := []byte(fmt.Sprintf("w%d w%d w%d w%d w%d w%d w%d w%d", i, i+1, i*7, i*13, i+99, i*3, i+5000, i*31))
		x, y := s.TextContext(p), os.TextContext(p)
		xy, xx, yy = xy+x*y, xx+x*x, yy+y*y
	}
	if c := xy / math.Sqrt(xx*yy); math.Abs(c) > 0.1 {
		t.Errorf("two keys' text signals correlate: %.3f", c)
	}
}

func TestParseLogprobs(t *testing.T) {
	in := `{"choices":[{"index":0,"logprobs":{"content":[{"token":"Hi","logprob":-0.1,"top_logprobs":[{"token":"Hi","logprob":-0.1},{"token":"Hello","logprob":-2.5}]},{"token":"!","logprob":-0.2,"top_logprobs":[]}]}},{"index":1,"logprobs":null}]}

{"choices":[{"logprobs":{"content":[{"token":"x","logprob":-1,"top_logprobs":[{"token":"x","logprob":-1}]}]}}]}
`
	got, err := ParseLogprobs(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Probe != 0 || got[0].Index != 0 || len(got[0].Top) != 2 || got[0].Top[1] != (TokenLogprob{"Hello", -2.5}) || got[1].Probe != 2 {
		t.Errorf("parsed %+v", got)
	}
	if _, err := ParseLogprobs(strings.NewReader("{\"choices\":[]}\nnot json\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("err = %v, want one naming line 2", err)
	}
}

func FuzzParseLogprobs(f *testing.F) {
	f.Add([]byte(`{"choices":[{"logprobs":{"content":[{"token":"a","logprob":-1,"top_logprobs":[{"token":"a","logprob":-1},{"token":"b","logprob":-2}]}]}}]}`))
	f.Add([]byte("{}\n[]\n"))
	f.Add([]byte(`{"choices":[{"text":"a b","logprobs":{"tokens":["a"," b"],"top_logprobs":[{"a":-1,"c":-2},null,{}]}}]}`))
	f.Add([]byte(`{"candidates":[{"logprobsResult":{"topCandidates":[{"candidates":[{"token":"a","logProbability":-1},{"token":"b","logProbability":-3}]},{}]}}]}`))
	k := testKey(f, "", 1)
	f.Fuzz(func(t *testing.T, b []byte) {
		pos, err := ParseLogprobs(strings.NewReader(string(b)))
		if err != nil {
			return
		}
		probes := make([]ProbeContext, 0, len(pos))
		for _, p := range pos {
			for len(probes) <= p.Probe && len(probes) < 1<<16 {
				probes = append(probes, ProbeContext{Text: fmt.Sprint("probe ", len(probes))})
			}
		}
		ls, err := NewLogprobSample(pos, pos, probes)
		if err != nil {
			return
		}
		r := ls.Score(k)
		if !(r.PValue >= 0 && r.PValue <= 1) || math.IsNaN(r.Z) {
			t.Fatalf("result %+v", r)
		}
	})
}
