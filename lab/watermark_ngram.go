package lab

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unicode"

	"github.com/distillguard/distillguard/internal/corpus"
)

// Word-level n-gram language models for the text watermark experiments:
// a trigram teacher trained on the corpora generates responses, a bigram
// (or trigram) student trained on the harvested responses generates the
// outputs the provider verifies. Interpolation is Witten-Bell (Witten and
// Bell 1991; Chen and Goodman 1998, section 2.5): at a context seen c times
// with t distinct successors, the model uses the context's successors with
// weight c/(c+t) and backs off to the shorter context otherwise. Sampling
// follows the same recursion, so no step needs the full vocabulary.

const (
	tokBOS = 0
	tokEOS = 1
)

type succList struct {
	toks  []int32
	cum   []uint32 // cumulative counts
	types int
}

// newSuccList sorts the successors of counts (map order must not reach
// the sampler) and accumulates their counts.
func newSuccList(counts map[int32]uint32) *succList {
	s := &succList{types: len(counts)}
	for t := range counts {
		s.toks = append(s.toks, t)
	}
	slices.Sort(s.toks)
	var cum uint32
	for _, t := range s.toks {
		cum += counts[t]
		s.cum = append(s.cum, cum)
	}
	return s
}

func (s *succList) total() uint32 { return s.cum[len(s.cum)-1] }

func (s *succList) sample(r *rand.Rand) int32 {
	u := uint32(r.Uint64N(uint64(s.total())))
	i, _ := slices.BinarySearch(s.cum, u+1)
	return s.toks[i]
}

type ngramLM struct {
	order int
	vocab []string
	ids   map[string]int32
	// levels[L] maps a context of L tokens to its successors; levels[0]
	// has the single empty context (unigrams).
	levels []map[uint64]*succList
	// unsmoothed samples every token from the longest context it saw,
	// backing off only from a context it never saw (a maximum-likelihood
	// n-gram sampler); otherwise Witten-Bell interpolation decides.
	unsmoothed bool
	// kn, when set (useKneserNey), makes the model interpolated
	// Kneser-Ney instead (Kneser and Ney 1995; Chen and Goodman 1998,
	// section 2.7): a context seen c times with t distinct successors
	// keeps max(count - D, 0) / c of each and backs off with D t / c to
	// the shorter context, whose distribution counts the distinct
	// contexts a token follows (continuation counts) rather than its
	// occurrences.
	kn *knLevels
}

// knDiscount is the absolute discount D, the value Chen and Goodman found
// near-optimal for a single discount.
const knDiscount = 0.75

// knLevels are the Kneser-Ney bigram sampler's tables: per context, the
// cumulative discounted counts of its successors (in succList order), and
// the continuation counts that replace the unigram level.
type knLevels struct {
	dcum map[uint64][]float64
	cont *succList
}

// useKneserNey switches m to interpolated Kneser-Ney sampling (orders up to
// 2: the backoff of a bigram context is the continuation unigram).
func (m *ngramLM) useKneserNey() {
	if m.order > 2 {
		// A trigram's middle level would need its own continuation
		// counts; the harness measures the bigram only.
		panic(fmt.Sprintf("useKneserNey: order %d, at most 2", m.order))
	}
	kn := &knLevels{dcum: make(map[uint64][]float64, len(m.levels[1]))}
	left := map[int32]uint32{}
	for k, sl := range m.levels[1] {
		d := make([]float64, len(sl.toks))
		var cum, prev float64
		for i, t := range sl.toks {
			c := float64(sl.cum[i]) - prev
			prev = float64(sl.cum[i])
			cum += max(c-knDiscount, 0)
			d[i] = cum
			left[t]++ // one more distinct left context of t
		}
		kn.dcum[k] = d
	}
	kn.cont = newSuccList(left)
	m.kn = kn
}

func newVocab() (map[string]int32, []string) {
	return map[string]int32{"<s>": tokBOS, "</s>": tokEOS}, []string{"<s>", "</s>"}
}

// intern appends the ids of d's tokens to seq, adding the tokens the
// vocabulary does not hold yet.
func intern(ids map[string]int32, vocab *[]string, seq []int32, d []string) []int32 {
	for _, w := range d {
		id, ok := ids[w]
		if !ok {
			id = int32(len(*vocab))
			ids[w] = id
			*vocab = append(*vocab, w)
		}
		seq = append(seq, id)
	}
	return seq
}

// ctxKey packs the last L token ids (L <= 2) before position i.
func ctxKey(seq []int32, i, l int) uint64 {
	var k uint64
	for j := i - l; j < i; j++ {
		k = k<<32 | uint64(uint32(seq[j]))
	}
	return k
}

// trainNgram counts n-grams of the token sequences (each padded with
// order-1 BOS and one EOS).
func trainNgram(order int, docs [][]string) *ngramLM {
	m := &ngramLM{order: order}
	m.ids, m.vocab = newVocab()
	counts := make([]map[uint64]map[int32]uint32, order)
	for l := range counts {
		counts[l] = map[uint64]map[int32]uint32{}
	}
	seq := make([]int32, 0, 128)
	for _, d := range docs {
		seq = seq[:0]
		for i := 0; i < order-1; i++ {
			seq = append(seq, tokBOS)
		}
		seq = append(intern(m.ids, &m.vocab, seq, d), tokEOS)
		for i := order - 1; i < len(seq); i++ {
			for l := 0; l < order; l++ {
				k := ctxKey(seq, i, l)
				c := counts[l][k]
				if c == nil {
					c = map[int32]uint32{}
					counts[l][k] = c
				}
				c[seq[i]]++
			}
		}
	}
	m.levels = make([]map[uint64]*succList, order)
	for l, cs := range counts {
		m.levels[l] = make(map[uint64]*succList, len(cs))
		for k, c := range cs {
			m.levels[l][k] = newSuccList(c)
		}
	}
	return m
}

