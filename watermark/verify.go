package watermark

import "math"

// Verifier tests suspect text for the lexical watermark of a key. It finds
// the candidate positions exactly as the marker does (same scanner, same
// lexicon), so a marked text is scored at the positions that were marked.
type Verifier struct{ lex *Lexicon }

// NewVerifier returns a verifier over lex (the lexicon the text was marked
// with).
func NewVerifier(lex *Lexicon) *Verifier { return &Verifier{lex: lex} }

// Sample accumulates the candidate positions of a body of suspect text (all
// the outputs of one suspect model, or all the texts of one file). Not safe
// for concurrent use; Score may be called for many keys.
//
// Positions are grouped by (set, context): the key's choice is one draw per
// group, so two positions of one group are not independent trials. Each
// group is scored once, on its most frequent member (ties to the member
// listed first in the table), which is a function of the text alone.
type Sample struct {
	st     *Stream
	groups []group
	index  map[string]int32
	texts  int64
	buf    []byte
}

type group struct {
	set    uint16
	ctx    ctxBuf
	counts []uint32
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
		sm.buf = append(sm.buf[:0], byte(c.set>>8), byte(c.set))
		sm.buf = append(sm.buf, c.ctx.bytes()...)
		gi, ok := sm.index[string(sm.buf)]
		if !ok {
			gi = int32(len(sm.groups))
			sm.index[string(sm.buf)] = gi
			sm.groups = append(sm.groups, group{set: c.set, ctx: c.ctx,
				counts: make([]uint32, len(st.lex.sets[c.set].members))})
		}
		sm.groups[gi].counts[c.member]++
	}
}

// Texts, Words and Candidates count what the sample holds; Groups is the
// number of independent trials (distinct set and context pairs).
func (sm *Sample) Texts() int64      { return sm.texts }
func (sm *Sample) Words() int64      { return sm.st.stats.Words }
func (sm *Sample) Candidates() int64 { return sm.st.stats.Candidates }
func (sm *Sample) Groups() int       { return len(sm.groups) }

// Result is the lexical watermark test of one sample against one key.
type Result struct {
	KeyID string `json:"key_id"`
	Texts int64  `json:"texts"`
	Words int64  `json:"words"`
	// Candidates counts positions scored: words of a synonym set at a
	// substitutable position.
	Candidates int64 `json:"candidates"`
	// Scored counts the independent trials: distinct (set, context)
	// groups among the candidates.
	Scored int `json:"scored"`
	// Matches counts groups whose most frequent member is the key's choice.
	Matches int `json:"matches"`
	// Expected and Variance are the mean and variance of Matches under the
	// null hypothesis (text not marked with this key): each group matches
	// with the table probability of its observed member, independently,
	// because the key's choice is a fresh PRF output per group.
	Expected float64 `json:"expected"`
	Variance float64 `json:"variance"`
	// Z is (Matches - Expected) / sqrt(Variance): the statistic.
	Z float64 `json:"z"`
	// PValue is P(Matches >= observed) under the null: the exact
	// Poisson-binomial tail up to 2,000 groups, the normal approximation
	// with continuity correction beyond (Method says which).
	PValue float64 `json:"p_value"`
	Method string  `json:"method"`
	pEqual float64
}

// Method names.
const (
	MethodExact  = "exact Poisson-binomial tail"
	MethodNormal = "normal approximation, continuity-corrected"
)

// Score tests the sample against key k.
func (sm *Sample) Score(k *Key) Result {
	p := prf{block: k.lexBlock, macKey: k.lexMAC}
	var msg [2 + maxCtx]byte
	ps := make([]float64, len(sm.groups))
	matches := 0
	for i := range sm.groups {
		g := &sm.groups[i]
		obs := 0
		for m, c := range g.counts {
			if c > g.counts[obs] {
				obs = m
			}
		}
		ls := &sm.st.lex.sets[g.set]
		if keyedMember(&p, msg[:], g.set, ls, &g.ctx) == obs {
			matches++
		}
		ps[i] = ls.prob(obs)
	}
	t := poissonBinomialTail(ps, matches)
	r := Result{KeyID: k.ID(), Texts: sm.texts, Words: sm.Words(), Candidates: sm.Candidates(),
		Scored: len(ps), Matches: matches, Expected: t.Mean, Variance: t.Variance, Z: t.Z,
		PValue: t.PValue, Method: MethodNormal, pEqual: t.PEqual}
	if t.Exact {
		r.Method = MethodExact
	}
	return r
}

// Randomized is the randomised p-value P(X > k) + u P(X = k) for u uniform
// in [0, 1): exactly uniform under the null, where PValue (P(X >= k)) is
// conservative because the count is discrete. Calibration checks use it.
func (r Result) Randomized(u float64) float64 {
	if r.Method == MethodExact {
		return r.PValue - (1-u)*r.pEqual
	}
	sd := math.Sqrt(r.Variance)
	if sd == 0 {
		return u
	}
	return normalUpper((float64(r.Matches) + 0.5 - u - r.Expected) / sd)
}
