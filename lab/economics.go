package lab

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/internal/traffic"
)

// The economics experiment runs the lab's attacks end to end against the
// whole server — scoring and rewriting together, under several secrets —
// with attacker strategies that rotate identities, paraphrase, pace
// themselves like people, hide behind cover traffic and age accounts, and
// reports what reaching the raw API's fidelity costs each of them, beside
// what the server costs honest users.

// Attack names of the economics experiment.
const (
	AttackTramer  = "equation solving"
	AttackCarlini = "hidden-size recovery"
	AttackDistill = "soft-label distillation"
)

// EconomicsParams size the end-to-end harness.
type EconomicsParams struct {
	// Config is the server configuration attacked; each run sets its own
	// scoring.secret. nil means the embedded default.
	Config    *config.Config
	CorpusDir string
	// Secrets is the number of server secrets every strategy runs under.
	Secrets int
	// Strategies are the attacker strategies; empty means Strategies().
	Strategies []Strategy
	// Attacks restricts the attacks run (AttackTramer, ...); empty: all.
	Attacks []string
	// Setups are the attacked configurations: model sizes, record
	// distributions, wordings. The first is the one reported in the
	// headline; a held-out one is run the same way and reported beside it.
	Setups []EconSetup
	// Honest sizes the honest-user measurement.
	Honest HonestParams
}

// EconSetup is one attacked configuration of the three target models.
type EconSetup struct {
	Name string
	// HeldOut marks a configuration never used to choose defaults.
	HeldOut bool
	Seed    uint64
	// Equation solving: a logistic regression on Dim features; the budget
	// is BudgetX times d+1 (the raw attack's cost).
	TramerDim, TramerBudgetX int
	// Uniform draws records from U(-2, 2) instead of N(0, 1).
	Uniform bool
	// Hidden-size recovery: h, V, bisection steps; budget BudgetX times
	// the raw attack's cost.
	CarliniHidden, CarliniVocab, CarliniSteps, CarliniBudgetX int
	// Distillation: teacher sizes, the raw attack's budget (whose fidelity
	// is the target) and the budget multiple, student epochs.
	DistillDim, DistillHidden, DistillVocab, DistillBase, DistillBudgetX, DistillEpochs int
	HeldOutRecords                                                                      int
}

// DefaultSetups returns the tuned configuration and the held-out one.
func DefaultSetups(scale float64) []EconSetup {
	sc := func(full, least int) int { return max(least, int(float64(full)*scale+0.5)) }
	return []EconSetup{
		{Name: "tuned", Seed: 0,
			TramerDim: 20, TramerBudgetX: 64,
			CarliniHidden: sc(16, 8), CarliniVocab: sc(128, 48), CarliniSteps: 10, CarliniBudgetX: 32,
			DistillDim: 16, DistillHidden: 32, DistillVocab: 16, DistillBase: sc(100, 60), DistillBudgetX: 32, DistillEpochs: sc(150, 60),
			HeldOutRecords: sc(20000, 2000)},
		{Name: "held out", HeldOut: true, Seed: 0x4e1d,
			TramerDim: 14, TramerBudgetX: 64, Uniform: true,
			CarliniHidden: sc(24, 10), CarliniVocab: sc(160, 64), CarliniSteps: 9, CarliniBudgetX: 16,
			DistillDim: 12, DistillHidden: 24, DistillVocab: 12, DistillBase: sc(80, 50), DistillBudgetX: 32, DistillEpochs: sc(150, 60),
			HeldOutRecords: sc(20000, 2000)},
	}
}

// econRun is one attack under one strategy and one secret.
type econRun struct {
	attack   string
	strategy int // -1: the raw API
	secret   int
	curve    *econCurve
	final    econStats
}

// econAttackResult gathers an attack's runs for one setup.
type econAttackResult struct {
	attack  string
	setup   EconSetup
	raw     *econRun
	base    int     // the raw attack's cost: queries to its fidelity
	target  float64 // the fidelity to reach
	runs    [][]*econRun
	budget  int
	targetS string
}

