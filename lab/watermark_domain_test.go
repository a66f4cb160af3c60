package lab

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// domainText is prose of a domain unlike the corpora, after contexts the
// embedded statistics never saw: two sets are used with one member only
// ("children", "large"), one with both in equal shares ("maybe",
// "perhaps").
func domainText(n int, seed uint64) []string {
	r := rand.New(rand.NewPCG(seed, 1))
	words := []string{"children", "large", "maybe", "perhaps"}
	out := make([]string, n)
	for i := range out {
		var b strings.Builder
		for j := 0; j < 6; j++ {
			w := words[r.IntN(3)]
			if w == "maybe" && r.IntN(2) == 0 {
				w = "perhaps"
			}
			fmt.Fprintf(&b, "qa%dzu %s ", r.IntN(60), w)
		}
		b.WriteString("end of paragraph.")
		out[i] = b.String()
	}
	return out
}

// TestWatermarkDomain: on text whose synonym shares the embedded
// statistics do not describe, the mark made with them shows in the word
// frequencies and the mark made with the domain's own statistics does
// not (it marks the set the domain uses in balanced shares); the verifier
// finds both.
func TestWatermarkDomain(t *testing.T) {
	tb := RunWatermarkDomain(domainText(3000, 5), DomainParams{Keys: 2, Seed: 3})
	if len(tb.Rows) != 4 {
		t.Fatalf("%d rows, want 4", len(tb.Rows))
	}
	p := func(s string) float64 {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatalf("p-value %q: %v", s, err)
		}
		return v
	}
	for _, row := range tb.Rows {
		embedded := strings.HasPrefix(row[0], "embedded")
		chi, chi0, marked, unmarked := p(row[3]), p(row[4]), p(row[5]), p(row[6])
		if embedded && chi > 1e-6 {
			t.Errorf("%v: embedded statistics on another domain: chi-squared p = %g, want it to show (<= 1e-6)", row, chi)
		}
		if !embedded && chi < 0.01 {
			t.Errorf("%v: the domain's own statistics: chi-squared p = %g, want >= 0.01", row, chi)
		}
		if chi0 < 0.01 || unmarked < 0.01 {
			t.Errorf("%v: unmarked text: chi-squared p = %g, verify p = %g, want both >= 0.01", row, chi0, unmarked)
		}
		if marked > 1e-6 {
			t.Errorf("%v: verify p on the marked half = %g, want <= 1e-6", row, marked)
		}
	}
	if os.Getenv("WATERMARK_DOMAIN_DIR") == "" {
		return
	}
	// On real prose (WATERMARK_DOMAIN_DIR: directories of Markdown files,
	// separated as in PATH; the README uses the root module's
	// dependencies), printed for the README.
	paras, err := DomainParagraphs(filepath.SplitList(os.Getenv("WATERMARK_DOMAIN_DIR"))...)
	if err != nil {
		t.Fatal(err)
	}
	n := 2000
	envInt("WATERMARK_DOMAIN_COMPARE", &n)
	t.Log("\n" + string((&Report{Sections: []Section{{Title: "domain", Tables: []Table{RunWatermarkDomain(paras, DomainParams{Keys: 6, Compare: n, Seed: 1})}}}}).Markdown()))
}

// TestDomainParagraphs: prose paragraphs only (no code fences, tables,
// indented code or short lines), each once, in sorted order.
func TestDomainParagraphs(t *testing.T) {
	dir := t.TempDir()
	long := "this paragraph has more than twelve words in it so that it is kept as prose"
	os.WriteFile(filepath.Join(dir, "a.md"), []byte("# Title\n\n"+long+" b\n\n```go\nfunc f() {}\n\n"+long+" inside a fence\n```\n\n| a | b |\n|---|---|\n\n    "+long+" indented\n\n"+long+" a\n"), 0o644)
	os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
	os.WriteFile(filepath.Join(dir, "sub", "b.md"), []byte(long+" a\n\n"+long+" c"), 0o644)
	os.WriteFile(filepath.Join(dir, "c.txt"), []byte(long+" txt"), 0o644)
	got, err := DomainParagraphs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{long + " a", long + " b", long + " c"}; !reflect.DeepEqual(got, want) {
		t.Errorf("paragraphs %q, want %q", got, want)
	}
}
