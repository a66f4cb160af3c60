package lab

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"

	"github.com/distillguard/distillguard/watermark"
)

// WatermarkParams sizes the watermark experiments.
type WatermarkParams struct {
	// CorpusDir holds the prompt corpora (the teacher learns from them).
	CorpusDir string
	// Harvests are the numbers of marked responses a text-distilling
	// attacker trains on; Probes the numbers of student outputs verified.
	Harvests []int
	Probes   []int
	// MaxTokens bounds a generated response.
	MaxTokens int
	// StudentOrder is the student n-gram order (2: bigram).
	StudentOrder int
	// Decoys is the number of decoy keys for false-positive rates.
	Decoys int

	// Soft-label (logprob) experiment: the distill experiment's teacher
	// and softmax-regression student.
	LP LogprobWatermarkParams
}

// LogprobWatermarkParams sizes the logprob watermark experiment.
type LogprobWatermarkParams struct {
	Dim, Hidden, Vocab int
	Epochs             int
	Amplitude          float64 // nats
	Harvests, Probes   []int
	Decoys             int
}

// WatermarkSizes returns the experiment sizes at scale (1 = the report's).
func WatermarkSizes(corpusDir string, scale float64) WatermarkParams {
	sc := func(n, floor int) int { return max(floor, int(math.Round(float64(n)*scale))) }
	return WatermarkParams{
		CorpusDir:    corpusDir,
		Harvests:     []int{sc(250, 50), sc(500, 100), sc(1000, 200), sc(2000, 400)},
		Probes:       []int{sc(50, 25), sc(100, 50), sc(250, 100), sc(500, 200)},
		MaxTokens:    60,
		StudentOrder: 2,
		Decoys:       sc(1000, 200),
		LP: LogprobWatermarkParams{Dim: 16, Hidden: 32, Vocab: sc(512, 128), Epochs: sc(150, 60), Amplitude: 0.2,
			Harvests: []int{sc(250, 100), sc(500, 200), sc(1000, 400), sc(2000, 800)},
			Probes:   []int{sc(50, 25), sc(100, 50), sc(250, 100), sc(500, 200)},
			Decoys:   sc(1000, 200)},
	}
}

// labWatermarkKey is the provider's key in the experiments, derived from
// the seed (a real deployment reads watermark.key_file).
func labWatermarkKey(seed uint64, stream uint64) *watermark.Key {
	r := newRand(seed, stream)
	secret := make([]byte, 32)
	for i := range secret {
		secret[i] = byte(r.Uint32())
	}
	k, err := watermark.NewKey("lab", secret)
	if err != nil {
		panic(err) // 32 bytes and a valid id: cannot fail
	}
	return k
}

// decoyKeys are keys the provider never used.
func decoyKeys(seed uint64, n int) []*watermark.Key {
	r := newRand(seed, 43)
	out := make([]*watermark.Key, n)
	secret := make([]byte, 32)
	for i := range out {
		for j := range secret {
			secret[j] = byte(r.Uint32())
		}
		k, err := watermark.NewKey(fmt.Sprintf("decoy%d", i), secret)
		if err != nil {
			panic(err)
		}
		out[i] = k
	}
	return out
}

// streamMark marks text through a Stream fed in random fragments of 1-16
// bytes, as SSE deltas deliver it.
func streamMark(m *watermark.Marker, text string, r *rand.Rand) string {
	s := m.NewStream()
	out := make([]byte, 0, len(text)+16)
	for rest := []byte(text); len(rest) > 0; {
		n := min(1+r.IntN(16), len(rest))
		out = s.Write(out, rest[:n])
		rest = rest[n:]
	}
	return string(s.Flush(out))
}

// lexicalResult is the test of a body of outputs against the key.
type lexicalResult = watermark.Result

func verifyTexts(v *watermark.Verifier, texts []string, k *watermark.Key) lexicalResult {
	sm := v.NewSample()
	for _, t := range texts {
		sm.Add([]byte(t))
	}
	return sm.Score(k)
}

// falsePositives scores texts with every decoy key and counts p < 0.01.
func falsePositives(v *watermark.Verifier, texts []string, decoys []*watermark.Key) (below int, minP float64) {
	sm := v.NewSample()
	for _, t := range texts {
		sm.Add([]byte(t))
	}
	minP = 1
	for _, k := range decoys {
		p := sm.Score(k).PValue
		if p < 0.01 {
			below++
		}
		minP = math.Min(minP, p)
	}
	return below, minP
}

type textHarvest struct {
	raw, marked []string // the same teacher responses, unmarked and marked
	other       []string // independent unmarked responses (frequency reference)
}

