package watermark

import (
	"testing"
)

// TestExplainAgreesWithScore: Explain scores as Score does, lists one
// entry per candidate group (a pair's contexts in one entry), every scored
// entry with one log factor per cell of the mixture, and GroupCounts
// accounts for every candidate.
func TestExplainAgreesWithScore(t *testing.T) {
	lex := DefaultLexicon()
	k := testKey(t, "explain", 77)
	m := NewMarker(lex, k)
	sm := NewVerifier(lex).NewSample()
	n := 0
	for _, c := range loadCorpora(t) {
		for _, text := range c.texts[:min(len(c.texts), 400)] {
			out, _ := m.Mark([]byte(text))
			sm.Add(out)
			n++
		}
	}
	want := sm.Score(k)
	got, gs := sm.Explain(k)
	if got != want {
		t.Fatalf("Explain's result %+v differs from Score's %+v", got, want)
	}
	if want.PValue > 1e-6 || want.Scored == 0 {
		t.Fatalf("marked text of %d responses: p = %g over %d trials; the test needs a mark to explain", n, want.PValue, want.Scored)
	}
	scored, occ := 0, 0
	cells := -1
	for _, g := range gs {
		occ += g.Count
		if len(g.LogFactor) == 0 {
			if g.Kind != "off" && g.Kind != "free" && g.Kind != "forced" {
				t.Errorf("%s group %q has no log factors", g.Kind, g.Set)
			}
			continue
		}
		// Result.Scored counts groups: a pair's contexts one each.
		scored += len(g.Groups)
		if cells < 0 {
			cells = len(g.LogFactor)
		}
		if len(g.LogFactor) != cells || len(g.Pi) == 0 || cells%len(g.Pi) != 0 {
			t.Fatalf("group %q: %d log factors, %d pi, want %d factors, a multiple of pi", g.Set, len(g.LogFactor), len(g.Pi), cells)
		}
		if g.Null <= 0 || g.Null >= 1 || g.Assigned > g.Count {
			t.Errorf("group %q: null %g, %d of %d assigned", g.Set, g.Null, g.Assigned, g.Count)
		}
	}
	if scored != want.Scored {
		t.Errorf("Explain lists %d scored trials, Score counts %d", scored, want.Scored)
	}
	total := 0
	for _, c := range sm.GroupCounts() {
		total += c
	}
	if int64(total) != want.Candidates || int64(occ) != want.Candidates {
		t.Errorf("candidates %d; GroupCounts holds %d, Explain's groups %d", want.Candidates, total, occ)
	}
}
