package lab

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/distillguard/distillguard/watermark"
)

// PowerParams sizes the lexical watermark's power harness: replications of
// the target point (a student of Harvest marked responses, Probes of its
// outputs verified), each with its own key, provider statistics, harvest
// and student, plus the calibration and visibility checks the target is
// held to. It is the full experiment's replication table without the rest
// of the report, so the design can be measured at the target size in
// minutes.
type PowerParams struct {
	CorpusDir      string
	Harvest        int
	Probes         int
	Replications   int
	StatsResponses int
	MaxTokens      int
	// Orders are the student n-gram orders measured (2: bigram; 0: the
	// neural student; a negative order -n: the unsmoothed n-gram sampler,
	// which writes only the n-grams its harvest held while it can;
	// kneserNey + n: the interpolated Kneser-Ney n-gram, n <= 2).
	Orders []int
	// Decoys is the number of decoy keys each replication's unmarked
	// student is scored with.
	Decoys int
	// Visibility lists the numbers of responses the word-frequency
	// comparison is run at (marked vs independent unmarked teacher text),
	// for each of the first VisibilityReps replications.
	Visibility     []int
	VisibilityReps int
	// DomainDirs, when set, make the real harness harvest the Markdown
	// prose paragraphs under them (DomainParagraphs) instead of the
	// corpora: text of another domain than the embedded statistics were
	// counted in, marked with them, as a server that was given no
	// watermark.contexts_file marks its own output.
	DomainDirs []string
}

// PowerSizes returns the harness at the brief's target.
func PowerSizes(corpusDir string) PowerParams {
	return PowerParams{CorpusDir: corpusDir, Harvest: 2000, Probes: 500, Replications: 24, StatsResponses: 50000,
		MaxTokens: 60, Orders: []int{2, 3}, Decoys: 50, Visibility: []int{2000, 20000}, VisibilityReps: 4}
}

// PowerResult is what the harness measured.
type PowerResult struct {
	// P[order] lists the student's p-value per replication.
	P map[int][]float64
	// Unmarked lists the provider's key on the unmarked student.
	Unmarked []float64
	// DecoyBelow counts decoy scores of unmarked students below 0.01, of
	// DecoyTrials.
	DecoyBelow, DecoyTrials int
	// Served, UnmarkedServed and DecoyBelowServed are the same tests
	// given the served text (the replication's marked harvest;
	// watermark.Sample.UseServed). The unmarked students learned from
	// the same responses unmarked, so the served text holds their groups:
	// the case where the weights could mislead if they were not key-free.
	Served           map[int][]float64
	UnmarkedServed   []float64
	DecoyBelowServed int
	// Changed is the share of words the marker changed in the harvests.
	Changed float64
	// ChiP maps a response count to the chi-squared p-values of marked vs
	// unmarked member frequencies (one per replication of the first
	// VisibilityReps: each its own key and statistics), and ChiNone to two
	// unmarked samples.
	ChiP, ChiNone map[int][]float64
	// Corpus is the p-value of each corpus marked in full with the first
	// replication's key (the server's path: marked text itself), and
	// CorpusRaw the same corpus unmarked.
	Corpus, CorpusRaw map[string]float64
	ChrF              float64
}

