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
		s.ShiftTop(alts)
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
	for i := 0; i < 100; i++ {
		tok := []byte(fmt.Sprintf("token-%d-with-a-long-name", i))
		if s.Shift(tok, -1, false) != s2.Shift(tok, -1, false) || s.Shift(tok, -1, true) != -1 {
			t.Fatal("Shift is not a function of its arguments")
		}
		if d := s.Delta(tok); d > 0 || d < -0.3 {
			t.Fatalf("Delta %v outside [-0.3, 0]", d)
		}
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

// synthLogprobs simulates probe answers: per-token natural levels plus
// noise, plus (when marked) the shift a student inherits from mark.
func synthLogprobs(mark *Shifter, probes, vocab, k int, seed uint64, noise float64) []LogprobPosition {
	r := rand.New(rand.NewPCG(seed, 77))
	levels := rand.New(rand.NewPCG(1, 78)) // the same natural levels for every call
	level := make([]float64, vocab)
	for i := range level {
		level[i] = -1 - 2*levels.Float64()
	}
	var out []LogprobPosition
	for p := 0; p < probes; p++ {
		top := []TokenLogprob{{Token: "top", Logprob: -0.1}}
		for _, w := range r.Perm(vocab)[:k] {
			tok := fmt.Sprintf("w%d", w)
			v := level[w] + noise*r.NormFloat64()
			if mark != nil {
				v += mark.Delta([]byte(tok))
			}
			top = append(top, TokenLogprob{Token: tok, Logprob: math.Min(v, -0.2)})
		}
		out = append(out, LogprobPosition{Probe: p, Top: top})
	}
	return out
}

func TestLogprobVerifier(t *testing.T) {
	k := testKey(t, "lp", 5)
	m, _ := NewLogprobMark(k, 0.2)
	// The reference (the provider's unmarked answers to the same probes)
	// removes the tokens' natural levels; with it, 400 probes suffice.
	suspect := synthLogprobs(m.NewShifter(), 400, 2000, 19, 1, 0.3)
	ref := synthLogprobs(nil, 400, 2000, 19, 1, 0)
	marked, err := NewLogprobSample(suspect, ref)
	if err != nil {
		t.Fatal(err)
	}
	r := marked.ScoreSpectrum(k)
	if r.PValue > 1e-6 || r.Rank != 1 || r.KeyID != "lp" || r.Frequency != m.Frequency() || !r.Reference {
		t.Errorf("marked, with reference: %+v", r)
	}
	t.Logf("marked, with reference: z = %.2f, p = %.3g, peak ratio %.1f", r.Z, r.PValue, r.PeakRatio)
	// Without it the natural levels are noise: weaker, still ranked first.
	noRef, _ := NewLogprobSample(suspect, nil)
	if r := noRef.ScoreSpectrum(k); r.Z < 2 || r.Rank != 1 {
		t.Errorf("marked, no reference: %+v", r)
	}
	// Calibration: unmarked levels, 1,000 decoy keys; marked levels
	// against decoys too (a mark of one key is noise to another).
	plain, _ := NewLogprobSample(synthLogprobs(nil, 400, 2000, 19, 2, 0.3), ref)
	for name, ls := range map[string]*LogprobSample{"unmarked": plain, "marked, decoy keys": marked} {
		ps := make([]float64, 1000)
		below := 0
		for i := range ps {
			ps[i] = ls.Score(testKey(t, "", 5_000_000+uint64(i))).PValue
			if ps[i] < 0.01 {
				below++
			}
		}
		d, p := ksUniform(ps)
		t.Logf("%s: KS D = %.4f (p = %.3f), p < 0.01 in %d of 1000", name, d, p, below)
		if p < 0.001 || below > 15 {
			t.Errorf("%s: not calibrated: KS p = %.3g, %d of 1000 below 0.01", name, p, below)
		}
	}
	if _, err := NewLogprobSample([]LogprobPosition{{Top: []TokenLogprob{{"a", -1}}}}, nil); err != ErrNoLogprobs {
		t.Errorf("single-alternative positions: err = %v", err)
	}
}

func TestParseChatLogprobs(t *testing.T) {
	in := `{"choices":[{"index":0,"logprobs":{"content":[{"token":"Hi","logprob":-0.1,"top_logprobs":[{"token":"Hi","logprob":-0.1},{"token":"Hello","logprob":-2.5}]},{"token":"!","logprob":-0.2,"top_logprobs":[]}]}},{"index":1,"logprobs":null}]}

{"choices":[{"logprobs":{"content":[{"token":"x","logprob":-1,"top_logprobs":[{"token":"x","logprob":-1}]}]}}]}
`
	got, err := ParseChatLogprobs(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Probe != 0 || got[0].Index != 0 || len(got[0].Top) != 2 || got[0].Top[1] != (TokenLogprob{"Hello", -2.5}) || got[1].Probe != 2 {
		t.Errorf("parsed %+v", got)
	}
	if _, err := ParseChatLogprobs(strings.NewReader("{\"choices\":[]}\nnot json\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("err = %v, want one naming line 2", err)
	}
}

func FuzzParseChatLogprobs(f *testing.F) {
	f.Add([]byte(`{"choices":[{"logprobs":{"content":[{"token":"a","logprob":-1,"top_logprobs":[{"token":"a","logprob":-1},{"token":"b","logprob":-2}]}]}}]}`))
	f.Add([]byte("{}\n[]\n"))
	k := testKey(f, "", 1)
	f.Fuzz(func(t *testing.T, b []byte) {
		pos, err := ParseChatLogprobs(strings.NewReader(string(b)))
		if err != nil {
			return
		}
		ls, err := NewLogprobSample(pos, pos)
		if err != nil {
			return
		}
		r := ls.Score(k)
		if r.PValue < 0 || r.PValue > 1 || math.IsNaN(r.Z) && r.Candidates > 0 && r.PValue != 1 {
			t.Fatalf("result %+v", r)
		}
	})
}