// generate samples one response of at most maxTok tokens.
func (m *ngramLM) generate(r *rand.Rand, maxTok int) []string {
	seq := make([]int32, m.order-1, m.order-1+maxTok)
	var out []string
	for len(out) < maxTok {
		i := len(seq)
		var next int32 = -1
		for l := m.order - 1; l >= 1 && next < 0; l-- {
			s := m.levels[l][ctxKey(seq, i, l)]
			if s == nil {
				continue
			}
			c, t := float64(s.total()), float64(s.types)
			switch {
			case m.kn != nil:
				d := m.kn.dcum[ctxKey(seq, i, l)]
				if u := r.Float64() * c; u < d[len(d)-1] {
					j, _ := slices.BinarySearch(d, u)
					next = s.toks[min(j, len(d)-1)]
				}
			case m.unsmoothed || r.Float64() < c/(c+t):
				next = s.sample(r)
			}
		}
		if next < 0 && m.kn != nil {
			next = m.kn.cont.sample(r)
		}
		if next < 0 {
			next = m.levels[0][0].sample(r)
		}
		if next == tokBOS {
			continue
		}
		if next == tokEOS {
			break
		}
		seq = append(seq, next)
		out = append(out, m.vocab[next])
	}
	return out
}

// tokenize splits text into words (letters and digits, with inner
// apostrophes and hyphens), single punctuation characters and line feeds.
func tokenize(s string) []string {
	var out []string
	rs := []rune(s)
	for i := 0; i < len(rs); {
		r := rs[i]
		switch {
		case r == '\n':
			out = append(out, "\n")
			i++
		case unicode.IsSpace(r):
			i++
		case unicode.IsLetter(r) || unicode.IsDigit(r):
			j := i + 1
			for j < len(rs) && (unicode.IsLetter(rs[j]) || unicode.IsDigit(rs[j]) ||
				(rs[j] == '\'' || rs[j] == '-' || rs[j] == '’') && j+1 < len(rs) && unicode.IsLetter(rs[j+1])) {
				j++
			}
			out = append(out, string(rs[i:j]))
			i = j
		default:
			out = append(out, string(r))
			i++
		}
	}
	return out
}

// detokenize joins tokens back into text: a space between tokens except
// before closing punctuation, after opening punctuation and around line
// feeds.
func detokenize(toks []string) string {
	var b strings.Builder
	prev := "\n"
	for _, t := range toks {
		if t != "\n" && prev != "\n" && !strings.Contains(".,;:!?)%", t) && !strings.Contains("($", prev) {
			b.WriteByte(' ')
		}
		b.WriteString(t)
		prev = t
	}
	return b.String()
}

// textCorpus is the corpus text the teacher learns from, by source.
type textCorpus struct {
	name  string
	texts []string
}

// corpusTeacher is the teacher of the watermark experiments: a trigram
// model of every corpus text.
func corpusTeacher(corpora []textCorpus) *ngramLM {
	var docs [][]string
	for _, c := range corpora {
		for _, t := range c.texts {
			docs = append(docs, tokenize(t))
		}
	}
	return trainNgram(3, docs)
}

// textCount is the number of texts of the corpora.
func textCount(corpora []textCorpus) int {
	n := 0
	for _, c := range corpora {
		n += len(c.texts)
	}
	return n
}

// loadTextCorpora reads GSM8K worked solutions (assistant-style text),
// HH-RLHF human turns and self-instruct tasks from dir.
func loadTextCorpora(dir string) ([]textCorpus, error) {
	read := func(name string, each func(map[string]any) []string) ([]string, error) {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 4<<20)
		var out []string
		for n := 1; sc.Scan(); n++ {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				return nil, fmt.Errorf("%s:%d: %w", name, n, err)
			}
			out = append(out, each(m)...)
		}
		return out, sc.Err()
	}
	str := func(v any) string { s, _ := v.(string); return s }
	gsm, err := read(corpus.QuestionsFile, func(m map[string]any) []string { return []string{str(m["answer"])} })
	if err != nil {
		return nil, err
	}
	hh, err := read(corpus.DialogsFile, func(m map[string]any) []string {
		var out []string
		turns, _ := m["turns"].([]any)
		for _, t := range turns {
			out = append(out, str(t))
		}
		return out
	})
	if err != nil {
		return nil, err
	}
	si, err := read(corpus.TasksFile, func(m map[string]any) []string {
		s := str(m["instruction"])
		if in := str(m["input"]); in != "" {
			s += "\n" + in
		}
		return []string{s}
	})
	if err != nil {
		return nil, err
	}
	return []textCorpus{{"GSM8K worked solutions", gsm}, {"HH-RLHF human turns", hh}, {"self-instruct tasks", si}}, nil
}