// RunEconomics runs the harness.
func RunEconomics(ctx context.Context, pl *pool, seed uint64, p EconomicsParams, prog *Task) (Section, error) {
	if p.Config == nil {
		p.Config = config.Default()
	}
	if p.Secrets <= 0 {
		p.Secrets = 3
	}
	if len(p.Strategies) == 0 {
		p.Strategies = Strategies()
	}
	if len(p.Attacks) == 0 {
		p.Attacks = []string{AttackTramer, AttackCarlini, AttackDistill}
	}
	if len(p.Setups) == 0 {
		p.Setups = DefaultSetups(1)
	}
	// Cover and warm-up chats, and the honest traffic, come from the
	// prompt corpora; strategies without them do not need it.
	var cover *coverSource
	if p.Honest.Scale > 0 || slices.ContainsFunc(p.Strategies, func(s Strategy) bool { return s.Cover > 0 || s.Aged }) {
		var err error
		if cover, err = loadCover(p.CorpusDir); err != nil {
			return Section{}, err
		}
	}
	warm := warmupOf(p.Config)

	// The raw runs first: their cost sets each attack's grid and target.
	var results []*econAttackResult
	var raws []func() error
	for si, su := range p.Setups {
		for _, a := range p.Attacks {
			res := &econAttackResult{attack: a, setup: su}
			results = append(results, res)
			raws = append(raws, func() error {
				run, err := econRunOne(ctx, seed, su, si, a, nil, Strategy{Name: "raw", Gap: 2 * time.Second}, -1, 0, nil, cover, warm, nil)
				if err != nil {
					return fmt.Errorf("%s, %s, raw API: %w", su.Name, a, err)
				}
				res.raw = run
				prog.Add(1)
				return nil
			})
		}
	}
	prog.Grow(len(results) * (1 + len(p.Strategies)*p.Secrets))
	if err := pl.all(ctx, raws...); err != nil {
		return Section{}, err
	}
	var jobs []func() error
	for _, res := range results {
		res.base, res.target, res.targetS = rawTarget(res)
		res.budget = budgetOf(res.setup, res.attack, res.base)
		res.runs = make([][]*econRun, len(p.Strategies))
		grid := checkpointGrid(res.base, res.budget)
		for sti, st := range p.Strategies {
			res.runs[sti] = make([]*econRun, p.Secrets)
			for k := 0; k < p.Secrets; k++ {
				cfg := *p.Config
				cfg.Scoring.Secret = labSecret(seed, k)
				jobs = append(jobs, func() error {
					run, err := econRunOne(ctx, seed, res.setup, 0, res.attack, &cfg, st, sti, k, grid, cover, warm, res)
					if err != nil {
						return fmt.Errorf("%s, %s, %s, secret %d: %w", res.setup.Name, res.attack, st.Name, k, err)
					}
					res.runs[sti][k] = run
					prog.Add(1)
					return nil
				})
			}
		}
	}
	if err := pl.all(ctx, jobs...); err != nil {
		return Section{}, err
	}
	honest, err := runHonest(ctx, pl, seed, p, cover, prog)
	if err != nil {
		return Section{}, err
	}
	return economicsSection(seed, p, results, honest, warm), nil
}

// warmupOf is the standing the configuration grants new identities, as an
// attacker reads it from the public configuration.
func warmupOf(cfg *config.Config) warmup {
	pr := cfg.Scoring.Standing
	if !pr.Enabled {
		return warmup{}
	}
	return warmup{requests: pr.Requests, age: pr.Age}
}

func loadCover(dir string) (*coverSource, error) {
	c, err := traffic.LoadCorpus(dir)
	if err != nil {
		return nil, fmt.Errorf("cover traffic: %w", err)
	}
	return &coverSource{dialogs: c.Dialogs}, nil
}

