package lab

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
)

// A small neural language model for the text watermark experiments: the
// student a harvester trains when an n-gram model is not enough. It is the
// feed-forward model of Bengio et al., "A Neural Probabilistic Language
// Model" (JMLR 2003): the previous nnContext tokens' embeddings,
// concatenated, feed one tanh layer, which predicts the next token through
// a class-factored softmax, P(w | h) = P(class(w) | h) P(w | class(w), h),
// with classes binned by frequency (Goodman 2001; Mikolov et al.,
// "Extensions of recurrent neural network language model", ICASSP 2011),
// so a step costs about 2 sqrt(V) output units instead of V. Unlike the
// n-gram student it shares what it learns across contexts through the
// embeddings: a keyed per-context choice of synonym is something it must
// learn to tell apart, not something it copies.
//
// Training is plain per-token SGD, single-threaded, from an initialisation
// and document order drawn from the caller's seeded source, so a model is
// a function of its documents and that seed.

const (
	nnContext = 3
	nnEmbed   = 32
	nnHidden  = 64
)

// nnCtx is the tokens a prediction conditions on, oldest first; BOS
// before the text starts.
type nnCtx [nnContext]int32

func bosContext() (c nnCtx) {
	for i := range c {
		c[i] = tokBOS
	}
	return c
}

// push moves the context one token on.
func (c *nnCtx) push(t int32) {
	copy(c[:], c[1:])
	c[nnContext-1] = t
}

// neuralParams are the student's training settings.
type neuralParams struct {
	Epochs int
	// LR is the first epoch's learning rate; it falls linearly to a tenth
	// of it over the epochs.
	LR float64
}

// defaultNeural trains the harness's neural student.
func defaultNeural() neuralParams { return neuralParams{Epochs: 30, LR: 0.1} }

type neuralLM struct {
	vocab []string
	// class and pos place each token in its frequency class; members
	// lists each class's tokens.
	class, pos []int32
	members    [][]int32
	emb        []float32 // V x nnEmbed
	w1         []float32 // (nnContext*nnEmbed) x nnHidden
	b1         []float32
	wc         []float32 // classes x nnHidden
	bc         []float32
	ww         []float32 // V x nnHidden
	bw         []float32
}

// nnScratch is one forward / backward pass's buffers.
type nnScratch struct {
	x, h, dh, pre []float32
	pc, pw        []float64
}

func (m *neuralLM) scratch() *nnScratch {
	maxClass := 0
	for _, c := range m.members {
		maxClass = max(maxClass, len(c))
	}
	return &nnScratch{x: make([]float32, nnContext*nnEmbed), h: make([]float32, nnHidden),
		dh: make([]float32, nnHidden), pre: make([]float32, nnHidden),
		pc: make([]float64, len(m.members)), pw: make([]float64, maxClass)}
}

// trainNeural trains a neural student on the token sequences (each ended
// by EOS; the context before the first token is BOS).
func trainNeural(r *rand.Rand, docs [][]string, np neuralParams) *neuralLM {
	ids, vocab := newVocab()
	seqs := make([][]int32, len(docs))
	for i, d := range docs {
		seqs[i] = append(intern(ids, &vocab, make([]int32, 0, len(d)+1), d), tokEOS)
	}
	freq := make([]int, len(vocab))
	for _, s := range seqs {
		for _, t := range s {
			freq[t]++
		}
	}
	m := &neuralLM{vocab: vocab}
	m.binClasses(freq)
	initW := func(n int, scale float64) []float32 {
		w := make([]float32, n)
		for i := range w {
			w[i] = float32((2*r.Float64() - 1) * scale)
		}
		return w
	}
	v, c := len(vocab), len(m.members)
	m.emb = initW(v*nnEmbed, 0.1)
	m.w1 = initW(nnContext*nnEmbed*nnHidden, 1/math.Sqrt(nnContext*nnEmbed))
	m.b1 = make([]float32, nnHidden)
	m.wc = initW(c*nnHidden, 1/math.Sqrt(nnHidden))
	m.bc = make([]float32, c)
	m.ww = initW(v*nnHidden, 1/math.Sqrt(nnHidden))
	m.bw = make([]float32, v)
	s := m.scratch()
	order := make([]int, len(seqs))
	for i := range order {
		order[i] = i
	}
	for ep := 0; ep < np.Epochs; ep++ {
		lr := np.LR * (1 - 0.9*float64(ep)/float64(max(np.Epochs-1, 1)))
		r.Shuffle(len(order), func(a, b int) { order[a], order[b] = order[b], order[a] })
		for _, di := range order {
			ctx := bosContext()
			for _, t := range seqs[di] {
				m.step(s, ctx, t, float32(lr))
				ctx.push(t)
			}
		}
	}
	return m
}

// binClasses sorts the vocabulary by frequency and cuts it into about
// sqrt(V) classes of equal frequency mass (Mikolov et al. 2011, section 3).
func (m *neuralLM) binClasses(freq []int) {
	v := len(freq)
	byFreq := make([]int32, v)
	total := 0
	for i := range byFreq {
		byFreq[i] = int32(i)
		total += freq[i]
	}
	slices.SortStableFunc(byFreq, func(a, b int32) int { return cmp.Compare(freq[b], freq[a]) })
	nc := max(1, int(math.Ceil(math.Sqrt(float64(v)))))
	m.class, m.pos = make([]int32, v), make([]int32, v)
	m.members = make([][]int32, 0, nc)
	acc, last := 0, -1
	for _, t := range byFreq {
		// A token heavier than a bin takes a class of its own and the
		// bins it spans are not made: every class has a member.
		if c := min(nc-1, acc*nc/max(total, 1)); c > last {
			m.members = append(m.members, nil)
			last = c
		}
		c := len(m.members) - 1
		m.class[t], m.pos[t] = int32(c), int32(len(m.members[c]))
		m.members[c] = append(m.members[c], t)
		acc += freq[t]
	}
}