// RunWatermark runs the text and logprob watermark experiments.
func RunWatermark(ctx context.Context, seed uint64, p WatermarkParams) (Section, error) {
	corpora, err := loadTextCorpora(p.CorpusDir)
	if err != nil {
		return Section{}, fmt.Errorf("watermark: %w", err)
	}
	lex := watermark.DefaultLexicon()
	key := labWatermarkKey(seed, 40)
	marker := watermark.NewMarker(lex, key)
	ver := watermark.NewVerifier(lex)
	decoys := decoyKeys(seed, p.Decoys)

	// The teacher: a trigram model of the corpora.
	var docs [][]string
	for _, c := range corpora {
		for _, t := range c.texts {
			docs = append(docs, tokenize(t))
		}
	}
	teacher := trainNgram(3, docs)
	maxH := p.Harvests[len(p.Harvests)-1]
	maxP := p.Probes[len(p.Probes)-1]
	gen := newRand(seed, 41)
	chunks := newRand(seed, 42)
	var h textHarvest
	for i := 0; i < maxH; i++ {
		t := detokenize(teacher.generate(gen, p.MaxTokens))
		h.raw = append(h.raw, t)
		h.marked = append(h.marked, streamMark(marker, t, chunks))
		h.other = append(h.other, detokenize(teacher.generate(gen, p.MaxTokens)))
	}
	if ctx.Err() != nil {
		return Section{}, ctx.Err()
	}
	student := func(train []string, stream uint64) []string {
		var d [][]string
		for _, t := range train {
			d = append(d, tokenize(t))
		}
		st := trainNgram(p.StudentOrder, d)
		r := newRand(seed, stream)
		out := make([]string, maxP)
		for i := range out {
			out[i] = detokenize(st.generate(r, p.MaxTokens))
		}
		return out
	}

	sec := Section{
		Title: "Watermarks: proof that a student learned from marked outputs",
		Intro: []string{
			"The teacher is a trigram model of the corpora (GSM8K worked solutions, HH-RLHF turns, self-instruct tasks); its responses pass " +
				"through the gateway's lexical watermark (keyed conditional synonym substitution, `watermark.Stream`, fed in random 1-16 byte " +
				"fragments as SSE deltas arrive). The attacker trains a word n-gram student on the marked responses, and the provider verifies " +
				"the student's own generated outputs with `watermark.Verifier` (exact Poisson-binomial tail over distinct (set, context) groups).",
			"The logprob watermark lowers every returned alternative but the first by A(1+cos(2πf·g(token)))/2 nats (g a keyed PRF of the " +
				"token text, f a key-derived frequency); the distillation experiment's softmax-regression student trained on marked soft " +
				"labels is probed, and its top-20 logprobs (as chat.completion JSON) go through `watermark.ParseChatLogprobs` and the spectral verifier.",
		},
		Params: [][2]string{
			{"seed", fmt.Sprint(seed)},
			{"synonym table", fmt.Sprintf("%d sets, %d surface forms", lex.Sets(), lex.Surfaces())},
			{"teacher", fmt.Sprintf("word trigram (Witten-Bell), %d corpus texts, responses of at most %d tokens", len(docs), p.MaxTokens)},
			{"student", fmt.Sprintf("word %d-gram (Witten-Bell) trained on the harvested responses", p.StudentOrder)},
			{"decoy keys", itoa(p.Decoys)},
		},
	}

	// 1. Detection against harvest size and probe outputs.
	t1 := Table{Title: "Lexical watermark: p-value of a student trained on marked text", Header: []string{"harvested responses"}}
	for _, m := range p.Probes {
		t1.Header = append(t1.Header, fmt.Sprintf("%d outputs", m))
	}
	var last []string
	for hi, n := range p.Harvests {
		outs := student(h.marked[:n], 50+uint64(hi))
		row := []string{itoa(n)}
		for _, m := range p.Probes {
			r := verifyTexts(ver, outs[:m], key)
			row = append(row, fmt.Sprintf("%s (%d/%d)", fmtSci(r.PValue), r.Matches, r.Scored))
		}
		t1.Rows = append(t1.Rows, row)
		last = outs
		if ctx.Err() != nil {
			return Section{}, ctx.Err()
		}
	}
	t1.Notes = []string{"Cells: p-value (matching groups / distinct (set, context) groups scored)."}
	full := verifyTexts(ver, last, key)

	// 2. False positives.
	unmarkedOuts := student(h.raw, 60)
	fpStudent, minStudent := falsePositives(ver, unmarkedOuts, decoys)
	fpMarkedDecoy, minMarkedDecoy := falsePositives(ver, last, decoys)
	trueOnUnmarked := verifyTexts(ver, unmarkedOuts, key)
	t2 := Table{Title: "False positives over decoy keys (p < 0.01)", Header: []string{"text", "groups", "p < 0.01", "share p >= 0.01", "smallest p"}}
	addFP := func(name string, texts []string, below int, minP float64) {
		sm := ver.NewSample()
		for _, t := range texts {
			sm.Add([]byte(t))
		}
		t2.Rows = append(t2.Rows, []string{name, itoa(sm.Groups()), fmt.Sprintf("%d / %d", below, len(decoys)),
			fmtPct(1 - float64(below)/float64(len(decoys))), fmtSci(minP)})
	}
	addFP(fmt.Sprintf("student of %d unmarked responses, %d outputs", maxH, maxP), unmarkedOuts, fpStudent, minStudent)
	addFP(fmt.Sprintf("student of %d marked responses, %d outputs (other keys)", maxH, maxP), last, fpMarkedDecoy, minMarkedDecoy)
	for _, c := range corpora {
		below, minP := falsePositives(ver, c.texts, decoys)
		addFP("corpus: "+c.name+" (unmarked)", c.texts, below, minP)
	}
	t2.Notes = []string{fmt.Sprintf("The provider's own key on the unmarked student: p = %s.", fmtSci(trueOnUnmarked.PValue))}

	// 3. Attacks on the harvest.
	t3 := Table{Title: fmt.Sprintf("Attacks on %d marked responses before training (%d outputs verified)", maxH, maxP),
		Header: []string{"attack", "words changed by the attacker", "p-value", "matches / groups"}}
	attacks := []struct {
		name string
		fn   func([]string, *rand.Rand) ([]string, float64)
	}{
		{"none", func(t []string, _ *rand.Rand) ([]string, float64) { return t, 0 }},
		{"re-substitute uniformly within our sets, half the sets (own table overlapping ours)", func(t []string, r *rand.Rand) ([]string, float64) {
			return resubstitute(lex, t, r, 0.5)
		}},
		{"re-substitute uniformly within all our sets (our table known)", func(t []string, r *rand.Rand) ([]string, float64) {
			return resubstitute(lex, t, r, 1)
		}},
		{"drop 15% of words (crude paraphrase)", func(t []string, r *rand.Rand) ([]string, float64) {
			return dropWords(t, r, 0.15)
		}},
	}
	for ai, a := range attacks {
		attacked, frac := a.fn(h.marked, newRand(seed, 70+uint64(ai)))
		outs := last
		if ai > 0 {
			outs = student(attacked, 80+uint64(ai))
		}
		r := verifyTexts(ver, outs, key)
		t3.Rows = append(t3.Rows, []string{a.name, fmtPct2(frac), fmtSci(r.PValue), fmt.Sprintf("%d / %d", r.Matches, r.Scored)})
	}

	// 4. Cost to honest text and visibility in word frequencies.
	t4 := Table{Title: "Cost to honest text (corpora marked)", Header: []string{"corpus", "texts", "words", "candidates", "words changed", "sentences changed", "chrF"}}
	for _, c := range corpora {
		var st watermark.Stats
		var chrf watermark.ChrF
		var sents, changed int
		for _, t := range c.texts {
			out, s := marker.Mark([]byte(t))
			st.Words += s.Words
			st.Candidates += s.Candidates
			st.Substituted += s.Substituted
			chrf.Add(out, []byte(t))
			n, ch := watermark.SentenceChanges([]byte(t), out)
			sents += n
			changed += ch
		}
		t4.Rows = append(t4.Rows, []string{c.name, itoa(len(c.texts)), fmt.Sprint(st.Words),
			fmtPct2(float64(st.Candidates) / float64(st.Words)), fmtPct2(float64(st.Substituted) / float64(st.Words)),
			fmtPct2(float64(changed) / float64(sents)), fmt.Sprintf("%.2f", chrf.Score())})
	}
	t5 := frequencyTable(lex, h)

	lpTables, lpFindings, err := runLogprobWatermark(ctx, seed, p.LP)
	if err != nil {
		return Section{}, err
	}
	sec.Tables = append([]Table{t1, t2, t3, t4, t5}, lpTables...)
	sec.Findings = append([]string{
		fmt.Sprintf("A bigram student of %d marked responses is identified from %d of its outputs at p = %s (%d of %d groups match the key).",
			maxH, maxP, fmtSci(full.PValue), full.Matches, full.Scored),
		fmt.Sprintf("A student of unmarked responses gives p < 0.01 for %d of %d decoy keys.", fpStudent, len(decoys)),
	}, lpFindings...)
	return sec, nil
}