// rawTarget is the fidelity the raw attack reaches and what it costs:
// equation solving, 99.9% agreement (the raw attack is exact from d+1
// queries); hidden-size recovery, ĥ = h; distillation, the raw student's
// agreement after the base budget.
func rawTarget(res *econAttackResult) (base int, target float64, desc string) {
	cv := res.raw.curve
	switch res.attack {
	case AttackTramer:
		target = 0.999
		desc = "99.9% held-out agreement"
	case AttackCarlini:
		target = 1
		desc = "ĥ = h"
	default:
		target = cv.fidelity[len(cv.fidelity)-1]
		desc = fmt.Sprintf("%s top-1 agreement (the raw student's after %d queries)", fmtPct(target), cv.checkpoints[len(cv.checkpoints)-1])
	}
	i := cv.reach(target)
	if i < 0 {
		// The raw attack always reaches its own target; a miss is a
		// broken setup, reported as such by the caller's table.
		return cv.checkpoints[len(cv.checkpoints)-1], target, desc
	}
	return cv.checkpoints[i], target, desc
}

func budgetOf(su EconSetup, attack string, base int) int {
	switch attack {
	case AttackTramer:
		return base * su.TramerBudgetX
	case AttackCarlini:
		return base * su.CarliniBudgetX
	}
	return base * su.DistillBudgetX
}

// econRunOne runs one attack under one strategy on a fresh server. cfg nil
// is the raw API (a no-op processor). The raw run measures its own curve
// on a fine grid to find the raw cost.
func econRunOne(ctx context.Context, seed uint64, su EconSetup, _ int, attack string, cfg *config.Config, st Strategy, sti, secret int,
	grid []int, cover *coverSource, warm warmup, res *econAttackResult) (*econRun, error) {
	aseed := seed ^ su.Seed
	start := traffic.DefaultStart()
	var m Model
	var lr *logisticModel
	var hm *hiddenModel
	var mlp *mlpModel
	switch attack {
	case AttackTramer:
		lr = newLogistic(aseed, su.TramerDim)
		m = recordModel{inner: lr, d: su.TramerDim}
	case AttackCarlini:
		hm = newHiddenModel(aseed, su.CarliniHidden, su.CarliniVocab)
		m = hm
	case AttackDistill:
		mlp = newMLPModel(aseed, su.DistillDim, su.DistillHidden, su.DistillVocab)
		m = recordModel{inner: mlp, d: su.DistillDim}
	default:
		return nil, fmt.Errorf("unknown attack %q", attack)
	}
	raw := cfg == nil
	rcfg := cfg
	if raw {
		rcfg = config.Default()
	}
	rig, err := startRig(rcfg, raw, m, start)
	if err != nil {
		return nil, err
	}
	defer rig.close()
	wrappers := recordWrappers(su.HeldOut)
	if attack == AttackCarlini {
		wrappers = storyWrappers(su.HeldOut)
	}
	c := newEconClient(rig, st, aseed+uint64(sti+1)*7919+uint64(secret), start, cover, warm, wrappers)
	run := &econRun{attack: attack, strategy: sti, secret: secret}
	// Records and held-out inputs are the same for every run of a setup.
	rr := newRand(aseed, 0xec1)
	gen := func() []float64 {
		x := make([]float64, su.TramerDim)
		if attack == AttackDistill {
			x = make([]float64, su.DistillDim)
		}
		for j := range x {
			if su.Uniform {
				x[j] = 4*rr.Float64() - 2
			} else {
				x[j] = rr.NormFloat64()
			}
		}
		return x
	}
	hr := newRand(aseed, 0xec2)
	held := func(d int) [][]float64 {
		xs := make([][]float64, su.HeldOutRecords)
		for i := range xs {
			xs[i] = make([]float64, d)
			for j := range xs[i] {
				if su.Uniform {
					xs[i][j] = 4*hr.Float64() - 2
				} else {
					xs[i][j] = hr.NormFloat64()
				}
			}
		}
		return xs
	}
	switch attack {
	case AttackTramer:
		if grid == nil {
			grid = []int{su.TramerDim + 1}
		}
		run.curve, err = runTramerE2E(ctx, c, lr, gen, held(su.TramerDim), grid)
	case AttackCarlini:
		if grid == nil {
			// The raw cost: every vector, until ĥ = h.
			grid = make([]int, 0, 64)
			per := 1 + (su.CarliniVocab-2)/(maxTopLogprobs-1)
			for n := 1; n <= 4*su.CarliniHidden; n++ {
				grid = append(grid, n*per)
			}
		}
		run.curve, err = runCarliniE2E(ctx, c, hm, su.CarliniSteps, grid, true)
	case AttackDistill:
		if grid == nil {
			grid = []int{su.DistillBase}
		}
		run.curve, err = runDistillE2E(ctx, c, mlp, gen, held(su.DistillDim), su.DistillEpochs, grid)
	}
	if err != nil {
		return nil, err
	}
	run.final = c.stats
	return run, nil
}