// Report formats the result.
func (r PowerResult) Report(p PowerParams) string {
	var b strings.Builder
	for _, o := range p.Orders {
		ps := r.P[o]
		fmt.Fprintf(&b, "%s: %d/%d at p <= 1e-6, median %s, worst %s, mean log(1/p) %.2f\n", studentName(o), countAtMost(ps, 1e-6), len(ps), fmtSci(median(ps)), fmtSci(maxOf(ps)), meanLogInv(ps))
		var cells []string
		for _, v := range ps {
			cells = append(cells, fmtSci(v))
		}
		fmt.Fprintf(&b, "  %s\n", strings.Join(cells, " "))
	}
	fmt.Fprintf(&b, "real key on unmarked students: min p %s, %d/%d below 0.01\n", fmtSci(minOf(r.Unmarked)), countBelow(r.Unmarked, 0.01), len(r.Unmarked))
	fmt.Fprintf(&b, "decoys on unmarked students: %d/%d below 0.01 (%.2f%% at p >= 0.01)\n", r.DecoyBelow, r.DecoyTrials, 100*(1-float64(r.DecoyBelow)/float64(max(r.DecoyTrials, 1))))
	if len(r.Served) > 0 {
		b.WriteString("given the served text (verify -served):\n")
		for _, o := range p.Orders {
			ps := r.Served[o]
			fmt.Fprintf(&b, "  %s: %d/%d at p <= 1e-6, median %s, worst %s, mean log(1/p) %.2f\n", studentName(o), countAtMost(ps, 1e-6), len(ps), fmtSci(median(ps)), fmtSci(maxOf(ps)), meanLogInv(ps))
		}
		fmt.Fprintf(&b, "  real key on unmarked students: min p %s, %d/%d below 0.01\n", fmtSci(minOf(r.UnmarkedServed)), countBelow(r.UnmarkedServed, 0.01), len(r.UnmarkedServed))
		fmt.Fprintf(&b, "  decoys on unmarked students: %d/%d below 0.01 (%.2f%% at p >= 0.01)\n", r.DecoyBelowServed, r.DecoyTrials, 100*(1-float64(r.DecoyBelowServed)/float64(max(r.DecoyTrials, 1))))
	}
	fmt.Fprintf(&b, "words changed %.2f%%, chrF %.2f\n", 100*r.Changed, r.ChrF)
	for _, n := range p.Visibility {
		fmt.Fprintf(&b, "visibility at %d: marked p %s; two unmarked samples p %s\n", n, sciList(r.ChiP[n]), sciList(r.ChiNone[n]))
	}
	for name, v := range r.Corpus {
		fmt.Fprintf(&b, "corpus %s marked: p %s, unmarked %s\n", name, fmtSci(v), fmtSci(r.CorpusRaw[name]))
	}
	return b.String()
}

// meanLogInv is the mean of log(1/p) over ps.
func meanLogInv(ps []float64) float64 {
	var mean float64
	for _, v := range ps {
		mean -= math.Log(v) / float64(len(ps))
	}
	return mean
}

func maxOf(xs []float64) float64 {
	m := math.Inf(-1)
	for _, x := range xs {
		m = math.Max(m, x)
	}
	return m
}

func minOf(xs []float64) float64 {
	m := math.Inf(1)
	for _, x := range xs {
		m = math.Min(m, x)
	}
	return m
}

func countBelow(xs []float64, a float64) int {
	n := 0
	for _, x := range xs {
		if x < a {
			n++
		}
	}
	return n
}

// RunWatermarkPower runs the harness. Every random choice is drawn from
// seed, so two runs give the same result.
func RunWatermarkPower(ctx context.Context, seed uint64, p PowerParams) (PowerResult, error) {
	corpora, err := loadTextCorpora(p.CorpusDir)
	if err != nil {
		return PowerResult{}, fmt.Errorf("watermark power: %w", err)
	}
	teacher := corpusTeacher(corpora)
	embedded := watermark.DefaultLexicon()
	decoys := decoyKeys(seed, p.Decoys)
	res := PowerResult{P: map[int][]float64{}, Served: map[int][]float64{}, ChiP: map[int][]float64{}, ChiNone: map[int][]float64{},
		Corpus: map[string]float64{}, CorpusRaw: map[string]float64{}}
	var words, changed int64
	for i := 0; i < p.Replications; i++ {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		base := 5000 + 20*uint64(i)
		rep := powerReplication(seed, base, p, teacher, embedded)
		key, lex, marker, ver := rep.key, rep.lex, rep.marker, rep.ver
		raw, marked := rep.raw, rep.marked
		words += rep.words
		changed += rep.changed
		outputs := func(order int, d [][]string, stream uint64) []string {
			return studentOutputs(seed, stream, order, d, p)
		}
		served := sampleOf(ver, rep.markedText, nil)
		for oi, o := range p.Orders {
			res.score(o, ver, outputs(o, marked, base+3+uint64(oi)), key, served)
		}
		res.unmarked(ver, outputs(2, raw, base+9), key, decoys, served)
		if i < p.VisibilityReps {
			visibility(&res, p, teacher, lex, marker, seed, base)
		}
		if i > 0 {
			continue
		}
		// Once: marked corpora, chrF.
		var chrf watermark.ChrF
		for _, c := range corpora {
			var mk []string
			for _, t := range c.texts {
				out, _ := marker.Mark([]byte(t))
				chrf.Add(out, []byte(t))
				mk = append(mk, string(out))
			}
			res.Corpus[c.name] = verifyTexts(ver, mk, key).PValue
			res.CorpusRaw[c.name] = verifyTexts(ver, c.texts, key).PValue
		}
		res.ChrF = chrf.Score()
	}
	res.Changed = float64(changed) / float64(max(words, 1))
	return res, nil
}

