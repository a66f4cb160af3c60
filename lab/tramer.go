package lab

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"

	"gonum.org/v1/gonum/mat"
)

// TramerParams sizes the equation-solving experiment.
type TramerParams struct {
	Dim      int   // d, features of the logistic regression
	Budgets  []int // query budgets, in multiples of d+1
	HeldOut  int   // held-out inputs for fidelity
	Policies []Policy
}

// logisticModel is a binary logistic-regression classifier served as a
// two-token "language model": the class tokens "yes" and "no" get logits
// w·x+b and 0, so their softmax is (σ(w·x+b), 1-σ(w·x+b)) and the API's
// logprobs are the classifier's log-confidences — the confidence-returning
// API of Tramèr et al., "Stealing Machine Learning Models via Prediction
// APIs" (USENIX Security 2016), §4.1.
type logisticModel struct {
	w []float64
	b float64
}

const tramerPrefix = "Classify the record:"

func (m *logisticModel) Vocab() int { return 2 }

func (m *logisticModel) Token(id int) string {
	if id == 0 {
		return "yes"
	}
	return "no"
}

func (m *logisticModel) TokenID(t string) (int, bool) {
	switch t {
	case "yes":
		return 0, true
	case "no":
		return 1, true
	}
	return 0, false
}

func (m *logisticModel) Logits(prompt string, dst []float64) error {
	x, err := parseRecord(prompt, len(m.w))
	if err != nil {
		return err
	}
	dst[0] = m.margin(x)
	dst[1] = 0
	return nil
}

func (m *logisticModel) margin(x []float64) float64 {
	z := m.b
	for i, v := range x {
		z += m.w[i] * v
	}
	return z
}

func formatRecord(x []float64) string {
	b := []byte(tramerPrefix)
	for _, v := range x {
		b = append(b, ' ')
		b = strconv.AppendFloat(b, v, 'g', -1, 64)
	}
	return string(b)
}

func parseRecord(prompt string, d int) ([]float64, error) {
	rest, ok := strings.CutPrefix(prompt, tramerPrefix)
	if !ok {
		return nil, fmt.Errorf("%w: not a record", errBadRequest)
	}
	f := strings.Fields(rest)
	if len(f) != d {
		return nil, fmt.Errorf("%w: %d features, want %d", errBadRequest, len(f), d)
	}
	x := make([]float64, d)
	for i, s := range f {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errBadRequest, err)
		}
		x[i] = v
	}
	return x, nil
}

// tramerObs is what one query tells the attacker.
type tramerObs struct {
	label float64 // +1 for "yes", -1 for "no"
	// z is the recovered margin w·x+b when finite.
	z      float64
	finite bool
}

// observe turns a response into an equation. With both class logprobs the
// margin is their difference; with only the chosen token's logprob p the
// other class has 1-p (two classes), so the margin is log p - log(1-p).
// A logprob rounded to 0 carries only the label.
func observe(r Response) tramerObs {
	o := tramerObs{label: -1}
	if r.Chosen == "yes" {
		o.label = 1
	}
	var yes, no float64
	var haveYes, haveNo bool
	for _, t := range r.Top {
		switch t.Token {
		case "yes":
			yes, haveYes = t.Logprob, true
		case "no":
			no, haveNo = t.Logprob, true
		}
	}
	switch {
	case haveYes && haveNo:
		o.z, o.finite = yes-no, true
	case r.HasLogprob && r.Logprob < 0:
		o.z, o.finite = o.label*(r.Logprob-math.Log(-math.Expm1(r.Logprob))), true
	}
	if o.finite && (math.IsNaN(o.z) || math.IsInf(o.z, 0)) {
		o.finite = false
	}
	return o
}

type tramerFit struct {
	theta     []float64 // w then b
	equations int       // finite equations used (0: label-only fit)
	method    string
}