// newLogistic is the equation-solving target: w ~ N(0, 4/d), b ~ N(0,
// 0.25), so margins of standard inputs have a standard deviation near 2.
func newLogistic(seed uint64, d int) *logisticModel {
	r := newRand(seed, 0xec3)
	m := &logisticModel{w: make([]float64, d), b: 0.5 * r.NormFloat64()}
	for i := range m.w {
		m.w[i] = 2 / math.Sqrt(float64(d)) * r.NormFloat64()
	}
	return m
}

// econCell summarises one (attack, strategy) over the secrets.
type econCell struct {
	reached int // secrets on which the target was reached
	// multiples where reached: every request sent (harvest queries, cover
	// and warm-up) and harvest queries alone, over the raw attack's cost
	total, harvest []float64
	queries        []int // harvest queries to the target
	requests       []int // every request to the target
	accounts       []int // at the target (or at the budget)
	days           []float64
	refused        []int
	probation      []int
	benign         []int
	final          []float64 // fidelity at the budget
	// neverMultiple is budget / base: the lower bound when never reached.
	neverMultiple float64
}

func summarise(res *econAttackResult, sti int) econCell {
	c := econCell{neverMultiple: float64(res.budget) / float64(res.base)}
	for _, run := range res.runs[sti] {
		cv := run.curve
		i := cv.reach(res.target)
		st := run.final
		if i >= 0 {
			st = cv.stats[i]
			c.reached++
			c.queries = append(c.queries, st.queries)
			c.requests = append(c.requests, st.queries+st.benign)
			c.harvest = append(c.harvest, float64(st.queries)/float64(res.base))
			c.total = append(c.total, float64(st.queries+st.benign)/float64(res.base))
		}
		c.accounts = append(c.accounts, st.accounts)
		c.days = append(c.days, st.days())
		c.refused = append(c.refused, st.refused)
		c.probation = append(c.probation, st.probation)
		c.benign = append(c.benign, st.benign)
		c.final = append(c.final, cv.last())
	}
	return c
}

// minTotal is the attacker's best server: the smallest multiple over the
// secrets on which it reached the target (+Inf when none).
func (c econCell) minTotal() float64 {
	if len(c.total) == 0 {
		return math.Inf(1)
	}
	return slices.Min(c.total)
}

// multipleText renders a multiple cell: the smallest over the secrets (and
// the range), or the budget bound when no secret let the attacker through.
func (c econCell) multipleText(secrets int, ms []float64) string {
	if c.reached == 0 {
		return fmt.Sprintf("never (> %gx)", c.neverMultiple)
	}
	lo, hi := slices.Min(ms), slices.Max(ms)
	s := fmt.Sprintf("%gx", roundMultiple(lo))
	switch {
	case c.reached < secrets:
		s += fmt.Sprintf(" (%d of %d secrets; never on the others)", c.reached, secrets)
	case roundMultiple(lo) != roundMultiple(hi):
		s += fmt.Sprintf(" (%g–%gx)", roundMultiple(lo), roundMultiple(hi))
	}
	return s
}

func roundMultiple(m float64) float64 { return math.Round(m*10) / 10 }