// score records the test of a marked student's outputs, without and with
// the served text (one scan: the served weights are added after the
// plain test).
func (res *PowerResult) score(order int, ver *watermark.Verifier, outs []string, key *watermark.Key, served *watermark.Sample) {
	sm := sampleOf(ver, outs, nil)
	res.P[order] = append(res.P[order], sm.Score(key).PValue)
	sm.UseServed(served)
	res.Served[order] = append(res.Served[order], sm.Score(key).PValue)
}

// unmarked records the tests of an unmarked student's outputs (the real
// key and the decoys), without and with the served text.
func (res *PowerResult) unmarked(ver *watermark.Verifier, outs []string, key *watermark.Key, decoys []*watermark.Key, served *watermark.Sample) {
	sm := sampleOf(ver, outs, nil)
	res.Unmarked = append(res.Unmarked, sm.Score(key).PValue)
	below, _ := decoysBelow(sm, decoys)
	res.DecoyBelow += below
	sm.UseServed(served)
	res.UnmarkedServed = append(res.UnmarkedServed, sm.Score(key).PValue)
	below, _ = decoysBelow(sm, decoys)
	res.DecoyBelowServed += below
	res.DecoyTrials += len(decoys)
}

// visibility runs the word-frequency comparison of one replication.
func visibility(res *PowerResult, p PowerParams, teacher *ngramLM, lex *watermark.Lexicon, marker *watermark.Marker, seed, base uint64) {
	for vi, n := range p.Visibility {
		g := newRand(seed, base+10+uint64(vi))
		a, b := make([]string, n), make([]string, n)
		for j := range a {
			a[j] = detokenize(teacher.generate(g, p.MaxTokens))
			b[j] = detokenize(teacher.generate(g, p.MaxTokens))
		}
		ma := make([]string, n)
		for j, t := range a {
			out, _ := marker.Mark([]byte(t))
			ma[j] = string(out)
		}
		ref := memberCounts(lex, b, false)
		h := compareCounts(memberCounts(lex, ma, false), ref)
		res.ChiP[n] = append(res.ChiP[n], chiSquaredUpper(h.chi, h.df))
		h0 := compareCounts(memberCounts(lex, a, false), ref)
		res.ChiNone[n] = append(res.ChiNone[n], chiSquaredUpper(h0.chi, h0.df))
	}
}

func sciList(xs []float64) string {
	var cells []string
	for _, v := range xs {
		cells = append(cells, fmtSci(v))
	}
	return strings.Join(cells, " ")
}

// replication is one replication's provider side: its key, statistics,
// marker and the teacher's harvest, unmarked and marked (tokenized).
type replication struct {
	key            *watermark.Key
	lex            *watermark.Lexicon
	marker         *watermark.Marker
	ver            *watermark.Verifier
	raw, marked    [][]string
	markedText     []string
	rawText        []string
	words, changed int64
}

// powerReplication draws replication base's key, statistics and harvest.
func powerReplication(seed, base uint64, p PowerParams, teacher *ngramLM, embedded *watermark.Lexicon) replication {
	rep := replication{key: labWatermarkKey(seed, base), lex: embedded}
	// No statistics responses: the embedded statistics, as a gateway
	// without its own (the server's default) marks.
	if p.StatsResponses > 0 {
		statsGen := newRand(seed, base+1)
		own := make([][]byte, p.StatsResponses)
		for j := range own {
			own[j] = []byte(detokenize(teacher.generate(statsGen, p.MaxTokens)))
		}
		rep.lex = embedded.WithContextStats(watermark.BuildContextStats(embedded, own))
	}
	rep.marker, rep.ver = watermark.NewMarker(rep.lex, rep.key), watermark.NewVerifier(rep.lex)
	gen := newRand(seed, base+2)
	for j := 0; j < p.Harvest; j++ {
		rep.harvest(detokenize(teacher.generate(gen, p.MaxTokens)))
	}
	return rep
}

