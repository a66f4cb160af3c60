package watermark

import (
	"unicode"
	"unicode/utf8"
)

// Meaning preservation. By construction the marker writes only members of
// the synonym set the original word belongs to, in the same form and
// casing, and leaves every other byte alone; these measures say how much
// of the surface changed, for reports on real text.

// ChrF accumulates corpus-level chrF (Popović, "chrF: character n-gram
// F-score for automatic MT evaluation", WMT 2015) with the usual settings:
// character n-grams of orders 1 to 6, white space removed, recall weighted
// by beta = 2 (the sacreBLEU default). Add pairs, then read Score.
type ChrF struct {
	match, hyp, ref [chrFOrder]float64
}

const (
	chrFOrder = 6
	chrFBeta  = 2
)

// Add adds one (hypothesis, reference) pair: the marked text and its
// original.
func (c *ChrF) Add(hyp, ref []byte) {
	h, r := chrRunes(hyp), chrRunes(ref)
	for n := 1; n <= chrFOrder; n++ {
		hc, rc := ngramCounts(h, n), ngramCounts(r, n)
		for g, k := range hc {
			c.hyp[n-1] += float64(k)
			c.match[n-1] += float64(min(k, rc[g]))
		}
		for _, k := range rc {
			c.ref[n-1] += float64(k)
		}
	}
}

// Score is chrF in [0, 100]: the F-beta of the character n-gram precision
// and recall averaged over the orders that occur.
func (c *ChrF) Score() float64 {
	var p, r float64
	var np, nr int
	for n := 0; n < chrFOrder; n++ {
		if c.hyp[n] > 0 {
			p += c.match[n] / c.hyp[n]
			np++
		}
		if c.ref[n] > 0 {
			r += c.match[n] / c.ref[n]
			nr++
		}
	}
	if np == 0 || nr == 0 {
		return 100 // two empty texts are identical
	}
	p, r = p/float64(np), r/float64(nr)
	if p+r == 0 {
		return 0
	}
	b2 := float64(chrFBeta * chrFBeta)
	return 100 * (1 + b2) * p * r / (b2*p + r)
}

func chrRunes(b []byte) []rune {
	out := make([]rune, 0, len(b))
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		b = b[n:]
		if !unicode.IsSpace(r) {
			out = append(out, r)
		}
	}
	return out
}

func ngramCounts(rs []rune, n int) map[string]int {
	m := map[string]int{}
	for i := 0; i+n <= len(rs); i++ {
		m[string(rs[i:i+n])]++
	}
	return m
}

// SentenceChanges counts the sentences of original and the sentences that
// differ in marked. Sentences end at '.', '!', '?' or a line feed; the
// marker never changes those bytes, so both texts split into the same
// number of sentences and are compared pairwise.
func SentenceChanges(original, marked []byte) (sentences, changed int) {
	a, b := splitSentences(original), splitSentences(marked)
	for i := range a {
		if len(a[i]) == 0 {
			continue
		}
		sentences++
		if i >= len(b) || string(a[i]) != string(b[i]) {
			changed++
		}
	}
	return sentences, changed
}

func splitSentences(t []byte) [][]byte {
	var out [][]byte
	start := 0
	for i, c := range t {
		if c == '.' || c == '!' || c == '?' || c == '\n' {
			out = append(out, trimSpace(t[start:i]))
			start = i + 1
		}
	}
	return append(out, trimSpace(t[start:]))
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\r') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