// fitTramer solves for (w,b): exactly from d+1 equations, by least squares
// from more; with fewer than d+1 usable equations it falls back to fitting a
// logistic regression to the labels alone (Tramèr et al. §5's retraining
// baseline).
func fitTramer(xs [][]float64, obs []tramerObs) tramerFit {
	d := len(xs[0])
	rows := finiteRows(obs)
	if len(rows) >= d+1 {
		if theta, err := solveMargins(xs, obs, rows, false); err == nil {
			method := "least squares"
			if len(rows) == d+1 {
				method = "exact solve"
			}
			return tramerFit{theta: theta, equations: len(rows), method: method}
		}
	}
	return tramerFit{theta: fitLabels(xs, obs), method: "labels only"}
}

// finiteRows returns the indices of the observations that yield an
// equation (a finite observed margin).
func finiteRows(obs []tramerObs) []int {
	var rows []int
	for i, o := range obs {
		if o.finite {
			rows = append(rows, i)
		}
	}
	return rows
}

// solveMargins solves margin = w·x + b, plus c·label when withLabel, over
// the given rows (exactly when square, else by least squares) and returns
// w, b then c.
func solveMargins(xs [][]float64, obs []tramerObs, rows []int, withLabel bool) ([]float64, error) {
	d := len(xs[0])
	cols := d + 1
	if withLabel {
		cols++
	}
	a := mat.NewDense(len(rows), cols, nil)
	b := mat.NewVecDense(len(rows), nil)
	for r, i := range rows {
		for j, v := range xs[i] {
			a.Set(r, j, v)
		}
		a.Set(r, d, 1)
		if withLabel {
			a.Set(r, d+1, obs[i].label)
		}
		b.SetVec(r, obs[i].z)
	}
	var theta mat.VecDense
	if err := theta.SolveVec(a, b); err != nil {
		return nil, err
	}
	return theta.RawVector().Data, nil
}

// fitOffset is the equation-solving attack adapted to a perturbation that
// is the same on every request: mutate keys the noise by seed, token
// position and alternative rank, and the server seeds it by session, so on
// one-token answers the winning and losing classes always get the same two
// offsets and the observed margin is w·x + b + c·label. One more unknown, c,
// and the system is linear again.
func fitOffset(xs [][]float64, obs []tramerObs) (tramerFit, bool) {
	d := len(xs[0])
	rows := finiteRows(obs)
	if len(rows) < d+2 {
		return tramerFit{}, false
	}
	t, err := solveMargins(xs, obs, rows, true)
	if err != nil {
		return tramerFit{}, false
	}
	for _, v := range t {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return tramerFit{}, false
		}
	}
	return tramerFit{theta: t[:d+1], equations: len(rows), method: "least squares + rank offset"}, true
}

// fitLabels fits an L2-regularised logistic regression to the labels by
// Newton's method (iteratively reweighted least squares).
func fitLabels(xs [][]float64, obs []tramerObs) []float64 {
	d := len(xs[0])
	const lambda = 1e-3
	n := float64(len(xs))
	theta := make([]float64, d+1)
	row := make([]float64, d+1)
	for iter := 0; iter < 50; iter++ {
		h := mat.NewSymDense(d+1, nil)
		g := mat.NewVecDense(d+1, nil)
		for j := range theta {
			h.SetSym(j, j, lambda)
			g.SetVec(j, lambda*theta[j])
		}
		for i, x := range xs {
			copy(row, x)
			row[d] = 1
			m := 0.0
			for j, v := range row {
				m += theta[j] * v
			}
			y := obs[i].label
			c := -y * sigmoid(-y*m) / n
			s := sigmoid(m)
			w := s * (1 - s) / n
			for j, v := range row {
				g.SetVec(j, g.AtVec(j)+c*v)
				for k := j; k < len(row); k++ {
					h.SetSym(j, k, h.At(j, k)+w*v*row[k])
				}
			}
		}
		var step mat.VecDense
		if err := step.SolveVec(h, g); err != nil {
			break
		}
		var norm float64
		for j := range theta {
			theta[j] -= step.AtVec(j)
			norm += step.AtVec(j) * step.AtVec(j)
		}
		if norm < 1e-20 {
			break
		}
	}
	return theta
}

func sigmoid(x float64) float64 {
	if x >= 0 {
		return 1 / (1 + math.Exp(-x))
	}
	e := math.Exp(x)
	return e / (1 + e)
}

