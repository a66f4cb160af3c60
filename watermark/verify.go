package watermark

import (
	"cmp"
	"math"
	"math/bits"
	"slices"
)

// Verifier tests suspect text for the lexical watermark of a key. It finds
// the candidate positions exactly as the marker does (same scanner, same
// lexicon and context statistics), so a marked text is scored at the
// positions that were marked.
type Verifier struct{ lex *Lexicon }

// NewVerifier returns a verifier over lex (the lexicon the text was marked
// with, with the same context statistics).
func NewVerifier(lex *Lexicon) *Verifier { return &Verifier{lex: lex} }

// Sample accumulates the candidate positions of a body of suspect text (all
// the outputs of one suspect model, or all the texts of one file). Not safe
// for concurrent use; Score may be called for many keys.
//
// Positions are grouped by (set, slot, context): the key's choice is one
// draw per group, so two positions of one group are not independent
// trials. Each group is scored once, on the likelihood of its member
// counts under each member the key could have drawn (see Score).
type Sample struct {
	st     *Stream
	groups []group
	index  map[string]int32
	texts  int64
	buf    []byte
	// learned, once served text or records are given (UseServed,
	// UseServedRecord), says per group whether they held it; nil without.
	learned []bool
	held    int
}

// UseServed tells the test which text the suspect could have learned
// from: the responses the suspected sessions were served, as the
// operator's own logs hold them (marked or not: a group's key is the
// same either way, see below), or as served records (UseServedRecord).
// A group that text held is one the student saw and weighs fully; a
// group it did not hold is one a smoothed student can only have written
// from its backoff, at the natural shares, and weighs little. Without it
// the test guesses that chance from the statistics (harvestSizes), and
// pays for the guess on every group a smoothed student invents.
//
// The weight must not depend on the key for the test to stay valid, and
// it does not: substitution keeps a word in its set and form slot, and a
// context names a set member by its set (pushToken, endWord), so marked
// text and its original hold the same groups whatever the key drew
// (TestServedGroupsKeyFree). Call it after the last Add; served is read,
// not kept.
func (sm *Sample) UseServed(served *Sample) {
	sm.initServed()
	for i := range sm.groups {
		g := &sm.groups[i]
		sm.buf = appendGroupKey(sm.buf[:0], g.set, g.slot, g.ctx.bytes())
		if _, ok := served.index[string(sm.buf)]; ok {
			sm.markServed(i)
		}
	}
}

func (sm *Sample) initServed() {
	if sm.learned == nil {
		sm.learned = make([]bool, len(sm.groups))
	}
}

func (sm *Sample) markServed(i int) {
	if !sm.learned[i] {
		sm.learned[i] = true
		sm.held++
	}
}

type group struct {
	set    uint16
	slot   uint8
	ctx    ctxBuf
	counts []uint32
}

// Served weights: a group the served text held, and one it did not.
const (
	servedPi   = 0.995
	unservedPi = 0.005
)

// learnedPi is the chance the student learned group i: from the served
// text when there is one (UseServed), else prior.
func (sm *Sample) learnedPi(i int, prior float64) float64 {
	switch {
	case sm.learned == nil:
		return prior
	case sm.learned[i]:
		return servedPi
	}
	return unservedPi
}

// NewSample returns an empty sample.
func (v *Verifier) NewSample() *Sample {
	st := &Stream{lex: v.lex, observe: true}
	st.Reset()
	return &Sample{st: st, index: map[string]int32{}}
}

// Add scans one text (one response; contexts do not run across texts).
func (sm *Sample) Add(text []byte) {
	st := sm.st
	words, cands := st.stats.Words, st.stats.Candidates
	st.Reset()
	st.stats.Words, st.stats.Candidates = words, cands
	st.Write(nil, text)
	st.Flush(nil)
	sm.texts++
	for _, c := range st.cands {
		sm.buf = appendGroupKey(sm.buf[:0], c.set, c.slot, c.ctx.bytes())
		gi, ok := sm.index[string(sm.buf)]
		if !ok {
			gi = int32(len(sm.groups))
			sm.index[string(sm.buf)] = gi
			sm.groups = append(sm.groups, group{set: c.set, slot: c.slot, ctx: c.ctx,
				counts: make([]uint32, len(st.lex.sets[c.set].members))})
			if sm.learned != nil {
				// Added after the served weights: not known to be served.
				sm.learned = append(sm.learned, false)
			}
		}
		sm.groups[gi].counts[c.member]++
	}
}

