package lab

import (
	"math"
	"slices"
	"strings"
	"testing"
)

// TestNgramUnsmoothed: the unsmoothed sampler writes only word pairs its
// training held (every context it reaches was seen, so it never backs
// off), while the Witten-Bell student also writes pairs it never saw.
func TestNgramUnsmoothed(t *testing.T) {
	var docs [][]string
	words := strings.Fields("the big dog runs and a large cat sleeps while one small bird sings")
	for i := 0; i < 60; i++ {
		var d []string
		for j := 0; j < 6; j++ {
			d = append(d, words[(i*7+j*3)%len(words)])
		}
		docs = append(docs, d)
	}
	seen := map[[2]string]bool{}
	for _, d := range docs {
		prev := "<s>"
		for _, w := range d {
			seen[[2]string{prev, w}] = true
			prev = w
		}
	}
	unseen := func(m *ngramLM, seed uint64) (pairs, novel int) {
		r := newRand(seed, 1)
		for i := 0; i < 300; i++ {
			prev := "<s>"
			for _, w := range m.generate(r, 40) {
				pairs++
				if !seen[[2]string{prev, w}] {
					novel++
				}
				prev = w
			}
		}
		return pairs, novel
	}
	mle := trainNgram(2, docs)
	mle.unsmoothed = true
	if n, novel := unseen(mle, 3); n == 0 || novel != 0 {
		t.Fatalf("unsmoothed bigram: %d of %d written pairs were never in training", novel, n)
	}
	if n, novel := unseen(trainNgram(2, docs), 3); n == 0 || novel == 0 {
		t.Fatalf("smoothed bigram: %d of %d written pairs unseen; its backoff should write some", novel, n)
	}
}

// TestNgramKneserNey: the first word the Kneser-Ney student writes after
// <s> follows the interpolated Kneser-Ney distribution computed here from
// the training counts by hand: max(c(<s>,w) - D, 0) / c(<s>) plus the
// backoff mass D t / c spread by continuation counts (how many distinct
// words w follows, end of text included as a successor).
func TestNgramKneserNey(t *testing.T) {
	docs := [][]string{
		strings.Fields("the cat sat"),
		strings.Fields("the dog sat"),
		strings.Fields("the cat ran"),
		strings.Fields("a cat sat down"),
		strings.Fields("a bird sang"),
		strings.Fields("sat down the bird"),
	}
	first := map[string]float64{}
	left := map[string]map[string]bool{} // word -> distinct left contexts
	for _, d := range docs {
		first[d[0]]++
		prev := "<s>"
		for _, w := range append(slices.Clone(d), "</s>") {
			if left[w] == nil {
				left[w] = map[string]bool{}
			}
			left[w][prev] = true
			prev = w
		}
	}
	var bigrams float64
	for _, l := range left {
		bigrams += float64(len(l))
	}
	c, types := float64(len(docs)), float64(len(first))
	want := map[string]float64{}
	for w, l := range left {
		want[w] = max(first[w]-knDiscount, 0)/c + knDiscount*types/c*float64(len(l))/bigrams
	}

	m := trainNgram(2, docs)
	m.useKneserNey()
	const draws = 200000
	got := map[string]float64{}
	r := newRand(11, 1)
	for i := 0; i < draws; i++ {
		out := m.generate(r, 1)
		w := "</s>"
		if len(out) == 1 {
			w = out[0]
		}
		got[w]++
	}
	var sum float64
	for w, p := range want {
		sum += p
		sd := math.Sqrt(p * (1 - p) / draws)
		if f := got[w] / draws; math.Abs(f-p) > 5*sd+1e-9 {
			t.Errorf("P(%q | <s>) = %.4f sampled, %.4f by hand", w, f, p)
		}
	}
	if math.Abs(sum-1) > 1e-9 {
		t.Fatalf("hand-computed distribution sums to %v", sum)
	}
	for w := range got {
		if _, ok := want[w]; !ok {
			t.Errorf("sampled %q, which training never held", w)
		}
	}
	// The same seed writes the same text.
	a, b := m.generate(newRand(5, 2), 30), m.generate(newRand(5, 2), 30)
	if !slices.Equal(a, b) {
		t.Fatalf("same seed, different text: %q vs %q", a, b)
	}
}
