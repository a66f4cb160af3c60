package lab

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/distillguard/distillguard/watermark"
)

// The lexical mark keeps every synonym's share of the text as far as its
// context statistics match the text it marks (watermark/contexts.go). The
// embedded statistics are counted in the prompt corpora; output of
// another kind marked with them shows in a word-frequency comparison,
// which statistics counted in the provider's own output
// (watermark.contexts_file) do not. RunWatermarkDomain measures both on
// prose of another domain: the Markdown paragraphs under a directory.

// DomainParagraphs reads the prose paragraphs of the Markdown files under
// dirs: blank-line separated, with at least 12 words, outside code fences
// and tables, deduplicated, in sorted order (so the result is a function
// of the files alone).
func DomainParagraphs(dirs ...string) ([]string, error) {
	var paras []string
	var errs []error
	for _, dir := range dirs {
		errs = append(errs, walkParagraphs(dir, &paras))
	}
	slices.Sort(paras)
	return slices.Compact(paras), errors.Join(errs...)
}

func walkParagraphs(dir string, paras *[]string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // unreadable parts of the tree are skipped
		}
		if d.IsDir() || !strings.HasSuffix(p, ".md") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		fenced := false
		for _, para := range strings.Split(string(b), "\n\n") {
			if n := strings.Count(para, "```"); n > 0 {
				fenced = fenced != (n%2 == 1)
				continue
			}
			t := strings.TrimSpace(para)
			if fenced || strings.HasPrefix(t, "|") || strings.HasPrefix(strings.TrimLeft(para, "\n"), "    ") || len(strings.Fields(t)) < 12 {
				continue
			}
			*paras = append(*paras, t)
		}
		return nil
	})
}

// DomainParams configures RunWatermarkDomain.
type DomainParams struct {
	Keys int // keys, each with its own split of the paragraphs
	// Compare is the number of paragraphs on each side of the comparison
	// (0: all of a half).
	Compare int
	Seed    uint64
}

// RunWatermarkDomain marks paragraphs of another domain with the embedded
// statistics and with statistics counted in a third of the same domain
// (never compared), and compares the marked half's word frequencies
// with the other, unmarked half's; per key it also runs the verifier on
// the marked half and on the same half unmarked.
func RunWatermarkDomain(paras []string, p DomainParams) Table {
	tb := Table{
		Title:  "Lexical mark on another domain: word frequencies against the domain's unmarked text",
		Header: []string{"statistics", "key", "words changed", "chi-squared p, marked", "chi-squared p, two unmarked halves", "verify p, marked", "verify p, unmarked"},
	}
	lex := watermark.DefaultLexicon()
	compared := 0 // paragraphs on the smaller side of the last comparison
	var own [][]byte
	var rest []string
	for i, t := range paras {
		if i%3 == 0 {
			own = append(own, []byte(t))
		} else {
			rest = append(rest, t)
		}
	}
	for _, v := range []struct {
		name string
		lex  *watermark.Lexicon
	}{
		{"embedded (prompt corpora)", lex},
		{"the domain's own (a third of it)", lex.WithContextStats(watermark.BuildContextStats(lex, own))},
	} {
		ver := watermark.NewVerifier(v.lex)
		for k := 0; k < p.Keys; k++ {
			key, err := watermark.NewKey(fmt.Sprintf("domain-%d", k), []byte(fmt.Sprintf("distillguard lab domain key %04d, seed %d", k, p.Seed)))
			if err != nil {
				panic(err) // the secret is long enough by construction
			}
			marker := watermark.NewMarker(v.lex, key)
			g := newRand(p.Seed, uint64(k))
			var a, b []string
			for _, t := range rest {
				if g.IntN(2) == 0 {
					a = append(a, t)
				} else {
					b = append(b, t)
				}
			}
			if n := p.Compare; n > 0 {
				a, b = a[:min(n, len(a))], b[:min(n, len(b))]
			}
			compared = min(len(a), len(b))
			ma := make([]string, len(a))
			var words, changed int64
			for i, t := range a {
				out, st := marker.Mark([]byte(t))
				ma[i] = string(out)
				words += st.Words
				changed += st.Substituted
			}
			ref := memberCounts(lex, b, false)
			h := compareCounts(memberCounts(lex, ma, false), ref)
			h0 := compareCounts(memberCounts(lex, a, false), ref)
			tb.Rows = append(tb.Rows, []string{v.name, itoa(k), fmt.Sprintf("%.2f%%", 100*float64(changed)/float64(max(words, 1))),
				fmtSci(chiSquaredUpper(h.chi, h.df)), fmtSci(chiSquaredUpper(h0.chi, h0.df)),
				fmtSci(verifyTexts(ver, ma, key).PValue), fmtSci(verifyTexts(ver, a, key).PValue)})
		}
	}
	tb.Notes = []string{fmt.Sprintf("%d paragraphs: a third (%d) counts the domain's statistics, the rest is split at random per key into a marked half and an unmarked half; about %d paragraphs a side are compared.", len(paras), len(own), compared),
		"Chi-squared test of homogeneity per set, summed over the sets with at least 20 occurrences; the two-unmarked-halves column is the test's own level on this text (paragraphs of one file share words, so it is below uniform)."}
	return tb
}