// Texts, Words and Candidates count what the sample holds; Groups is the
// number of distinct set and context pairs.
func (sm *Sample) Texts() int64      { return sm.texts }
func (sm *Sample) Words() int64      { return sm.st.stats.Words }
func (sm *Sample) Candidates() int64 { return sm.st.stats.Candidates }
func (sm *Sample) Groups() int       { return len(sm.groups) }

// Result is the lexical watermark test of one sample against one key.
type Result struct {
	KeyID string `json:"key_id"`
	Texts int64  `json:"texts"`
	Words int64  `json:"words"`
	// Candidates counts positions seen: words of a synonym set at a
	// substitutable position.
	Candidates int64 `json:"candidates"`
	// Scored counts the trials: distinct (set, context) groups among the
	// candidates whose context the key marks and whose member the key
	// drew among two or more.
	Scored int `json:"scored"`
	// Matches counts scored groups whose most frequent member is the key's
	// choice.
	Matches int `json:"matches"`
	// Expected and Variance are the mean and variance of Matches under the
	// null hypothesis (text not marked with this key), given the key's
	// draw probabilities; Z is (Matches - Expected) / sqrt(Variance), a
	// descriptive statistic.
	Expected float64 `json:"expected"`
	Variance float64 `json:"variance"`
	Z        float64 `json:"z"`
	// LogEValue is the natural log of the test martingale at the end of
	// the sample (see Score) and PValue min(1, exp(-LogEValue)): P(PValue
	// <= a) <= a for every a under the null, by Ville's inequality,
	// whatever the dependence between the key's draws.
	LogEValue float64 `json:"log_e_value"`
	PValue    float64 `json:"p_value"`
	Method    string  `json:"method"`
	// ServedGroups is the number of the sample's groups the served text or
	// records held (Sample.UseServed); 0 without them.
	ServedGroups int `json:"served_groups,omitempty"`
}

// MethodEValue names the lexical test.
const MethodEValue = "likelihood-ratio mixture test martingale over member counts (conservative)"

// fidelities are the alternatives the lexical test mixes over: a student
// writes, in a marked context, from the context's marked distribution
// with weight kappa and from the set's natural shares otherwise (a
// smoothed n-gram model backs off to shorter contexts; Chen and Goodman
// 1998). An even mixture over a grid is as valid as any single one and
// loses at most log(len) nats of evidence against the best of them.
func fidelities() [3]float64 { return [3]float64{0.7, 0.9, 0.97} }

// harvestSizes are the numbers of occurrences of a set in the harvest the
// test mixes over. A student learned a group's context only if the harvest
// held it: a context that makes up a share f of the set's occurrences in
// the statistics was there with probability about pi = 1 - exp(-H f)
// (Poisson), and a group the student never saw it writes from its backoff,
// which carries no evidence. So each group's factor is (1 - pi) + pi LR:
// heavy contexts weigh fully, rare and unseen ones (the hashed tail, taken
// as a tenth of an occurrence) little. pi depends on the statistics and the
// text only, never on the key, so the factor keeps mean one. With the
// served text (Sample.UseServed) pi is known instead of guessed: high for
// a group that text held, low for one it did not, on every cell.
//
// The tenth is where the power is flat (lab/watermark_power.go, real-text
// harness, 48 replications, bigram students' mean log(1/p)): a tail group
// taken as 0.001, 0.01, 0.03, 0.1, 0.3, 1 or 3 occurrences gives 11.7,
// 13.9, 14.0, 14.0, 13.5, 12.6 and 11.9 nats; trigram students 15.1 to
// 21.8, best from 0.03 to 1.
func harvestSizes() [5]float64 { return [5]float64{30, 100, 300, 1000, 3000} }