type tramerScore struct {
	paramErr  float64 // ||θ̂-θ|| / ||θ||
	agreement float64 // held-out label agreement
	probErr   float64 // mean |σ(θ̂·x) - σ(θ·x)| on held-out inputs
}

// cell is the report's table cell: relative parameter error / held-out
// agreement.
func (sc tramerScore) cell() string {
	return fmt.Sprintf("%s / %s", fmtSci(sc.paramErr), fmtPct2(sc.agreement))
}

func scoreTramer(m *logisticModel, theta []float64, held [][]float64) tramerScore {
	d := len(m.w)
	var num, den float64
	for j := 0; j <= d; j++ {
		t := m.b
		if j < d {
			t = m.w[j]
		}
		num += (theta[j] - t) * (theta[j] - t)
		den += t * t
	}
	s := tramerScore{paramErr: math.Sqrt(num / den)}
	var agree int
	var perr float64
	for _, x := range held {
		z := m.margin(x)
		zh := theta[d]
		for j, v := range x {
			zh += theta[j] * v
		}
		if (z > 0) == (zh > 0) {
			agree++
		}
		perr += math.Abs(sigmoid(z) - sigmoid(zh))
	}
	s.agreement = float64(agree) / float64(len(held))
	s.probErr = perr / float64(len(held))
	return s
}

type tramerResult struct {
	policy  Policy
	fits    []tramerFit
	scores  []tramerScore
	budgets []int
	queries int
	// For perturbing policies: the offset-aware attacker on the same
	// answers, and both attackers against noise keyed by the session alone.
	offset      []tramerScore // NaN scores where the fit was impossible
	sessionOnly []tramerScore
	sessionOff  []tramerScore
}

// RunTramer runs the equation-solving attack under every policy.
func RunTramer(ctx context.Context, seed uint64, p TramerParams, prog *Task) (Section, error) {
	d := p.Dim
	r := newRand(seed, 1)
	m := &logisticModel{w: make([]float64, d), b: 0.5 * r.NormFloat64()}
	// Margins of standard-normal inputs then have a standard deviation of
	// about 2: most answers are confident but not saturated, as with a
	// useful classifier.
	for i := range m.w {
		m.w[i] = 2 / math.Sqrt(float64(d)) * r.NormFloat64()
	}
	maxQ := p.Budgets[len(p.Budgets)-1] * (d + 1)
	xs := gaussians(r, maxQ, d)
	held := gaussians(r, p.HeldOut, d)

	prog.Grow(len(p.Policies) * maxQ)
	// perturbing policies are queried twice (second time with noise keyed by
	// the session alone); that pass is not shown in the progress.
	var results []tramerResult
	for pi, pol := range p.Policies {
		api := NewAPI(m, pol, APIOptions{Session: "tramer-attacker", Seed: seed + uint64(pi)})
		obs := make([]tramerObs, maxQ)
		for i, x := range xs {
			if i%256 == 0 && ctx.Err() != nil {
				return Section{}, ctx.Err()
			}
			resp, err := api.Query(Query{Prompt: formatRecord(x), TopLogprobs: 2})
			if err != nil {
				return Section{}, fmt.Errorf("tramer %s: %w", pol.Name, err)
			}
			obs[i] = observe(resp)
			prog.Add(1)
		}
		res := tramerResult{policy: pol, queries: api.Stats().Queries}
		var fresh []tramerObs
		if pol.Output.Perturb != 0 {
			fresh = make([]tramerObs, maxQ)
			papi := NewAPI(m, pol, APIOptions{Session: "tramer-attacker", Seed: seed + uint64(pi), SessionOnlySeed: true})
			for i, x := range xs {
				resp, err := papi.Query(Query{Prompt: formatRecord(x), TopLogprobs: 2})
				if err != nil {
					return Section{}, fmt.Errorf("tramer %s: %w", pol.Name, err)
				}
				fresh[i] = observe(resp)
			}
		}
		for _, k := range p.Budgets {
			n := k * (d + 1)
			f := fitTramer(xs[:n], obs[:n])
			res.budgets = append(res.budgets, n)
			res.fits = append(res.fits, f)
			res.scores = append(res.scores, scoreTramer(m, f.theta, held))
			if fresh != nil {
				res.offset = append(res.offset, offsetScore(m, xs[:n], obs[:n], held))
				pf := fitTramer(xs[:n], fresh[:n])
				res.sessionOnly = append(res.sessionOnly, scoreTramer(m, pf.theta, held))
				res.sessionOff = append(res.sessionOff, offsetScore(m, xs[:n], fresh[:n], held))
			}
		}
		results = append(results, res)
	}
	return tramerSection(seed, p, results), nil
}

