package watermark

// GroupScore is one trial of the lexical test as Sample.Explain reports
// it: a (set, slot, context) group, or a pair of paired contexts scored as
// one trial. It is for measuring where a test's evidence comes from (the
// lab's power harness), not for deciding anything.
type GroupScore struct {
	// Set names the unit by its first member's base form; Members is its
	// number of members.
	Set     string
	Members int
	// Kind is how the key's assignment treats the context: "tail" (a
	// context the statistics do not list: a hashed draw), "whole" (a
	// listed context that always writes its member), "tilted" (a listed
	// context that writes its member at a share of its occurrences) or
	// "pair" (paired heavy contexts); "off" (a unit left unmarked) or
	// "free" (a listed context left unmarked) and "forced" (a draw of one
	// possible member) are groups the test does not score (no LogFactor).
	Kind string
	// Null is the probability, under the null, of the key's actual draw.
	Null float64
	// Count is the sample's occurrences in the group; Assigned those of
	// the key's member (0 for a pair).
	Count, Assigned int
	// StatsShare is the context's share of its unit's occurrences in the
	// statistics (0 for the tail).
	StatsShare float64
	// Groups are the group keys (GroupKeys of another sample tell whether
	// that sample held them).
	Groups []string
	// Pi is the chance the student learned the context, per harvest size
	// of the test's mixture, and LogFactor the group's log factor per cell
	// of the mixture (fidelity-major).
	Pi, LogFactor []float64
}

// Explain scores the sample against k as Score does and lists every
// trial's contribution.
func (sm *Sample) Explain(k *Key) (Result, []GroupScore) {
	lex := sm.st.lex
	plans := lex.plans(k, true)
	var rec []GroupScore
	r := sm.score(k, plans, &rec)
	return r, rec
}

// GroupCounts maps every group key of the sample to its occurrences.
func (sm *Sample) GroupCounts() map[string]int {
	out := make(map[string]int, len(sm.groups))
	for i := range sm.groups {
		n := 0
		for _, c := range sm.groups[i].counts {
			n += int(c)
		}
		out[string(sm.groupKey(&sm.groups[i]))] = n
	}
	return out
}

func (sm *Sample) groupKey(g *group) []byte {
	return appendGroupKey(nil, g.set, g.slot, g.ctx.bytes())
}

func (sm *Sample) explainGroup(g *group, u uint32, j int32, m int, null float64, plan *setPlan, cells int) GroupScore {
	lex := sm.st.lex
	gs := GroupScore{Set: lex.sets[g.set].members[0].forms[slotBase], Members: len(g.counts), Kind: "tail", Null: null,
		Groups: []string{string(sm.groupKey(g))}, LogFactor: make([]float64, cells)}
	for _, c := range g.counts {
		gs.Count += int(c)
	}
	gs.Assigned = int(g.counts[m])
	if j >= 0 {
		ss := lex.stats(u)
		gs.StatsShare = float64(ss.ctxs[j].count) / float64(ss.n)
		gs.Kind = "whole"
		if plan.thr[j] != full {
			gs.Kind = "tilted"
		}
	}
	return gs
}

func (sm *Sample) unscored(g *group, u uint32, plans []setPlan, kind string) GroupScore {
	lex := sm.st.lex
	gs := GroupScore{Set: lex.sets[g.set].members[0].forms[slotBase], Members: len(g.counts), Kind: kind,
		Groups: []string{string(sm.groupKey(g))}}
	for _, c := range g.counts {
		gs.Count += int(c)
	}
	if kind == "off" && !plans[u].off {
		gs.Kind = "free"
	}
	if ss := lex.stats(u); ss != nil {
		if j, ok := ss.index[string(g.ctx.bytes())]; ok {
			gs.StatsShare = float64(ss.ctxs[j].count) / float64(ss.n)
		}
	}
	return gs
}