func rangeInts(v []int) string {
	if len(v) == 0 {
		return "—"
	}
	lo, hi := slices.Min(v), slices.Max(v)
	if lo == hi {
		return itoa(lo)
	}
	return fmt.Sprintf("%d–%d", lo, hi)
}

func rangeFloat(v []float64, f func(float64) string) string {
	if len(v) == 0 {
		return "—"
	}
	lo, hi := slices.Min(v), slices.Max(v)
	if f(lo) == f(hi) {
		return f(lo)
	}
	return f(lo) + "–" + f(hi)
}

func fmtDays(d float64) string { return fmt.Sprintf("%.1f", d) }

// EconomicsTableTitle is the headline table's title (make lab prints it).
const EconomicsTableTitle = "Attacker cost multiple"

func economicsSection(seed uint64, p EconomicsParams, results []*econAttackResult, honest *honestResult, warm warmup) Section {
	s := Section{
		Title: "Economics: attacks against the whole server",
		Intro: []string{
			"Every attack of the lab runs end to end against the real server: `server.New` in-process with scoring on and the " +
				"simulated clock, driven through `extproc/envoytest`'s Envoy emulation configured as `envoy/envoy.yaml` configures the " +
				"filter, in front of an upstream model that honours exactly the request that reaches it (after distillguard capped " +
				"`top_logprobs`, dropped `logit_bias` or stripped logprobs) and whose answer goes back through distillguard's response " +
				"rewrite. The raw API is the same rig with a no-op processor. Each strategy runs on a fresh server per secret " +
				"(`scoring.secret`); verdicts are a function of the traffic and the secret.",
			"The cost multiple is the number of requests an attacker sends to reach the raw attack's fidelity — its harvest queries " +
				"and the benign cover and warm-up chats it sends to look human or to age its accounts, all of which it pays for — " +
				"divided by the queries the raw attack needed. Fidelity is read after 1, 1.5, 2, 3, 4, 6, 8, 10, 12, 16, 24, 32, 48 " +
				"and 64 times the raw cost in harvest queries. The headline cell is the smallest over the secrets (the attacker's " +
				"luckiest server); the per-attack tables also give the multiple in harvest queries alone. \"never (> Nx)\" means no " +
				"secret let the attacker reach the raw fidelity within its budget of N times the raw cost in harvest queries.",
		},
		Params: [][2]string{
			{"seed", fmt.Sprint(seed)},
			{"secrets per strategy", itoa(p.Secrets)},
			{"probation an aged account warms up to", fmt.Sprintf("%d requests over %s", warm.requests, warm.age)},
		},
	}
	var setups []EconSetup
	for _, r := range results {
		if !slices.ContainsFunc(setups, func(x EconSetup) bool { return x.Name == r.setup.Name }) {
			setups = append(setups, r.setup)
		}
	}
	for _, su := range setups {
		var rs []*econAttackResult
		for _, r := range results {
			if r.setup.Name == su.Name {
				rs = append(rs, r)
			}
		}
		title := EconomicsTableTitle
		if su.HeldOut {
			title += ", held-out configuration"
		}
		t := Table{Title: title, Header: []string{"strategy"}}
		for _, r := range rs {
			t.Header = append(t.Header, r.attack)
		}
		for sti, st := range p.Strategies {
			row := []string{st.Name}
			for _, r := range rs {
				c := summarise(r, sti)
				row = append(row, c.multipleText(p.Secrets, c.total))
			}
			t.Rows = append(t.Rows, row)
		}
		var raw []string
		for _, r := range rs {
			raw = append(raw, fmt.Sprintf("%s: %s from %d queries", r.attack, r.targetS, r.base))
		}
		t.Notes = append(t.Notes, "Raw API (a no-op processor): "+strings.Join(raw, "; ")+".")
		t.Notes = append(t.Notes, setupText(su))
		s.Tables = append(s.Tables, t)
	}
	for _, r := range results {
		s.Tables = append(s.Tables, attackDetailTable(r, p))
	}
	if honest != nil {
		s.Tables = append(s.Tables, honest.tables()...)
	}
	s.Findings = economicsFindings(results, p)
	return s
}

