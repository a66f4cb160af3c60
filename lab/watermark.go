package lab

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
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
	// TargetHarvest and TargetProbes are the target's point (a student
	// of 2,000 marked responses, 500 of its outputs): the headline, the
	// false positives, the attacks and the seed table are measured there.
	TargetHarvest, TargetProbes int
	// Seeds is the number of independent replications at the target
	// (teacher output, statistics, key, harvest and student all redrawn).
	Seeds int
	// RandomizeRates are the rates r at which the attacker re-draws each
	// synonym-set word of the harvest uniformly within its set.
	RandomizeRates []float64
	// MaxTokens bounds a generated response.
	MaxTokens int
	// StudentOrder is the student n-gram order (2: bigram).
	StudentOrder int
	// LargeHarvests and LargeProbes extend the detection grid past the
	// targets (how much more text the frequency-preserving mark needs).
	LargeHarvests, LargeProbes []int
	// StatsResponses is how many unmarked teacher responses the
	// provider's context statistics are counted in.
	StatsResponses int
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
	// Amplitudes is the amplitude curve (at the largest harvest and probe
	// count); it must contain Amplitude.
	Amplitudes       []float64
	Harvests, Probes []int
	Decoys           int
	// ShadowFactor sizes the provider's shadow student: trained on this
	// many times the largest harvest, of the provider's own inputs.
	ShadowFactor int
}