// offsetScore runs the offset-aware attacker; NaN scores where the fit was
// impossible.
func offsetScore(m *logisticModel, xs [][]float64, obs []tramerObs, held [][]float64) tramerScore {
	if of, ok := fitOffset(xs, obs); ok {
		return scoreTramer(m, of.theta, held)
	}
	return tramerScore{paramErr: math.NaN(), agreement: math.NaN(), probErr: math.NaN()}
}

func gaussians(r interface{ NormFloat64() float64 }, n, d int) [][]float64 {
	xs := make([][]float64, n)
	for i := range xs {
		xs[i] = make([]float64, d)
		for j := range xs[i] {
			xs[i][j] = r.NormFloat64()
		}
	}
	return xs
}

func tramerSection(seed uint64, p TramerParams, results []tramerResult) Section {
	d := p.Dim
	s := Section{
		Title: "Equation-solving extraction of a logistic regression (Tramèr et al. 2016)",
		Intro: []string{
			"A binary logistic regression f(x) = σ(w·x + b) is served as a chat model whose next token is \"yes\" or \"no\"; " +
				"the API returns the two class tokens in `top_logprobs`, so logprob(yes) − logprob(no) = w·x + b. " +
				"The attacker sends random records, reads the rewritten JSON, and solves the linear system for (w, b): " +
				"exactly from d+1 queries, by least squares from more. When only the chosen token's logprob survives it uses " +
				"log p − log(1−p) (two classes); when a logprob is rounded to 0 or removed the query yields only its label, and with " +
				"fewer than d+1 usable equations the attacker falls back to fitting a logistic regression to the labels.",
		},
		Params: [][2]string{
			{"seed", fmt.Sprint(seed)},
			{"features d", itoa(d)},
			{"inputs", "x ~ N(0, I_d); w ~ N(0, 4/d), b ~ N(0, 0.25) (margin sd ≈ 2)"},
			{"top_logprobs requested", "2"},
			{"held-out inputs", itoa(p.HeldOut)},
			{"query budgets", budgetList(p.Budgets, d)},
		},
	}
	t1 := Table{
		Title:  fmt.Sprintf("Extraction from d+1 = %d queries", d+1),
		Header: []string{"policy", "queries", "usable equations", "method", "parameter error ‖θ̂−θ‖/‖θ‖", "held-out agreement", "mean |p̂−p|"},
	}
	t2 := Table{
		Title:  "Parameter error and agreement against queries",
		Header: []string{"policy"},
		Notes: []string{"Each cell: relative parameter error / held-out label agreement. " +
			"\"queries to 99.9%\" is the smallest budget whose stolen model agrees with the target on at least 99.9% of held-out inputs."},
	}
	for _, n := range results[0].budgets {
		t2.Header = append(t2.Header, fmt.Sprintf("%d queries", n))
	}
	t2.Header = append(t2.Header, "queries to 99.9%")
	for _, r := range results {
		f, sc := r.fits[0], r.scores[0]
		t1.Rows = append(t1.Rows, []string{r.policy.Name, itoa(r.budgets[0]), itoa(f.equations), f.method,
			fmtSci(sc.paramErr), fmtPct2(sc.agreement), fmtSci(sc.probErr)})
		row := []string{r.policy.Name}
		need := "> " + itoa(r.budgets[len(r.budgets)-1])
		for i, sc := range r.scores {
			row = append(row, sc.cell())
			if sc.agreement >= 0.999 && strings.HasPrefix(need, ">") {
				need = itoa(r.budgets[i])
			}
		}
		t2.Rows = append(t2.Rows, append(row, need))
	}
	t3 := Table{
		Title:  "Perturbation: noise keying against an attacker who models a fixed offset",
		Header: t2.Header[:len(t2.Header)-1],
		Notes: []string{"The server keys the noise by (session, request body) and mutate by (key, position, rank): a repeated " +
			"request gets the same noise, distinct requests independent noise. \"rank offset\" rows are an attacker who adds one " +
			"unknown for a per-rank offset (margin = w·x + b + c·label). \"session-only key\" rows query again with the noise keyed " +
			"by the session alone, a design under which every one-token answer carries the same offsets. " +
			"Cells: relative parameter error / held-out agreement."},
	}
	for _, r := range results {
		if r.offset == nil {
			continue
		}
		for _, v := range []struct {
			attacker string
			scores   []tramerScore
		}{
			{"plain attacker (as above)", r.scores},
			{"rank offset", r.offset},
			{"session-only key, plain attacker", r.sessionOnly},
			{"session-only key, rank offset", r.sessionOff},
		} {
			row := []string{r.policy.Name + ", " + v.attacker}
			for _, sc := range v.scores {
				row = append(row, sc.cell())
			}
			t3.Rows = append(t3.Rows, row)
		}
	}
	s.Tables = []Table{t1, t2, t3}

	// Fidelity against precision: rounding rows only, first and last budget.
	fig := Figure{
		File:   "tramer-precision.svg",
		Title:  "Equation solving: stolen parameters vs. rounding",
		XLabel: "decimals kept in logprobs",
		YLabel: "relative parameter error",
		LogY:   true,
	}
	for _, bi := range []int{0, len(results[0].budgets) - 1} {
		ser := Series{Name: fmt.Sprintf("%d queries", results[0].budgets[bi])}
		for _, r := range results {
			var dec int
			if _, err := fmt.Sscanf(r.policy.Name, "round %d", &dec); err != nil {
				continue
			}
			ser.X = append(ser.X, float64(dec))
			ser.Y = append(ser.Y, r.scores[bi].paramErr)
		}
		fig.Series = append(fig.Series, ser)
	}
	s.Figures = []Figure{fig}
	s.Findings = tramerFindings(results)
	return s
}

