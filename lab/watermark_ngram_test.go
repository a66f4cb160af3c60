package lab

import (
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