// WatermarkSizes returns the experiment sizes at scale (1 = the report's).
func WatermarkSizes(corpusDir string, scale float64) WatermarkParams {
	sc := func(n, floor int) int { return max(floor, int(math.Round(float64(n)*scale))) }
	return WatermarkParams{
		CorpusDir:      corpusDir,
		Harvests:       []int{sc(500, 100), sc(1000, 200), sc(2000, 400), sc(8000, 1600)},
		Probes:         []int{sc(100, 50), sc(250, 100), sc(500, 200)},
		TargetHarvest:  sc(2000, 400),
		TargetProbes:   sc(500, 200),
		Seeds:          8,
		RandomizeRates: []float64{0, 0.1, 0.25, 0.5, 0.75, 1},
		MaxTokens:      60,
		StudentOrder:   2,
		StatsResponses: sc(50000, 5000),
		LargeHarvests:  []int{sc(2000, 400), sc(4000, 800), sc(8000, 1600)},
		LargeProbes:    []int{sc(500, 200), sc(1000, 400), sc(2000, 800)},
		Decoys:         sc(1000, 200),
		LP: LogprobWatermarkParams{Dim: 16, Hidden: 32, Vocab: sc(512, 128), Epochs: sc(150, 60), Amplitude: 0.3,
			Amplitudes: []float64{0.05, 0.1, 0.2, 0.3, 0.5},
			Harvests:   []int{sc(250, 100), sc(500, 200), sc(1000, 400), sc(2000, 800)},
			Probes:     []int{sc(50, 25), sc(100, 50), sc(250, 100), sc(500, 200)},
			Decoys:     sc(1000, 200), ShadowFactor: 4},
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
	return sampleOf(v, texts, nil).Score(k)
}

// sampleOf scans texts into a sample of v; with served (the texts the
// suspect could have learned from) not nil, the test weighs groups by it
// (watermark.Sample.UseServed).
func sampleOf(v *watermark.Verifier, texts []string, served *watermark.Sample) *watermark.Sample {
	sm := v.NewSample()
	for _, t := range texts {
		sm.Add([]byte(t))
	}
	if served != nil {
		sm.UseServed(served)
	}
	return sm
}

// falsePositives scores texts with every decoy key and counts p < 0.01.
func falsePositives(v *watermark.Verifier, texts []string, decoys []*watermark.Key) (below int, minP float64) {
	return decoysBelow(sampleOf(v, texts, nil), decoys)
}

// decoysBelow scores sm with every decoy key and counts p < 0.01.
func decoysBelow(sm *watermark.Sample, decoys []*watermark.Key) (below int, minP float64) {
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
}

// RunWatermark runs the text and logprob watermark experiments.
func RunWatermark(ctx context.Context, seed uint64, p WatermarkParams) (Section, error) {
	corpora, err := loadTextCorpora(p.CorpusDir)
	if err != nil {
		return Section{}, fmt.Errorf("watermark: %w", err)
	}
	key := labWatermarkKey(seed, 40)
	decoys := decoyKeys(seed, p.Decoys)

	teacher := corpusTeacher(corpora)
	// The provider's context statistics: counted in its own unmarked
	// output (an independent sample, larger than any comparison below),
	// as a deployment builds them from its own traffic.
	embedded := watermark.DefaultLexicon()
	statsGen := newRand(seed, 47)
	own := make([][]byte, p.StatsResponses)
	for i := range own {
		own[i] = []byte(detokenize(teacher.generate(statsGen, p.MaxTokens)))
	}
	lex := embedded.WithContextStats(watermark.BuildContextStats(embedded, own))
	own = nil
	marker := watermark.NewMarker(lex, key)
	ver := watermark.NewVerifier(lex)
	maxH, maxP := p.TargetHarvest, p.TargetProbes
	bigH := max(maxH, p.Harvests[len(p.Harvests)-1], p.LargeHarvests[len(p.LargeHarvests)-1])
	bigP := max(maxP, p.Probes[len(p.Probes)-1], p.LargeProbes[len(p.LargeProbes)-1])
	gen := newRand(seed, 41)
	chunks := newRand(seed, 42)
	var h textHarvest
	for i := 0; i < bigH; i++ {
		t := detokenize(teacher.generate(gen, p.MaxTokens))
		h.raw = append(h.raw, t)
		h.marked = append(h.marked, streamMark(marker, t, chunks))
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
		out := make([]string, bigP)
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
				"the student's own generated outputs with `watermark.Verifier` (a likelihood-ratio test martingale over distinct (set, form slot, context) groups, " +
				"with the key's replayed draw probabilities as the null, each group scored on all its member counts: conservative by construction). The context -> member assignment is " +
				"frequency-preserving (CATER): built per key from context statistics of the provider's own unmarked output, so every member keeps its natural share; " +
				"the heaviest contexts are tilted in pairs in opposite directions (a keyed member gains a keyed share of one context's occurrences and loses as many in the other), " +
				"a lighter context too heavy for any member to take whole is tilted alone, and a set too rare in the statistics is left unmarked.",
			"The logprob watermark splits tokens into two keyed groups s(w) = ±1 and lowers every returned alternative but the first by " +
				"A(1 - s(w)·h)/2 nats, h = sin(u) with u a keyed ±1 projection of the record's features (GINSEW-style: the signal varies with the input). " +
				"The distillation experiment's softmax-regression student trained on marked soft labels is probed, and its top-20 logprobs (as chat.completion JSON) " +
				"go through `watermark.ParseLogprobs` and `watermark.LogprobSample` (keyed token-sign randomisation with a Rademacher tail bound).",
		},
		Params: [][2]string{
			{"seed", fmt.Sprint(seed)},
			{"synonym table", fmt.Sprintf("%d sets, %d surface forms", lex.Sets(), lex.Surfaces())},
			{"teacher", fmt.Sprintf("word trigram (Witten-Bell), %d corpus texts, responses of at most %d tokens", textCount(corpora), p.MaxTokens)},
			{"student", fmt.Sprintf("word %d-gram (Witten-Bell) trained on the harvested responses", p.StudentOrder)},
			{"decoy keys", itoa(p.Decoys)},
			{"context statistics", fmt.Sprintf("%d unmarked teacher responses (independent of every sample below), %d (set, slot) units", p.StatsResponses, lex.ContextStats().Sets())},
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
		if n == maxH {
			last = outs
		}
		if ctx.Err() != nil {
			return Section{}, ctx.Err()
		}
	}
	t1.Notes = []string{"Cells: p-value (matching groups / distinct (set, slot, context) groups scored)."}
	if last == nil {
		last = student(h.marked[:maxH], 59)
	}
	last = last[:maxP]
	full := verifyTexts(ver, last, key)

	// 1b. Past the targets, and the capacity / visibility trade-off: the
	// same harvest marked without the frequency-preserving statistics.
	tL := Table{Title: "Lexical watermark: larger harvests and more student outputs", Header: []string{"harvested responses"}}
	for _, m := range p.LargeProbes {
		tL.Header = append(tL.Header, fmt.Sprintf("%d outputs", m))
	}
	for hi, n := range p.LargeHarvests {
		outs := student(h.marked[:n], 55+uint64(hi))
		row := []string{itoa(n)}
		for _, m := range p.LargeProbes {
			r := verifyTexts(ver, outs[:m], key)
			row = append(row, fmt.Sprintf("%s (%d/%d)", fmtSci(r.PValue), r.Matches, r.Scored))
		}
		tL.Rows = append(tL.Rows, row)
		if ctx.Err() != nil {
			return Section{}, ctx.Err()
		}
	}
	bigN, bigM := p.LargeHarvests[len(p.LargeHarvests)-1], p.LargeProbes[len(p.LargeProbes)-1]
	tT := Table{Title: "Lexical watermark: capacity against visibility, by the statistics the assignment uses",
		Header: []string{"context statistics", "share of candidates keyed (seen + tail)", fmt.Sprintf("p, %d harvested / %d outputs", maxH, maxP),
			fmt.Sprintf("p, %d harvested / %d outputs", bigN, bigM), "words changed (teacher output)"}}
	for vi, v := range []struct {
		name string
		lex  *watermark.Lexicon
	}{
		{"own unmarked output (this package's procedure)", lex},
		{"embedded corpus statistics (contexts_table.go)", embedded},
		{"none (table weights in every context)", lex.WithContextStats(nil)},
	} {
		mk := watermark.NewMarker(v.lex, key)
		vv := watermark.NewVerifier(v.lex)
		marked := make([]string, bigN)
		var st watermark.Stats
		for i, t := range h.raw[:bigN] {
			b, s := mk.Mark([]byte(t))
			marked[i] = string(b)
			st.Words += s.Words
			st.Substituted += s.Substituted
		}
		a := mk.Assignment()
		small := student(marked[:maxH], 90+uint64(vi))
		large := student(marked, 95+uint64(vi))
		r1, r2 := verifyTexts(vv, small[:maxP], key), verifyTexts(vv, large[:bigM], key)
		tT.Rows = append(tT.Rows, []string{v.name, fmtPct(a.Keyed + a.Tail), fmtSci(r1.PValue), fmtSci(r2.PValue),
			fmtPct2(float64(st.Substituted) / float64(max(st.Words, 1)))})
	}
	tT.Notes = []string{"Keyed share: occurrences in the statistics whose context draws its member by the key among two or more (the rest are left unmarked, or forced to the one member that fits, the same for every key). " +
		"Visibility of the same three markings: the word-frequency table below."}

	// 2. False positives.
	unmarkedOuts := student(h.raw[:maxH], 60)[:maxP]
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
		attacked, frac := a.fn(h.marked[:maxH], newRand(seed, 70+uint64(ai)))
		outs := last
		if ai > 0 {
			outs = student(attacked, 80+uint64(ai))[:maxP]
		}
		r := verifyTexts(ver, outs, key)
		t3.Rows = append(t3.Rows, []string{a.name, fmtPct2(frac), fmtSci(r.PValue), fmt.Sprintf("%d / %d", r.Matches, r.Scored)})
	}

	// 3b. Randomizing our sets at rate r: every synonym-set word of the
	// harvest is re-drawn uniformly within its set with probability r.
	tR := Table{Title: fmt.Sprintf("Randomizing the synonym sets at rate r on %d marked responses (%d outputs verified)", maxH, maxP),
		Header: []string{"r", "words changed by the attacker", "p-value", "matches / groups"}}
	for ri, rate := range p.RandomizeRates {
		attacked, frac := randomizeSets(lex, h.marked[:maxH], newRand(seed, 100+uint64(ri)), rate)
		r := verifyTexts(ver, student(attacked, 110+uint64(ri))[:maxP], key)
		tR.Rows = append(tR.Rows, []string{fmt.Sprintf("%.2f", rate), fmtPct2(frac), fmtSci(r.PValue), fmt.Sprintf("%d / %d", r.Matches, r.Scored)})
	}
	tR.Notes = []string{"The attacker knows our table and spends no effort on which word to pick: at r = 1 the harvest's synonym choices are independent of the key, so the mark is gone (and p must not be small)."}

	// 3c. Replications at the target: everything redrawn per seed.
	tS, seedPs := watermarkSeeds(ctx, teacher, embedded, seed, p)

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
	t5 := frequencyTable(lex, embedded, key, teacher, seed, maxH, p.MaxTokens)

	lpTables, lpFindings, err := runLogprobWatermark(ctx, seed, p.LP)
	if err != nil {
		return Section{}, err
	}
	sec.Tables = append([]Table{t1, tL, tT, tS, t2, t3, tR, t4, t5}, lpTables...)
	sec.Findings = append([]string{
		fmt.Sprintf("A bigram student of %d marked responses is identified from %d of its outputs at p = %s (%d of %d groups match the key).",
			maxH, maxP, fmtSci(full.PValue), full.Matches, full.Scored),
		fmt.Sprintf("Over %d independent replications at that point: median p = %s, %d of %d at p <= 1e-6.",
			len(seedPs), fmtSci(median(seedPs)), countAtMost(seedPs, 1e-6), len(seedPs)),
		fmt.Sprintf("A student of unmarked responses gives p < 0.01 for %d of %d decoy keys.", fpStudent, len(decoys)),
	}, lpFindings...)
	return sec, nil
}