// Score tests the sample against key k.
//
// Under the null hypothesis the text is independent of the key, so, per
// set, the key's draws over its contexts (in the fixed assignment order of
// contexts.go, then the hashed tail) are the only randomness: at context j
// the key draws member m with probability r_j(m), a function of the key's
// earlier draws of that set, which Score replays. For a group (the
// sample's occurrences in context j, with member counts n) and a fidelity
// kappa, let L(m) be the likelihood of n if the key had drawn m: the
// student writes member i with probability kappa q_m(i) + (1 - kappa)
// b(i), q_m the context's marked distribution under m (its natural shares
// tilted towards m by the plan's lambda; all m when lambda is 1) and b the
// set's natural shares. The group's likelihood ratio LR is L(m_j) / sum_m
// r_j(m) L(m), m_j the key's actual draw, and its factor (1 - pi) + pi LR,
// pi the chance the student learned the context (harvestSizes): the mean
// over the draw is one whatever n and pi are, so, given the earlier
// draws, the running product over groups is a
// non-negative martingale with mean 1 (a Bayes factor with the draw
// probabilities as prior: Shafer and Vovk; Ramdas et al., "Game-theoretic
// statistics and safe anytime-valid inference", Statistical Science 2023).
// The average over the (kappa, H) grid is one too, so P(EValue >= 1/a) <= a
// (Markov / Ville): PValue is conservative by construction, with no
// independence or normal approximation assumed. Every occurrence counts,
// not only a group's most frequent member, which is what makes the heavy
// contexts a student repeats most (and the tilted ones) evidence. Groups
// in contexts the key leaves unmarked, and groups whose draw had one
// possible member, carry no evidence and are not scored.
func (sm *Sample) Score(k *Key) Result {
	// Only the units the sample holds need the key's assignment.
	lex := sm.st.lex
	p := prf{block: k.lexBlock, macKey: k.lexMAC}
	var msg [prfMsgLen]byte
	plans := make([]setPlan, len(lex.sets)*numSlots)
	built := make([]bool, len(plans))
	for i := range sm.groups {
		g := &sm.groups[i]
		u := unitOf(g.set, g.slot)
		if !built[u] {
			plans[u] = buildPlan(&p, msg[:], u, &lex.sets[g.set], lex.ctx, true)
			built[u] = true
		}
	}
	return sm.score(k, plans, nil)
}