// harvest marks t with the replication's marker and keeps it, unmarked
// and marked, counting the words changed.
func (rep *replication) harvest(t string) {
	out, s := rep.marker.Mark([]byte(t))
	rep.words += s.Words
	rep.changed += s.Substituted
	rep.raw = append(rep.raw, tokenize(t))
	rep.marked = append(rep.marked, tokenize(string(out)))
	rep.markedText = append(rep.markedText, string(out))
	rep.rawText = append(rep.rawText, t)
}

// studentOutputs trains a student on d, an n-gram model of the given
// order or, for order 0, the neural one (watermark_neural.go), and samples
// p.Probes outputs from random stream stream.
func studentOutputs(seed, stream uint64, order int, d [][]string, p PowerParams) []string {
	r := newRand(seed, stream)
	out := make([]string, p.Probes)
	if order == 0 {
		stu := trainNeural(r, d, defaultNeural())
		s := stu.scratch()
		for j := range out {
			out[j] = detokenize(stu.generate(r, s, p.MaxTokens))
		}
		return out
	}
	var stu *ngramLM
	switch {
	case order > kneserNey:
		stu = trainNgram(order-kneserNey, d)
		stu.useKneserNey()
	default:
		stu = trainNgram(max(order, -order), d)
		stu.unsmoothed = order < 0
	}
	for j := range out {
		out[j] = detokenize(stu.generate(r, p.MaxTokens))
	}
	return out
}

// studentName names a student order in reports.
func studentName(order int) string {
	if order == 0 {
		return "neural"
	}
	if order < 0 {
		return fmt.Sprintf("order %d, unsmoothed", -order)
	}
	if order > kneserNey {
		return fmt.Sprintf("order %d, Kneser-Ney", order-kneserNey)
	}
	return fmt.Sprintf("order %d", order)
}

// kneserNey + n names the interpolated Kneser-Ney n-gram student (n <= 2;
// ngramLM.useKneserNey) in PowerParams.Orders.
const kneserNey = 10