// resubstitute replaces every word of a synonym set (all of them, or the
// share of sets the attacker's table has) by a uniformly drawn member.
func resubstitute(lex *watermark.Lexicon, texts []string, r *rand.Rand, share float64) ([]string, float64) {
	inTable := map[string]bool{}
	return redraw(lex, texts, r, func(alts []string) bool {
		set := strings.Join(alts, ",")
		in, seen := inTable[set]
		if !seen {
			in = r.Float64() < share
			inTable[set] = in
		}
		return in
	})
}

// redraw replaces each word of a synonym set for which pick says so by a
// uniformly drawn member of its set, casing kept, and reports the share of
// words that changed.
func redraw(lex *watermark.Lexicon, texts []string, r *rand.Rand, pick func(alts []string) bool) ([]string, float64) {
	out := make([]string, len(texts))
	var words, changed int
	for i, t := range texts {
		toks := tokenize(t)
		for j, w := range toks {
			words++
			alts, ok := lex.Lookup(strings.ToLower(w))
			if !ok || !pick(alts) {
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

// memberCounts counts, per synonym set (named by its members), how often
// each member occurs anywhere in texts: the plain word-frequency view of
// an analyst with no key. fixed replaces every occurrence by one member per
// set (what a keyed substitution without context would give).
func memberCounts(lex *watermark.Lexicon, texts []string, fixed bool) map[string][]int {
	out := map[string][]int{}
	for _, t := range texts {
		for _, w := range tokenize(t) {
			lw := strings.ToLower(w)
			alts, ok := lex.Lookup(lw)
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
				if a == lw {
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

// homogeneity is the chi-squared test of homogeneity of member
// frequencies between two samples, summed over the sets with at least 20
// occurrences in the two together, and the mean total variation distance
// between the two samples' member shares over those sets.
type homogeneity struct {
	sets, df int
	chi, tv  float64
}

func compareCounts(a, b map[string][]int) homogeneity {
	var h homogeneity
	names := make([]string, 0, len(a))
	for set := range a {
		names = append(names, set)
	}
	slices.Sort(names) // map order must not reach the float sums
	for _, set := range names {
		ca, cb := a[set], b[set]
		if cb == nil {
			continue
		}
		na, nb := sum(ca), sum(cb)
		if na+nb < 20 || na == 0 || nb == 0 {
			continue
		}
		h.sets++
		var tvs float64
		cols := 0
		for i := range ca {
			col := float64(ca[i] + cb[i])
			if col == 0 {
				continue
			}
			cols++
			ea := col * float64(na) / float64(na+nb)
			eb := col * float64(nb) / float64(na+nb)
			h.chi += (float64(ca[i])-ea)*(float64(ca[i])-ea)/ea + (float64(cb[i])-eb)*(float64(cb[i])-eb)/eb
			tvs += math.Abs(float64(ca[i])/float64(na) - float64(cb[i])/float64(nb))
		}
		h.df += cols - 1
		h.tv += tvs / 2
	}
	if h.sets > 0 {
		h.tv /= float64(h.sets)
	}
	return h
}

// frequencyTable compares member frequencies of marked teacher output with
// an independent unmarked sample of the same size, at the experiment's
// harvest size and at ten times it: the frequency analysis an attacker
// with unmarked reference text can run. Baselines: two unmarked samples
// (what sampling alone gives), the conditional mark without context
// statistics (every context drawn by table weight), and an unconditional
// substitution (one member per set).
func frequencyTable(lex, embedded *watermark.Lexicon, key *watermark.Key, teacher *ngramLM, seed uint64, n, maxTok int) Table {
	noStats := lex.WithContextStats(nil)
	marker, corpusStats, plain := watermark.NewMarker(lex, key), watermark.NewMarker(embedded, key), watermark.NewMarker(noStats, key)
	tb := Table{Title: "Visibility in word frequencies (member counts of marked vs independent unmarked teacher outputs)",
		Header: []string{"responses per sample", "marking", "sets compared", "occurrences", "chi-squared", "df", "p-value", "mean total variation"}}
	for si, size := range []int{n, 10 * n} {
		gen := newRand(seed, 48+uint64(si))
		raw, other := make([]string, size), make([]string, size)
		for i := range raw {
			raw[i] = detokenize(teacher.generate(gen, maxTok))
			other[i] = detokenize(teacher.generate(gen, maxTok))
		}
		mark := func(m *watermark.Marker) []string {
			out := make([]string, size)
			for i, t := range raw {
				b, _ := m.Mark([]byte(t))
				out[i] = string(b)
			}
			return out
		}
		ref := memberCounts(lex, other, false)
		for _, v := range []struct {
			name string
			c    map[string][]int
		}{
			{"none (two unmarked samples)", memberCounts(lex, raw, false)},
			{"conditional, frequency-preserving, statistics of own output (this package)", memberCounts(lex, mark(marker), false)},
			{"conditional, frequency-preserving, embedded corpus statistics", memberCounts(lex, mark(corpusStats), false)},
			{"conditional, table weights, no context statistics", memberCounts(lex, mark(plain), false)},
			{"unconditional (one member per set)", memberCounts(lex, raw, true)},
		} {
			h := compareCounts(v.c, ref)
			occ := 0
			for _, c := range v.c {
				occ += sum(c)
			}
			tb.Rows = append(tb.Rows, []string{itoa(size), v.name, itoa(h.sets), itoa(occ), fmt.Sprintf("%.1f", h.chi), itoa(h.df),
				fmtSci(chiSquaredUpper(h.chi, h.df)), fmt.Sprintf("%.3f", h.tv)})
		}
	}
	tb.Notes = []string{"Chi-squared test of homogeneity per set, summed over the sets with at least 20 occurrences in the two samples together (df = members seen - 1 per set); p-value by the Wilson-Hilferty approximation. " +
		"The marked sample is the unmarked one after marking, so row \"none\" is the same texts unmarked. " +
		"The embedded statistics (contexts_table.go) come from the 110k-word corpora: at ten times the harvest the comparison resolves their estimation error, which statistics counted in the provider's own output do not have."}
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

// watermarkSeeds replicates the target experiment p.Seeds times: for each
// replication a fresh key, fresh provider statistics, a fresh harvest and a
// fresh student (streams derived from seed and the replication number), and
// the student of the same harvest unmarked, scored with the same key.
func watermarkSeeds(ctx context.Context, teacher *ngramLM, embedded *watermark.Lexicon, seed uint64, p WatermarkParams) (Table, []float64) {
	tb := Table{Title: fmt.Sprintf("Lexical watermark at the target over %d replications (%d harvested, %d outputs)", p.Seeds, p.TargetHarvest, p.TargetProbes),
		Header: []string{"replication", "p-value, student of marked text", "matches / groups", "p-value, student of the same text unmarked", "words changed (harvest)"}}
	var ps []float64
	for i := 0; i < p.Seeds && ctx.Err() == nil; i++ {
		base := 1000 + 20*uint64(i)
		key := labWatermarkKey(seed, base)
		statsGen := newRand(seed, base+1)
		own := make([][]byte, p.StatsResponses)
		for j := range own {
			own[j] = []byte(detokenize(teacher.generate(statsGen, p.MaxTokens)))
		}
		lex := embedded.WithContextStats(watermark.BuildContextStats(embedded, own))
		marker, ver := watermark.NewMarker(lex, key), watermark.NewVerifier(lex)
		gen := newRand(seed, base+2)
		var raw, marked [][]string
		var st watermark.Stats
		for j := 0; j < p.TargetHarvest; j++ {
			t := detokenize(teacher.generate(gen, p.MaxTokens))
			out, s := marker.Mark([]byte(t))
			st.Words += s.Words
			st.Substituted += s.Substituted
			raw = append(raw, tokenize(t))
			marked = append(marked, tokenize(string(out)))
		}
		outputs := func(docs [][]string, stream uint64) []string {
			stu := trainNgram(p.StudentOrder, docs)
			r := newRand(seed, stream)
			out := make([]string, p.TargetProbes)
			for j := range out {
				out[j] = detokenize(stu.generate(r, p.MaxTokens))
			}
			return out
		}
		rm := verifyTexts(ver, outputs(marked, base+3), key)
		ru := verifyTexts(ver, outputs(raw, base+4), key)
		ps = append(ps, rm.PValue)
		tb.Rows = append(tb.Rows, []string{itoa(i + 1), fmtSci(rm.PValue), fmt.Sprintf("%d / %d", rm.Matches, rm.Scored), fmtSci(ru.PValue),
			fmtPct2(float64(st.Substituted) / float64(max(st.Words, 1)))})
	}
	tb.Notes = []string{fmt.Sprintf("Median p = %s; %d of %d replications at p <= 1e-6. Each replication's provider statistics are counted in %d of its own unmarked teacher responses.",
		fmtSci(median(ps)), countAtMost(ps, 1e-6), len(ps), p.StatsResponses)}
	return tb, ps
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return math.Sqrt(s[len(s)/2-1] * s[len(s)/2]) // geometric: p-values span decades
}

func countAtMost(xs []float64, a float64) int {
	n := 0
	for _, x := range xs {
		if x <= a {
			n++
		}
	}
	return n
}

// randomizeSets re-draws each word of a synonym set, with probability
// rate, uniformly among its set's members (casing kept): an attacker who
// knows our table and randomizes a share of its words.
func randomizeSets(lex *watermark.Lexicon, texts []string, r *rand.Rand, rate float64) ([]string, float64) {
	return redraw(lex, texts, r, func([]string) bool { return r.Float64() < rate })
}