func setupText(su EconSetup) string {
	dist := "N(0, 1)"
	if su.Uniform {
		dist = "U(−2, 2)"
	}
	return fmt.Sprintf("Configuration %q: logistic regression on %d features (records %s, top_logprobs 2 asked); hidden size h = %d, V = %d "+
		"(top_logprobs 20 and logit_bias +100 asked, %d bisection steps); distillation teacher %d→%d→%d tokens, softmax-regression student, "+
		"top_logprobs 20 asked; %d held-out inputs.", su.Name, su.TramerDim, dist, su.CarliniHidden, su.CarliniVocab, su.CarliniSteps,
		su.DistillDim, su.DistillHidden, su.DistillVocab, su.HeldOutRecords)
}

func attackDetailTable(r *econAttackResult, p EconomicsParams) Table {
	t := Table{
		Title: fmt.Sprintf("%s, %s configuration: cost per strategy", strings.ToUpper(r.attack[:1])+r.attack[1:], r.setup.Name),
		Header: []string{"strategy", "target reached (secrets)", "requests to target", "cost multiple (all requests)",
			"harvest queries to target", "cost multiple (harvest queries only)", "accounts", "simulated days",
			"refused", "answered in probation", "fidelity at budget"},
		Notes: []string{fmt.Sprintf("Target: %s; raw cost %d queries; budget %d harvest queries. \"requests\" are everything the attacker "+
			"sent: harvest queries plus benign cover and warm-up chats. Accounts, days, refusals and probation answers are counted up "+
			"to the target where it was reached, else over the whole budget; ranges are over the secrets.", r.targetS, r.base, r.budget)},
	}
	for sti, st := range p.Strategies {
		c := summarise(r, sti)
		t.Rows = append(t.Rows, []string{st.Name, fmt.Sprintf("%d of %d", c.reached, p.Secrets), rangeInts(c.requests),
			c.multipleText(p.Secrets, c.total), rangeInts(c.queries), c.multipleText(p.Secrets, c.harvest),
			rangeInts(c.accounts), rangeFloat(c.days, fmtDays), rangeInts(c.refused), rangeInts(c.probation),
			rangeFloat(c.final, fmtFidelity(r.attack))})
	}
	return t
}

func fmtFidelity(attack string) func(float64) string {
	if attack == AttackCarlini {
		return func(f float64) string {
			if f >= 1 {
				return "ĥ = h"
			}
			return "no"
		}
	}
	if attack == AttackTramer {
		return fmtPct2
	}
	return fmtPct
}

func economicsFindings(results []*econAttackResult, p EconomicsParams) []string {
	var out []string
	for _, r := range results {
		var below []string
		worst, worstName, worstHarvest := math.Inf(1), "", math.Inf(1)
		for sti, st := range p.Strategies {
			c := summarise(r, sti)
			if m := c.minTotal(); m < worst {
				worst, worstName, worstHarvest = m, st.Name, slices.Min(c.harvest)
			}
			if m := c.minTotal(); m < 10 {
				below = append(below, fmt.Sprintf("%s (%gx)", st.Name, roundMultiple(m)))
			}
		}
		head := fmt.Sprintf("%s, %s configuration: ", r.attack, r.setup.Name)
		switch {
		case math.IsInf(worst, 1):
			out = append(out, head+fmt.Sprintf("no strategy reached the raw fidelity within %d harvest queries (%gx the raw cost) on any secret.",
				r.budget, float64(r.budget)/float64(r.base)))
		case len(below) == 0:
			out = append(out, head+fmt.Sprintf("the cheapest strategy (%s) needs %gx the raw API's requests (%gx counting its harvest queries alone).",
				worstName, roundMultiple(worst), roundMultiple(worstHarvest)))
		default:
			sort.Strings(below)
			out = append(out, head+"below 10x the raw cost: "+strings.Join(below, ", ")+".")
		}
	}
	return out
}
