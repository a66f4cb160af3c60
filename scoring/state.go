package scoring

// Where cross-account state lives. The engine's logic decides what a
// request reports to the state shared between accounts and reads the
// counts back through aggregates; the local implementation keeps the
// sketches in process. Both sketches are mergeable: the template sketch's
// cells and the cohort counts are forward-decayed sums (merge: add, after
// scaling to a common landmark), the cohort languages are bitsets (merge:
// OR). A replicated implementation can therefore batch the reports of many
// requests into one round trip and read merged counts that are at most one
// batch old, while sessions stay in the local ristretto cache (stateTier)
// as the hot store.
//
// Per-session state (session.go) is likewise built from mergeable parts:
// forward-decayed counters, bitsets (language masks, the hour ring, the
// shingle filters) and monotone fields.
type aggregates interface {
	// observeTemplates applies the reports rep[i] (repSender, repConv) for
	// the template elements hs[i] at time t and writes every element's
	// decayed counts, after the reports, to out[i].
	observeTemplates(t int64, hs []uint64, rep []uint8, out []templateCount)
	// observeCohort counts a fresh session into class when report is set
	// and returns the class's counts.
	observeCohort(t int64, class uint32, report bool, langs uint32) cohortCount
	bytes() int
	// refused counts template reports dropped because the sketch was full.
	refused() int64
}

// localAggregates keeps the sketches in process.
type localAggregates struct {
	tmpl   *templateSketch
	cohort *cohortSketch
}

func newLocalAggregates(window int64, capacity int) *localAggregates {
	return &localAggregates{tmpl: newTemplateSketch(window, capacity), cohort: newCohortSketch()}
}

func (a *localAggregates) observeTemplates(t int64, hs []uint64, rep []uint8, out []templateCount) {
	a.tmpl.observe(t, hs, rep, out)
}

func (a *localAggregates) observeCohort(t int64, class uint32, report bool, langs uint32) cohortCount {
	return a.cohort.observe(t, class, report, langs)
}

func (a *localAggregates) bytes() int { return a.tmpl.bytes() + a.cohort.bytes() }

func (a *localAggregates) refused() int64 {
	a.tmpl.mu.Lock()
	defer a.tmpl.mu.Unlock()
	return a.tmpl.full
}