func (sm *Sample) score(k *Key, plans []setPlan, rec *[]GroupScore) Result {
	lex := sm.st.lex
	p := prf{block: k.lexBlock, macKey: k.lexMAC}
	var msg [prfMsgLen]byte
	kap, hs := fidelities(), harvestSizes()
	var logW [len(kap) * len(hs)]float64
	var pis [len(hs)]float64
	r := Result{KeyID: k.ID(), Texts: sm.texts, Words: sm.Words(), Candidates: sm.Candidates(), Method: MethodEValue,
		ServedGroups: sm.held}
	var (
		rs, base, nat, ll []float64
		logR              []float64
	)
	pairs := map[pairKey][]int32{}
	for i := range sm.groups {
		g := &sm.groups[i]
		nm := len(g.counts)
		obs := 0
		for m, c := range g.counts {
			if c > g.counts[obs] {
				obs = m
			}
		}
		u := unitOf(g.set, g.slot)
		if ss := lex.stats(u); ss != nil && plans[u].partner != nil {
			if j, ok := ss.index[string(g.ctx.bytes())]; ok && plans[u].partner[j] >= 0 {
				pairs[pairKey{u, min(j, plans[u].partner[j])}] = append(pairs[pairKey{u, min(j, plans[u].partner[j])}], int32(i))
				continue
			}
		}
		m, j := lex.choose(&p, msg[:], plans, u, g.ctx.bytes())
		if m < 0 {
			if rec != nil {
				*rec = append(*rec, sm.unscored(g, u, plans, "off"))
			}
			continue
		}
		plan := &plans[u]
		rs = rs[:0]
		possible := 0
		for i := 0; i < nm; i++ {
			var ri float64
			if j >= 0 {
				ri = plan.prob[int(j)*nm+i]
			} else {
				ri = plan.tailProb(i)
			}
			if ri > 0 {
				possible++
			}
			rs = append(rs, ri)
		}
		if possible < 2 {
			if rec != nil {
				*rec = append(*rec, sm.unscored(g, u, plans, "forced"))
			}
			continue
		}
		pj := rs[obs]
		var gs GroupScore
		if rec != nil {
			gs = sm.explainGroup(g, u, j, m, rs[m], plan, len(kap)*len(hs))
		}
		r.Scored++
		r.Expected += pj
		r.Variance += pj * (1 - pj)
		if m == obs {
			r.Matches++
		}
		// b: the set's natural shares (half an occurrence of prior each,
		// so a member the statistics never saw is possible); nat: the
		// context's natural shares.
		ss := lex.stats(u)
		base, nat = base[:0], nat[:0]
		var tot float64
		for i := 0; i < nm; i++ {
			v := 0.5
			if ss != nil {
				v += float64(ss.members[i])
			} else {
				v += float64(lex.sets[g.set].members[i].weight)
			}
			base = append(base, v)
			tot += v
			nat = append(nat, 0)
		}
		for i := range base {
			base[i] /= tot
		}
		share := 0.1
		if j >= 0 {
			c := &ss.ctxs[j]
			for i := range nat {
				nat[i] = float64(c.members[i]) / float64(c.count)
			}
			share = float64(c.count)
		}
		for hi, h := range hs {
			pis[hi] = 0.5
			if ss != nil && ss.n > 0 {
				pis[hi] = min(0.995, max(0.005, 1-math.Exp(-h*share/float64(ss.n))))
			}
			pis[hi] = sm.learnedPi(i, pis[hi])
		}
		logR = logR[:0]
		for i := 0; i < nm; i++ {
			logR = append(logR, math.Log(rs[i]))
		}
		for ki, kp := range kap {
			// ll[d]: log likelihood of the counts had the key drawn d.
			ll = ll[:0]
			for d := 0; d < nm; d++ {
				if rs[d] == 0 {
					ll = append(ll, math.Inf(-1))
					continue
				}
				lam := 1.0
				if j >= 0 {
					lam = plan.lam[int(j)*nm+d]
				}
				var v float64
				for i, n := range g.counts {
					if n == 0 {
						continue
					}
					q := (1 - lam) * nat[i]
					if i == d {
						q += lam
					}
					v += float64(n) * math.Log(kp*q+(1-kp)*base[i])
				}
				ll = append(ll, v)
			}
			mx := math.Inf(-1)
			for d := range ll {
				mx = math.Max(mx, ll[d]+logR[d])
			}
			var s float64
			for d := range ll {
				s += math.Exp(ll[d] + logR[d] - mx)
			}
			mixFactors(logW[:], ki, pis[:], math.Exp(ll[m]-(mx+math.Log(s))), &gs, rec != nil)
		}
		if rec != nil {
			gs.Pi = append(gs.Pi, pis[:]...)
			*rec = append(*rec, gs)
		}
	}
	sm.scorePairs(&r, &p, msg[:], plans, pairs, logW[:], rec)
	if r.Variance > 0 {
		r.Z = (float64(r.Matches) - r.Expected) / math.Sqrt(r.Variance)
	}
	r.LogEValue = logMeanExp(logW[:])
	r.PValue = math.Min(1, math.Exp(-r.LogEValue))
	return r
}

// logMeanExp is log(mean(exp(x))), without overflow.
func logMeanExp(x []float64) float64 {
	mx := math.Inf(-1)
	for _, v := range x {
		mx = math.Max(mx, v)
	}
	var s float64
	for _, v := range x {
		s += math.Exp(v - mx)
	}
	return mx + math.Log(s/float64(len(x)))
}

// pairKey names a pair of contexts: its unit and its first (heavier) row.
type pairKey struct {
	u   uint32
	row int32
}

// baseShares is the set's natural member shares the student backs off to
// (half an occurrence of prior each, so a member the statistics never saw
// is possible).
func baseShares(dst []float64, lex *Lexicon, set uint16, ss *setStats) []float64 {
	dst = dst[:0]
	var tot float64
	for i := range lex.sets[set].members {
		v := 0.5
		if ss != nil {
			v += float64(ss.members[i])
		} else {
			v += float64(lex.sets[set].members[i].weight)
		}
		dst = append(dst, v)
		tot += v
	}
	for i := range dst {
		dst[i] /= tot
	}
	return dst
}

