package lab

import (
	"context"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/distillguard/distillguard/internal/corpus/corpustest"
)

// leadingFloat parses the number a cell starts with ("1.47e-03 (31/35)",
// "99.2%").
func leadingFloat(t *testing.T, cell string) float64 {
	t.Helper()
	f := strings.Fields(strings.TrimSuffix(cell, "%"))
	v, err := strconv.ParseFloat(strings.TrimSuffix(f[0], "%"), 64)
	if err != nil {
		t.Fatalf("cell %q: %v", cell, err)
	}
	return v
}

func TestWatermarkExperimentSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the small watermark experiment")
	}
	dir := corpustest.Require(t)
	p := WatermarkSizes(dir, 0.25)
	sec, err := RunWatermark(context.Background(), 7, p)
	if err != nil {
		t.Fatal(err)
	}
	rep := &Report{Title: "watermark", Sections: []Section{sec}}
	t.Logf("\n%s", rep.Markdown())

	// Detection grows with the harvest and the outputs verified: the
	// largest cell of the small run identifies the student.
	det := findTable(t, rep, "Lexical watermark: p-value")
	maxH, maxP := itoa(p.Harvests[len(p.Harvests)-1]), p.Probes[len(p.Probes)-1]
	if v := leadingFloat(t, cellOf(t, det, maxH, itoa(maxP)+" outputs")); v > 1e-2 {
		t.Errorf("student of %s marked responses, %d outputs: p = %g, want <= 0.01", maxH, maxP, v)
	}
	// False positives: students of unmarked text and unmarked corpora.
	fp := findTable(t, rep, "False positives over decoy keys")
	for _, r := range fp.Rows {
		if v := leadingFloat(t, r[3]); v < 97 {
			t.Errorf("%s: p >= 0.01 for only %v%% of decoy keys", r[0], v)
		}
	}
	// A uniform re-substitution over our whole table removes the mark.
	at := findTable(t, rep, "Attacks on")
	if v := leadingFloat(t, cellOf(t, at, "re-substitute uniformly within all our sets (our table known)", "p-value")); v < 0.01 {
		t.Errorf("full re-substitution left p = %g", v)
	}
	// Honest text: at most 10% of words change.
	cost := findTable(t, rep, "Cost to honest text")
	for _, r := range cost.Rows {
		if v := leadingFloat(t, r[4]); v > 10 {
			t.Errorf("%s: %v%% of words changed", r[0], v)
		}
		if v := leadingFloat(t, r[6]); v < 95 {
			t.Errorf("%s: chrF %v", r[0], v)
		}
	}
	// Logprob verifier: calibrated on unmarked students.
	lfp := findTable(t, rep, "Logprob watermark: false positives")
	for _, r := range lfp.Rows {
		if v := leadingFloat(t, r[3]); v < 97 {
			t.Errorf("logprob, %s (reference %s): p >= 0.01 for only %v%% of decoy keys", r[0], r[1], v)
		}
	}
	// Same seed, same section.
	again, err := RunWatermark(context.Background(), 7, p)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again, sec) {
		t.Error("two runs with the same seed differ")
	}
}