// resubstitute replaces every word of a synonym set (all of them, or the
// share of sets the attacker's table has) by a uniformly drawn member.
func resubstitute(lex *watermark.Lexicon, texts []string, r *rand.Rand, share float64) ([]string, float64) {
	inTable := map[string]bool{}
	out := make([]string, len(texts))
	var words, changed int
	for i, t := range texts {
		toks := tokenize(t)
		for j, w := range toks {
			words++
			alts, ok := lex.Lookup(strings.ToLower(w))
			if !ok {
				continue
			}
			set := strings.Join(alts, ",")
			in, seen := inTable[set]
			if !seen {
				in = r.Float64() < share
				inTable[set] = in
			}
			if !in {
				continue
			}
			nw := matchCase(alts[r.IntN(len(alts))], w)
			if nw != w {
				changed++
			}
			toks[j] = nw
		}
		out[i] = detokenize(toks)
	}
	return out, float64(changed) / float64(max(words, 1))
}

func matchCase(w, like string) string {
	switch {
	case like == strings.ToUpper(like) && len(like) > 1:
		return strings.ToUpper(w)
	case like[:1] == strings.ToUpper(like[:1]):
		return strings.ToUpper(w[:1]) + w[1:]
	}
	return w
}

func dropWords(texts []string, r *rand.Rand, p float64) ([]string, float64) {
	out := make([]string, len(texts))
	var words, dropped int
	for i, t := range texts {
		var keep []string
		for _, w := range tokenize(t) {
			words++
			if len(w) > 1 && r.Float64() < p {
				dropped++
				continue
			}
			keep = append(keep, w)
		}
		out[i] = detokenize(keep)
	}
	return out, float64(dropped) / float64(max(words, 1))
}

