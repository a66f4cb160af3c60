package lab

import (
	"context"
	"math"
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

	// Detection: past the targets the frequency-preserving mark
	// identifies the student (it needs more outputs than a mark that
	// ignores frequencies, which the capacity table shows).
	// One student's p-value varies a lot with its own sampling, so the
	// students of the largest output column and of the capacity table's
	// first row are combined (Fisher: -2 sum log p is chi-squared with 2k
	// degrees of freedom when every p is uniform).
	large := findTable(t, rep, "Lexical watermark: larger harvests")
	capTab := findTable(t, rep, "Lexical watermark: capacity against visibility")
	bigP := itoa(p.LargeProbes[len(p.LargeProbes)-1]) + " outputs"
	var fisher float64
	var k int
	for _, r := range large.Rows {
		fisher -= 2 * math.Log(math.Max(leadingFloat(t, cellOf(t, large, r[0], bigP)), 1e-300))
		k++
	}
	fisher -= 2 * math.Log(math.Max(leadingFloat(t, capTab.Rows[0][3]), 1e-300))
	k++
	if pc := chiSquaredUpper(fisher, 2*k); pc > 1e-3 {
		t.Errorf("students at %s: Fisher-combined p = %g over %d students, want <= 1e-3", bigP, pc, k)
	}
	if len(capTab.Rows) != 3 {
		t.Fatalf("capacity table rows: %v", capTab.Rows)
	}
	own, none := leadingFloat(t, capTab.Rows[0][1]), leadingFloat(t, capTab.Rows[2][1])
	if !(own > 5 && own < none && none == 100) {
		t.Errorf("keyed shares: own statistics %v%%, none %v%%", own, none)
	}
	if v := leadingFloat(t, capTab.Rows[2][3]); v > 1e-6 {
		t.Errorf("table-weight marking, largest harvest: p = %g", v)
	}
	// Visibility: at ten times the harvest the frequency-preserving mark
	// is not told apart from unmarked text; a mark that ignores the
	// statistics, and an unconditional one, are.
	vis := findTable(t, rep, "Visibility in word frequencies")
	big := itoa(10 * maxHarvest(p))
	for _, r := range vis.Rows {
		if r[0] != big {
			continue
		}
		pv := leadingFloat(t, r[6])
		switch {
		case strings.HasPrefix(r[1], "none"), strings.Contains(r[1], "statistics of own output"):
			if pv < 0.01 {
				t.Errorf("%s at %s responses: chi-squared p = %g", r[1], big, pv)
			}
		case strings.Contains(r[1], "table weights"), strings.HasPrefix(r[1], "unconditional"):
			if pv > 1e-6 {
				t.Errorf("%s at %s responses: chi-squared p = %g, want visible", r[1], big, pv)
			}
		}
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
	// Replications at the target: the students of marked text are
	// identified together (Fisher), the students of the same text
	// unmarked never are, with the same key.
	reps := findTable(t, rep, "Lexical watermark at the target over")
	if len(reps.Rows) != p.Seeds {
		t.Fatalf("replications: %d rows, want %d", len(reps.Rows), p.Seeds)
	}
	var fr float64
	for _, r := range reps.Rows {
		fr -= 2 * math.Log(math.Max(leadingFloat(t, r[1]), 1e-300))
		if v := leadingFloat(t, r[3]); v < 0.01 {
			t.Errorf("replication %s: student of unmarked text at p = %g under the provider's key", r[0], v)
		}
	}
	if pc := chiSquaredUpper(fr, 2*len(reps.Rows)); pc > 5e-3 {
		t.Errorf("replications: Fisher-combined p = %g, want <= 5e-3", pc)
	}
	// Randomizing every synonym-set word removes the mark; the
	// attacker's cost grows with the rate.
	rnd := findTable(t, rep, "Randomizing the synonym sets")
	first, lastR := rnd.Rows[0], rnd.Rows[len(rnd.Rows)-1]
	if v := leadingFloat(t, lastR[2]); v < 0.01 {
		t.Errorf("randomizing at r = %s left p = %g", lastR[0], v)
	}
	if leadingFloat(t, first[1]) != 0 || leadingFloat(t, lastR[1]) <= leadingFloat(t, rnd.Rows[1][1]) {
		t.Errorf("attacker's words changed: %v .. %v", first, lastR)
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
	// Logprob verifier: calibrated on unmarked students, and the mark
	// grows with the amplitude.
	lfp := findTable(t, rep, "Logprob watermark: false positives")
	for _, r := range lfp.Rows {
		if v := leadingFloat(t, r[3]); v < 97 {
			t.Errorf("logprob, %s (reference %s): p >= 0.01 for only %v%% of decoy keys", r[0], r[1], v)
		}
	}
	amp := findTable(t, rep, "Logprob watermark: p-value against amplitude")
	lo, hi := amp.Rows[0], amp.Rows[len(amp.Rows)-1]
	if v := leadingFloat(t, hi[1]); v > 1e-3 {
		t.Errorf("amplitude %s, teacher reference: p = %g", hi[0], v)
	}
	if leadingFloat(t, lo[5]) >= leadingFloat(t, hi[5]) || leadingFloat(t, lo[4]) != 0 {
		t.Errorf("cost columns: %v / %v", lo, hi)
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

func maxHarvest(p WatermarkParams) int { return p.TargetHarvest }
