package lab

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/distillguard/distillguard/config"
)

// smallOptions is the quick version of the lab the tests run.
func smallOptions(exps ...string) Options {
	return Options{Seed: 7, Scale: 0.1, Experiments: exps, Parallel: 2}
}

// findTable returns the table whose title starts with prefix.
func findTable(t *testing.T, rep *Report, prefix string) Table {
	t.Helper()
	for _, s := range rep.Sections {
		for _, tb := range s.Tables {
			if strings.HasPrefix(tb.Title, prefix) {
				return tb
			}
		}
	}
	t.Fatalf("no table titled %q…", prefix)
	return Table{}
}

// cellOf returns the value in column col of the row whose first cell is row.
func cellOf(t *testing.T, tb Table, row, col string) string {
	t.Helper()
	ci := -1
	for i, h := range tb.Header {
		if h == col {
			ci = i
		}
	}
	if ci < 0 {
		t.Fatalf("table %q has no column %q (have %q)", tb.Title, col, tb.Header)
	}
	for _, r := range tb.Rows {
		if r[0] == row {
			return r[ci]
		}
	}
	t.Fatalf("table %q has no row %q", tb.Title, row)
	return ""
}

func TestDefenceExperimentsSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the small lab")
	}
	ctx := context.Background()
	o := smallOptions(ExpTramer, ExpCarlini, ExpDistill)
	rep, err := Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	md := string(rep.Markdown())

	// Structure: every section, table and figure is present.
	for _, want := range []string{
		"# distillguard attack lab",
		"## 1. Policies compared", "### Policies",
		"## 2. Equation-solving extraction", "### Extraction from d+1 =", "### Parameter error and agreement against queries",
		"## 3. Hidden-dimension recovery", "### Top-k logprobs + logit_bias attack", "### Logprob-free attack (chosen token only)",
		"## 4. Distillation fidelity against honest-user utility", "### Student fidelity", "### Student agreement against queries",
		"](tramer-precision.svg)", "](carlini-spectrum.svg)", "](distill-precision.svg)",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	// Every policy appears in every per-policy table.
	policies := Policies(config.Default(), perturbScales())
	for _, title := range []string{"Policies", "Extraction from d+1", "Parameter error", "Top-k logprobs", "Student fidelity"} {
		tb := findTable(t, rep, title)
		if len(tb.Rows) != len(policies) {
			t.Errorf("table %q: %d rows, want %d", title, len(tb.Rows), len(policies))
		}
		for _, r := range tb.Rows {
			if len(r) != len(tb.Header) {
				t.Errorf("table %q row %q: %d cells for %d columns", title, r[0], len(r), len(tb.Header))
			}
		}
	}

	// Raw API: equation solving extracts the model exactly from d+1 queries.
	sz := SizesFor(o.Scale, policies)
	tr := findTable(t, rep, "Extraction from d+1")
	if got := cellOf(t, tr, "raw API", "method"); got != "exact solve" {
		t.Errorf("raw API method = %q, want exact solve", got)
	}
	if got := cellOf(t, tr, "raw API", "held-out agreement"); got != "100.00%" {
		t.Errorf("raw API agreement = %q, want 100.00%%", got)
	}
	if got := cellOf(t, tr, "raw API", "queries"); got != itoa(sz.Tramer.Dim+1) {
		t.Errorf("raw API queries = %q, want d+1 = %d", got, sz.Tramer.Dim+1)
	}
	if got := cellOf(t, tr, "raw API", "parameter error ‖θ̂−θ‖/‖θ‖"); !regexp.MustCompile(`e-1[0-9]$`).MatchString(got) {
		t.Errorf("raw API parameter error = %q, want < 1e-9", got)
	}
	// Raw API: the hidden size is recovered exactly.
	ck := findTable(t, rep, "Top-k logprobs")
	if got := cellOf(t, ck, "raw API", "ĥ"); got != itoa(sz.Carlini.Hidden) {
		t.Errorf("raw API ĥ = %q, want h = %d", got, sz.Carlini.Hidden)
	}
	if got := cellOf(t, ck, "raw API", "result"); got != "h recovered" {
		t.Errorf("raw API result = %q", got)
	}
	// Dropping logit_bias leaves the top-k attack without full vectors.
	if got := cellOf(t, ck, "logit_bias dropped", "full vectors?"); got != "no: logit_bias not honoured" {
		t.Errorf("logit_bias dropped: full vectors? = %q", got)
	}
	lf := findTable(t, rep, "Logprob-free")
	if got := cellOf(t, lf, "logit_bias dropped", "full vectors?"); got != "no: logit_bias not honoured" {
		t.Errorf("logprob-free under logit_bias dropped: %q", got)
	}

	// Output: the report and every linked figure are written.
	dir := t.TempDir()
	if err := rep.Write(dir); err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`\]\(([^)]+\.svg)\)`).FindAllStringSubmatch(md, -1) {
		b, err := os.ReadFile(filepath.Join(dir, m[1]))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte("<svg")) {
			t.Errorf("%s is not an SVG", m[1])
		}
	}

	// Same seed, same report; a different seed changes it.
	again, err := Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Markdown(), rep.Markdown()) {
		t.Error("two runs with the same seed gave different reports")
	}
	// The seed matters: another seed gives other numbers.
	o2 := smallOptions(ExpTramer)
	o2.Seed = o.Seed + 1
	other, err := Run(ctx, o2)
	if err != nil {
		t.Fatal(err)
	}
	t1, t2 := findTable(t, rep, "Extraction from d+1"), findTable(t, other, "Extraction from d+1")
	if cellOf(t, t1, "round 2", "parameter error ‖θ̂−θ‖/‖θ‖") == cellOf(t, t2, "round 2", "parameter error ‖θ̂−θ‖/‖θ‖") {
		t.Error("seeds 7 and 8 gave the same round-2 extraction error")
	}
}

func TestRunRejectsUnknownExperiment(t *testing.T) {
	if _, err := Run(context.Background(), Options{Experiments: []string{"tramer", "nope"}}); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("err = %v, want an error naming the experiment", err)
	}
}