// frequencyTable compares member frequencies in marked and independent
// unmarked teacher outputs: a chi-squared test of homogeneity per set,
// summed over sets (the frequency analysis an attacker with unmarked
// reference text can run), for the conditional mark and for an
// unconditional one (one fixed member per set, as a plain keyed
// substitution without context would give).
func frequencyTable(lex *watermark.Lexicon, h textHarvest) Table {
	count := func(texts []string, fixed bool) map[string][]int {
		out := map[string][]int{}
		for _, t := range texts {
			for _, w := range tokenize(t) {
				alts, ok := lex.Lookup(strings.ToLower(w))
				if !ok {
					continue
				}
				set := strings.Join(alts, ",")
				c := out[set]
				if c == nil {
					c = make([]int, len(alts))
					out[set] = c
				}
				m := 0
				for i, a := range alts {
					if a == strings.ToLower(w) {
						m = i
					}
				}
				if fixed {
					m = int(uint(len(set)*7+int(set[0])) % uint(len(alts)))
				}
				c[m]++
			}
		}
		return out
	}
	ref := count(h.other, false)
	tb := Table{Title: "Visibility in word frequencies (marked vs independent unmarked teacher outputs)",
		Header: []string{"marking", "sets compared", "chi-squared", "df", "p-value", "mean total variation"}}
	for _, v := range []struct {
		name  string
		texts []string
		fixed bool
	}{{"none (two unmarked samples)", h.raw, false}, {"conditional (this package)", h.marked, false}, {"unconditional (one member per set)", h.raw, true}} {
		got := count(v.texts, v.fixed)
		var chi, tv float64
		var df, sets int
		for set, a := range got {
			b := ref[set]
			if b == nil {
				continue
			}
			na, nb := sum(a), sum(b)
			if na+nb < 20 {
				continue
			}
			sets++
			var tvs float64
			for i := range a {
				col := float64(a[i] + b[i])
				if col == 0 {
					continue
				}
				ea := col * float64(na) / float64(na+nb)
				eb := col * float64(nb) / float64(na+nb)
				chi += (float64(a[i])-ea)*(float64(a[i])-ea)/ea + (float64(b[i])-eb)*(float64(b[i])-eb)/eb
				df++
				tvs += math.Abs(float64(a[i])/float64(na) - float64(b[i])/float64(nb))
			}
			df--
			tv += tvs / 2
		}
		tb.Rows = append(tb.Rows, []string{v.name, itoa(sets), fmt.Sprintf("%.1f", chi), itoa(df), fmtSci(chiSquaredUpper(chi, df)), fmt.Sprintf("%.3f", tv/float64(max(sets, 1)))})
	}
	tb.Notes = []string{"Sets with at least 20 occurrences in the two samples together; p-value by the Wilson-Hilferty approximation."}
	return tb
}

func sum(a []int) int {
	s := 0
	for _, v := range a {
		s += v
	}
	return s
}

// chiSquaredUpper is P(X >= x) for X chi-squared with df degrees of
// freedom, by the Wilson-Hilferty cube-root normal approximation.
func chiSquaredUpper(x float64, df int) float64 {
	if df <= 0 {
		return 1
	}
	k := float64(df)
	z := (math.Cbrt(x/k) - (1 - 2/(9*k))) / math.Sqrt(2/(9*k))
	return 0.5 * math.Erfc(z/math.Sqrt2)
}