// scorePairs adds the factors of the paired contexts (contexts.go,
// pairPlan) to logW. The key draws one of 2 * members equally likely
// outcomes per pair, and both rows' counts depend on it, so a pair is one
// trial: its likelihood ratio is L(d*) / mean_d L(d), L the likelihood of
// the counts of the pair's rows the sample holds (one or both) under draw
// d, d* the key's draw, and its factor (1 - pi) + pi LR, pi the smaller of
// the rows' chances that the student learned them (Score). The mean over
// the draw is one, as for a single group.
func (sm *Sample) scorePairs(r *Result, p *prf, msg []byte, plans []setPlan, pairs map[pairKey][]int32, logW []float64, rec *[]GroupScore) {
	if len(pairs) == 0 {
		return
	}
	lex := sm.st.lex
	keys := make([]pairKey, 0, len(pairs))
	for k := range pairs {
		keys = append(keys, k)
	}
	// The product does not depend on the order, but the float sum does:
	// a fixed order keeps the result reproducible.
	slices.SortFunc(keys, func(a, b pairKey) int {
		if a.u != b.u {
			return cmp.Compare(a.u, b.u)
		}
		return cmp.Compare(a.row, b.row)
	})
	kap, hs := fidelities(), harvestSizes()
	var base, ll []float64
	var pis [len(hs)]float64
	for _, k := range keys {
		ss := lex.stats(k.u)
		plan := &plans[k.u]
		set := uint16(k.u / numSlots)
		nm := len(lex.sets[set].members)
		draws := 2 * nm
		hi, _ := bits.Mul64(ctxPRFString(p, msg, k.u, ss.ctxs[k.row].key), uint64(draws))
		actual := int(hi)
		base = baseShares(base, lex, set, ss)
		var gs GroupScore
		if rec != nil {
			gs = GroupScore{Set: lex.sets[set].members[0].forms[slotBase], Members: nm, Kind: "pair", Null: 1 / float64(draws),
				LogFactor: make([]float64, len(kap)*len(hs))}
		}
		for hi := range pis {
			pis[hi] = 0.995
		}
		for _, gi := range pairs[k] {
			g := &sm.groups[gi]
			j := ss.index[string(g.ctx.bytes())]
			for hi, h := range hs {
				pis[hi] = min(pis[hi], sm.learnedPi(int(gi), max(0.005, 1-math.Exp(-h*float64(ss.ctxs[j].count)/float64(ss.n)))))
			}
			if rec != nil {
				gs.Groups = append(gs.Groups, string(sm.groupKey(g)))
				for _, c := range g.counts {
					gs.Count += int(c)
				}
			}
			r.Scored++
			obs := 0
			for m, c := range g.counts {
				if c > g.counts[obs] {
					obs = m
				}
			}
			// Descriptive: the draw's member is the group's most
			// frequent one on a toward row, not on an away row.
			m := actual / 2
			toward := (actual%2 == 0) == (j == k.row)
			pj := 1 / float64(nm)
			if !toward {
				pj = 1 - pj
			}
			r.Expected += pj
			r.Variance += pj * (1 - pj)
			if (obs == m) == toward {
				r.Matches++
			}
		}
		for ki, kp := range kap {
			ll = ll[:0]
			for d := 0; d < draws; d++ {
				var v float64
				for _, gi := range pairs[k] {
					g := &sm.groups[gi]
					j := ss.index[string(g.ctx.bytes())]
					q := plan.pairQ[(int(j)*draws+d)*nm:][:nm]
					for i, n := range g.counts {
						if n > 0 {
							v += float64(n) * math.Log(kp*max(q[i], 0)+(1-kp)*base[i])
						}
					}
				}
				ll = append(ll, v)
			}
			mixFactors(logW, ki, pis[:], math.Exp(ll[actual]-logMeanExp(ll)), &gs, rec != nil)
		}
		if rec != nil {
			gs.Pi = append(gs.Pi, pis[:]...)
			*rec = append(*rec, gs)
		}
	}
}

// mixFactors multiplies each grid cell (ki, pi) of the martingale by the
// group's factor (1 - pi) + pi*lr: with chance pi the student learned the
// group's context (likelihood ratio lr), else the group says nothing.
// With record, the factors are kept in gs for Sample.Explain.
func mixFactors(logW []float64, ki int, pis []float64, lr float64, gs *GroupScore, record bool) {
	for pi, pv := range pis {
		f := math.Log((1 - pv) + pv*lr)
		logW[ki*len(pis)+pi] += f
		if record {
			gs.LogFactor[ki*len(pis)+pi] = f
		}
	}
}