// hidden computes the hidden layer for a context into s.h, leaving the
// concatenated embeddings in s.x for the backward pass.
func (m *neuralLM) hidden(s *nnScratch, ctx nnCtx) {
	for i, t := range ctx {
		copy(s.x[i*nnEmbed:(i+1)*nnEmbed], m.emb[int(t)*nnEmbed:(int(t)+1)*nnEmbed])
	}
	copy(s.h, m.b1)
	for i, xi := range s.x {
		row := m.w1[i*nnHidden : (i+1)*nnHidden]
		for j := range s.h {
			s.h[j] += xi * row[j]
		}
	}
	for j, a := range s.h {
		s.h[j] = float32(math.Tanh(float64(a)))
	}
}

func dot(a, b []float32) float32 {
	var s float32
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

// softmaxInto fills p with the softmax of logits(i), i < n.
func softmaxInto(p []float64, n int, logit func(int) float64) {
	mx := math.Inf(-1)
	for i := 0; i < n; i++ {
		p[i] = logit(i)
		mx = max(mx, p[i])
	}
	var z float64
	for i := 0; i < n; i++ {
		p[i] = math.Exp(p[i] - mx)
		z += p[i]
	}
	for i := 0; i < n; i++ {
		p[i] /= z
	}
}

// classDist computes the class distribution at the hidden layer in s.h
// into s.pc; wordDist the distribution within class c into s.pw.
func (m *neuralLM) classDist(s *nnScratch) {
	softmaxInto(s.pc, len(m.members), func(i int) float64 {
		return float64(dot(m.wc[i*nnHidden:(i+1)*nnHidden], s.h) + m.bc[i])
	})
}

func (m *neuralLM) wordDist(s *nnScratch, c int) []int32 {
	mem := m.members[c]
	softmaxInto(s.pw, len(mem), func(i int) float64 {
		t := int(mem[i])
		return float64(dot(m.ww[t*nnHidden:(t+1)*nnHidden], s.h) + m.bw[t])
	})
	return mem
}

// step is one SGD step on predicting t after ctx (cross-entropy of the
// factored softmax).
func (m *neuralLM) step(s *nnScratch, ctx nnCtx, t int32, lr float32) {
	m.hidden(s, ctx)
	clear(s.dh)
	m.classDist(s)
	c := int(m.class[t])
	for i := range m.members {
		g := float32(s.pc[i])
		if i == c {
			g--
		}
		row := m.wc[i*nnHidden : (i+1)*nnHidden]
		for j := range s.dh {
			s.dh[j] += g * row[j]
			row[j] -= lr * g * s.h[j]
		}
		m.bc[i] -= lr * g
	}
	mem := m.wordDist(s, c)
	for i, w := range mem {
		g := float32(s.pw[i])
		if w == t {
			g--
		}
		row := m.ww[int(w)*nnHidden : (int(w)+1)*nnHidden]
		for j := range s.dh {
			s.dh[j] += g * row[j]
			row[j] -= lr * g * s.h[j]
		}
		m.bw[w] -= lr * g
	}
	// Through tanh to the first layer and the embeddings.
	for j, h := range s.h {
		s.pre[j] = s.dh[j] * (1 - h*h)
	}
	for i, xi := range s.x {
		row := m.w1[i*nnHidden : (i+1)*nnHidden]
		var dx float32
		for j, g := range s.pre {
			dx += g * row[j]
			row[j] -= lr * g * xi
		}
		tok := int(ctx[i/nnEmbed])
		m.emb[tok*nnEmbed+i%nnEmbed] -= lr * dx
	}
	for j, g := range s.pre {
		m.b1[j] -= lr * g
	}
}

// logProb is log P(t | ctx).
func (m *neuralLM) logProb(s *nnScratch, ctx nnCtx, t int32) float64 {
	m.hidden(s, ctx)
	m.classDist(s)
	c := int(m.class[t])
	m.wordDist(s, c)
	return math.Log(s.pc[c]) + math.Log(s.pw[m.pos[t]])
}

func sampleDist(r *rand.Rand, p []float64) int {
	u := r.Float64()
	for i, v := range p {
		if u < v {
			return i
		}
		u -= v
	}
	return len(p) - 1
}

// generate samples one response of at most maxTok tokens.
func (m *neuralLM) generate(r *rand.Rand, s *nnScratch, maxTok int) []string {
	ctx := bosContext()
	var out []string
	for len(out) < maxTok {
		m.hidden(s, ctx)
		m.classDist(s)
		c := sampleDist(r, s.pc[:len(m.members)])
		mem := m.wordDist(s, c)
		t := mem[sampleDist(r, s.pw[:len(mem)])]
		if t == tokEOS {
			break
		}
		if t == tokBOS {
			continue
		}
		out = append(out, m.vocab[t])
		ctx.push(t)
	}
	return out
}
