package lab

import (
	"math"
	"slices"
	"strings"
	"testing"
)

// TestNeuralLearns: the neural student learns a corpus whose next token a
// context of two words decides (a per-context choice between synonyms,
// the mark's shape), and lowers the training loss well below uniform.
func TestNeuralLearns(t *testing.T) {
	var docs [][]string
	pairs := [][3]string{{"the", "big", "dog"}, {"a", "large", "dog"}, {"the", "large", "cat"}, {"a", "big", "cat"}}
	for i := 0; i < 200; i++ {
		p := pairs[i%len(pairs)]
		docs = append(docs, []string{p[0], p[1], p[2], "runs", "."})
	}
	before := trainNeural(newRand(7, 0), docs, neuralParams{Epochs: 0, LR: 0.1})
	m := trainNeural(newRand(7, 0), docs, neuralParams{Epochs: 6, LR: 0.1})
	id := func(w string) int32 { return int32(slices.Index(m.vocab, w)) }
	s := m.scratch()
	ctx := func(ws ...string) nnCtx {
		c := bosContext()
		for _, w := range ws {
			c.push(id(w))
		}
		return c
	}
	// After "the", "big" and "large" are equally likely; after "the big"
	// only "dog" follows, after "the large" only "cat".
	for _, tc := range []struct {
		ctx  []string
		next string
		min  float64
	}{{[]string{"the", "big"}, "dog", 0.9}, {[]string{"the", "large"}, "cat", 0.9}, {[]string{"a", "big"}, "cat", 0.9}, {[]string{"a", "large"}, "dog", 0.9}, {[]string{"a", "large", "dog"}, "runs", 0.9}} {
		if p := math.Exp(m.logProb(s, ctx(tc.ctx...), id(tc.next))); p < tc.min {
			t.Errorf("P(%s | %s) = %.3f, want >= %.2f", tc.next, strings.Join(tc.ctx, " "), p, tc.min)
		}
	}
	if p := math.Exp(m.logProb(s, ctx("the"), id("big"))); p < 0.3 || p > 0.7 {
		t.Errorf("P(big | the) = %.3f, want about 0.5", p)
	}
	loss := func(m *neuralLM) (l float64) {
		s := m.scratch()
		for _, d := range docs {
			c := bosContext()
			for _, w := range append(d, "</s>") {
				l -= m.logProb(s, c, id(w))
				c.push(id(w))
			}
		}
		return l / float64(len(docs)*6)
	}
	if lb, la := loss(before), loss(m); la > 0.5*lb || la > 0.5 {
		t.Errorf("training loss %.3f nats a token, untrained %.3f", la, lb)
	}
	// Generation: the corpus's sentences, and a function of the seed.
	g1, g2 := m.generate(newRand(1, 2), s, 10), m.generate(newRand(1, 2), s, 10)
	if !slices.Equal(g1, g2) || len(g1) != 5 || g1[3] != "runs" {
		t.Errorf("generated %q and %q", g1, g2)
	}
}

// TestNeuralClasses: frequency binning gives every token one class, every
// class a member (a token heavier than a bin takes one alone), about
// sqrt(V) of them, heaviest first.
func TestNeuralClasses(t *testing.T) {
	freq := []int{1000, 1, 500, 3, 3, 2, 1, 1, 40, 7, 1, 1, 1, 1, 1, 1}
	var m neuralLM
	m.binClasses(freq)
	if n := len(m.members); n < 2 || n > 4 {
		t.Errorf("%d classes for %d tokens", n, len(freq))
	}
	seen := 0
	for c, mem := range m.members {
		if len(mem) == 0 {
			t.Errorf("class %d is empty", c)
		}
		for i, tok := range mem {
			if m.class[tok] != int32(c) || m.pos[tok] != int32(i) {
				t.Errorf("token %d in class %d at %d, recorded %d at %d", tok, c, i, m.class[tok], m.pos[tok])
			}
			seen++
		}
	}
	if seen != len(freq) || m.members[0][0] != 0 {
		t.Errorf("%d tokens placed of %d; first class %v", seen, len(freq), m.members[0])
	}
}