// PowerBreakdown measures where one replication's evidence comes from: it
// scores the student of the given order with Explain and sums the trials'
// log factors (at the mixture's best cell) by kind, by whether the
// harvest held the context, by the sample's count and by the null
// probability of the key's draw.
func PowerBreakdown(seed uint64, rep int, order int, p PowerParams, real bool) (string, error) {
	corpora, err := loadTextCorpora(p.CorpusDir)
	if err != nil {
		return "", fmt.Errorf("watermark power: %w", err)
	}
	var r replication
	var outs []string
	if real {
		pool, err := realPool(corpora, p)
		if err != nil {
			return "", err
		}
		base := 9000 + 20*uint64(rep)
		r = realReplication(seed, base, p, pool, watermark.DefaultLexicon())
		outs = studentOutputs(seed, base+3+uint64(slices.Index(p.Orders, order)), order, r.marked, p)
	} else {
		base := 5000 + 20*uint64(rep)
		r = powerReplication(seed, base, p, corpusTeacher(corpora), watermark.DefaultLexicon())
		outs = studentOutputs(seed, base+3+uint64(slices.Index(p.Orders, order)), order, r.marked, p)
	}
	sm := r.ver.NewSample()
	for _, t := range outs {
		sm.Add([]byte(t))
	}
	hv := r.ver.NewSample()
	for _, t := range r.markedText {
		hv.Add([]byte(t))
	}
	harvest := hv.GroupCounts()
	res, all := sm.Explain(r.key)
	var gs []watermark.GroupScore
	unscored := map[string][2]int{}
	for _, g := range all {
		if g.LogFactor == nil {
			u := unscored[g.Kind]
			unscored[g.Kind] = [2]int{u[0] + 1, u[1] + g.Count}
			if g.Kind == "off" {
				u := unscored["off "+g.Set]
				unscored["off "+g.Set] = [2]int{u[0] + 1, u[1] + g.Count}
			}
			continue
		}
		gs = append(gs, g)
	}
	cells := len(gs[0].LogFactor)
	tot := make([]float64, cells)
	for _, g := range gs {
		for c, v := range g.LogFactor {
			tot[c] += v
		}
	}
	best := 0
	for c := range tot {
		if tot[c] > tot[best] {
			best = c
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "replication %d, order %d: p %s, log e %.2f; best cell %d log %.2f (cells: %s)\n", rep, order, fmtSci(res.PValue), res.LogEValue, best, tot[best], fmtFloats(tot))
	fmt.Fprintf(&b, "texts %d words %d candidates %d groups %d scored %d\n", res.Texts, res.Words, res.Candidates, sm.Groups(), res.Scored)
	uk := make([]string, 0, len(unscored))
	for k := range unscored {
		uk = append(uk, k)
	}
	slices.Sort(uk)
	for _, k := range uk {
		fmt.Fprintf(&b, "unscored %s: %d groups, %d occurrences\n", k, unscored[k][0], unscored[k][1])
	}
	type agg struct {
		n, occ          int
		log, ideal, llr float64
	}
	tables := map[string]map[string]*agg{}
	add := func(table, row string, g watermark.GroupScore, v, ideal, llr float64) {
		t := tables[table]
		if t == nil {
			t = map[string]*agg{}
			tables[table] = t
		}
		a := t[row]
		if a == nil {
			a = &agg{}
			t[row] = a
		}
		a.n++
		a.occ += g.Count
		a.log += v
		a.ideal += ideal
		a.llr += llr
	}
	npi := len(gs[0].Pi)
	var oracle, seenLR float64
	for _, g := range gs {
		v := g.LogFactor[best]
		pi := g.Pi[best%npi]
		lr := max((math.Exp(v)-(1-pi))/pi, 1e-300)
		seen := 0
		for _, k := range g.Groups {
			seen += harvest[k]
		}
		op := 0.005
		if seen > 0 {
			op = 0.995
			seenLR += math.Log(lr)
		}
		oracle += math.Log(1 - op + op*lr)
	}
	fmt.Fprintf(&b, "oracle (pi from the harvest): log e %.2f; log LR of harvested groups %.2f\n", oracle, seenLR)
	for _, g := range gs {
		v := g.LogFactor[best]
		pi := g.Pi[best%npi]
		llr := math.Log(max((math.Exp(v)-(1-pi))/pi, 1e-300))
		ideal := math.Log(1 / g.Null)
		seen := 0
		for _, k := range g.Groups {
			seen += harvest[k]
		}
		add("kind", g.Kind, g, v, ideal, llr)
		hs := band("harvest", float64(seen), 1, 3, 10)
		add("harvest", hs, g, v, ideal, llr)
		if g.Kind != "pair" {
			m := "unmatched"
			if g.Assigned*2 > g.Count {
				m = "matched"
			}
			add("fidelity", g.Kind+" "+hs+" "+m, g, v, ideal, llr)
		}
		add("count", band("count", float64(g.Count), 2, 10), g, v, ideal, llr)
		add("null", band("null", g.Null, 0.3, 0.6, 0.8), g, v, ideal, llr)
		add("members", fmt.Sprintf("members %d", g.Members), g, v, ideal, llr)
		add("pi", band("pi", pi, 0.2, 0.5, 0.8), g, v, ideal, llr)
		as := "assigned none"
		switch {
		case g.Kind == "pair":
			as = "pair"
		case g.Assigned == g.Count:
			as = "assigned all"
		case g.Assigned > 0:
			as = "assigned some"
		}
		add("assigned", as, g, v, ideal, llr)
	}
	names := make([]string, 0, len(tables))
	for n := range tables {
		names = append(names, n)
	}
	slices.Sort(names)
	fmt.Fprintf(&b, "%-16s %6s %6s %9s %9s %9s\n", "row", "trials", "occ", "log e", "log LR", "log 1/r")
	for _, n := range names {
		rows := make([]string, 0, len(tables[n]))
		for r := range tables[n] {
			rows = append(rows, r)
		}
		slices.Sort(rows)
		for _, r := range rows {
			a := tables[n][r]
			fmt.Fprintf(&b, "%-16s %6d %6d %9.2f %9.2f %9.2f\n", r, a.n, a.occ, a.log, a.llr, a.ideal)
		}
	}
	return b.String(), nil
}

func fmtFloats(xs []float64) string {
	var cells []string
	for _, v := range xs {
		cells = append(cells, fmt.Sprintf("%.1f", v))
	}
	return strings.Join(cells, " ")
}

// band names the half-open interval of the ascending edges that v falls
// in: "name < e0", "name e0-e1", ..., "name >= eN".
func band(name string, v float64, edges ...float64) string {
	if v < edges[0] {
		return fmt.Sprintf("%s < %g", name, edges[0])
	}
	for i := 1; i < len(edges); i++ {
		if v < edges[i] {
			return fmt.Sprintf("%s %g-%g", name, edges[i-1], edges[i])
		}
	}
	return fmt.Sprintf("%s >= %g", name, edges[len(edges)-1])
}

// RunWatermarkPowerReal is the harness on real text: each replication's
// harvest is p.Harvest corpus texts (GSM8K worked solutions and HH-RLHF
// turns, a fresh draw without replacement) marked, as the server marks
// them, with the embedded statistics and a fresh key; the students sample
// up to p.MaxTokens tokens (the texts' own lengths, as a student ends
// where its training texts end). The unmarked student is trained on the
// same texts unmarked. Only the replication table, the calibration and the
// words changed are measured (the statistics are the embedded ones, so the
// visibility check of RunWatermarkPower does not apply), and chrF.
func RunWatermarkPowerReal(ctx context.Context, seed uint64, p PowerParams) (PowerResult, error) {
	corpora, err := loadTextCorpora(p.CorpusDir)
	if err != nil {
		return PowerResult{}, fmt.Errorf("watermark power: %w", err)
	}
	pool, err := realPool(corpora, p)
	if err != nil {
		return PowerResult{}, err
	}
	lex := watermark.DefaultLexicon()
	ver := watermark.NewVerifier(lex)
	decoys := decoyKeys(seed, p.Decoys)
	res := PowerResult{P: map[int][]float64{}, Served: map[int][]float64{}}
	var words, changed int64
	var chrf watermark.ChrF
	for i := 0; i < p.Replications; i++ {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		base := 9000 + 20*uint64(i)
		r := realReplication(seed, base, p, pool, lex)
		words += r.words
		changed += r.changed
		for j, t := range r.markedText {
			chrf.Add([]byte(t), []byte(r.rawText[j]))
		}
		served := sampleOf(ver, r.markedText, nil)
		for oi, o := range p.Orders {
			res.score(o, ver, studentOutputs(seed, base+3+uint64(oi), o, r.marked, p), r.key, served)
		}
		// The unmarked students: the smoothed bigram, and each unsmoothed
		// or Kneser-Ney sampler measured (the first copies its harvest's
		// word pairs more faithfully, so it is where a false positive
		// would show first).
		unOrders := []int{2}
		for _, o := range p.Orders {
			if o < 0 || o > kneserNey {
				unOrders = append(unOrders, o)
			}
		}
		for k, o := range unOrders {
			res.unmarked(ver, studentOutputs(seed, base+9+uint64(k), o, r.raw, p), r.key, decoys, served)
		}
	}
	res.Changed = float64(changed) / float64(max(words, 1))
	res.ChrF = chrf.Score()
	return res, nil
}

// realPool is the real harness's pool of harvestable texts: the first two
// corpora's (GSM8K worked solutions and HH-RLHF turns), or the prose
// paragraphs under p.DomainDirs.
func realPool(corpora []textCorpus, p PowerParams) ([]string, error) {
	var pool []string
	from := "the corpora"
	if len(p.DomainDirs) > 0 {
		paras, err := DomainParagraphs(p.DomainDirs...)
		if err != nil {
			return nil, fmt.Errorf("watermark power: %w", err)
		}
		pool, from = paras, "the domain directories"
	} else {
		for _, c := range corpora[:2] {
			pool = append(pool, c.texts...)
		}
	}
	if p.Harvest > len(pool) {
		return nil, fmt.Errorf("watermark power: %d harvested texts asked, %s hold %d", p.Harvest, from, len(pool))
	}
	return pool, nil
}

// realReplication draws replication base of the real harness: a fresh
// draw of p.Harvest texts from pool without replacement, marked with a
// fresh key and lex's statistics.
func realReplication(seed, base uint64, p PowerParams, pool []string, lex *watermark.Lexicon) replication {
	texts := slices.Clone(pool)
	r := newRand(seed, base)
	r.Shuffle(len(texts), func(a, b int) { texts[a], texts[b] = texts[b], texts[a] })
	texts = texts[:p.Harvest]
	rep := replication{key: labWatermarkKey(seed, base+1), lex: lex}
	rep.marker, rep.ver = watermark.NewMarker(lex, rep.key), watermark.NewVerifier(lex)
	for _, t := range texts {
		rep.harvest(t)
	}
	return rep
}