func budgetList(b []int, d int) string {
	var parts []string
	for _, k := range b {
		parts = append(parts, itoa(k*(d+1)))
	}
	return strings.Join(parts, ", ")
}

func tramerFindings(results []tramerResult) []string {
	var out []string
	last := len(results[0].budgets) - 1
	var labels *tramerResult
	for i := range results {
		if results[i].policy.Output.StripLogprobs {
			labels = &results[i]
		}
	}
	for _, r := range results {
		first, end := r.scores[0], r.scores[last]
		switch {
		case r.fits[0].method == "exact solve" && first.paramErr < 1e-9:
			out = append(out, fmt.Sprintf("%s: exact extraction from d+1 = %d queries (parameter error %s).",
				r.policy.Name, r.budgets[0], fmtSci(first.paramErr)))
		default:
			out = append(out, fmt.Sprintf("%s: %d queries give parameter error %s and %s agreement (%s); %d queries give %s and %s.",
				r.policy.Name, r.budgets[0], fmtSci(first.paramErr), fmtPct2(first.agreement), r.fits[0].method,
				r.budgets[last], fmtSci(end.paramErr), fmtPct2(end.agreement)))
		}
	}
	for _, r := range results {
		if r.offset == nil {
			continue
		}
		out = append(out, fmt.Sprintf("%s: after %d queries the plain attacker ends at parameter error %s and one who models a fixed offset at %s; "+
			"had the noise been keyed by the session alone, the offset attacker would reach %s.",
			r.policy.Name, r.budgets[last], fmtSci(r.scores[last].paramErr), fmtSci(r.offset[last].paramErr), fmtSci(r.sessionOff[last].paramErr)))
	}
	if labels != nil {
		out = append(out, fmt.Sprintf("The generated label is never rewritten, so every policy leaves the attacker at least the labels-only "+
			"result of the %q row (%s agreement after %d queries).",
			labels.policy.Name, fmtPct2(labels.scores[last].agreement), labels.budgets[last]))
	}
	return out
}
