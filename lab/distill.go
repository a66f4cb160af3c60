package lab

import (
	"context"
	"fmt"
	"math"
	"strings"
)

// DistillParams sizes the distillation experiment.
type DistillParams struct {
	Dim     int   // input features
	Hidden  int   // teacher hidden units
	Vocab   int   // next-token vocabulary
	Budgets []int // teacher queries
	HeldOut int
	// HonestQueries is how many honest requests measure the utility cost.
	HonestQueries int
	// HonestTopLogprobs is the top_logprobs an honest client asks for.
	HonestTopLogprobs int
	// Epochs of full-batch training of the student.
	Epochs   int
	Policies []Policy
}

// mlpModel is the teacher: a one-hidden-layer tanh network from a record to
// next-token logits. The student below is a softmax regression (linear), so
// it cannot match the teacher exactly; what the labels carry decides how
// close it gets.
type mlpModel struct {
	tokVocab
	din, hid int
	w1, b1   []float64 // hid×din, hid
	w2, b2   []float64 // v×hid, v
}

func newMLPModel(seed uint64, din, hid, v int) *mlpModel {
	r := newRand(seed, 4)
	m := &mlpModel{tokVocab: newTokVocab(v), din: din, hid: hid,
		w1: make([]float64, hid*din), b1: make([]float64, hid),
		w2: make([]float64, v*hid), b2: make([]float64, v)}
	for i := range m.w1 {
		m.w1[i] = 0.5 / math.Sqrt(float64(din)) * r.NormFloat64()
	}
	for i := range m.b1 {
		m.b1[i] = 0.5 * r.NormFloat64()
	}
	for i := range m.w2 {
		m.w2[i] = 8 / math.Sqrt(float64(hid)) * r.NormFloat64()
	}
	for i := range m.b2 {
		m.b2[i] = r.NormFloat64()
	}
	return m
}

func (m *mlpModel) Logits(prompt string, dst []float64) error {
	x, err := parseRecord(prompt, m.din)
	if err != nil {
		return err
	}
	m.logits(x, dst)
	return nil
}

func (m *mlpModel) logits(x, dst []float64) {
	hid := make([]float64, m.hid)
	for i := range hid {
		s := m.b1[i]
		for j, v := range x {
			s += m.w1[i*m.din+j] * v
		}
		hid[i] = math.Tanh(s)
	}
	for k := range dst {
		s := m.b2[k]
		for i, v := range hid {
			s += m.w2[k*m.hid+i] * v
		}
		dst[k] = s
	}
}

// softTarget turns a parsed response into the distribution the student
// learns from: the returned alternatives' probabilities, the remaining mass
// spread evenly over the tokens not shown; only the chosen token's
// probability when alternatives are gone; the chosen token alone when
// logprobs are gone. Returns false for hard-label-only responses.
func softTarget(r Response, m Model, q []float64) (soft bool) {
	for i := range q {
		q[i] = 0
	}
	chosen, _ := m.TokenID(r.Chosen)
	shown := make([]bool, len(q))
	var mass float64
	set := func(id int, lp float64) {
		if shown[id] {
			return
		}
		shown[id] = true
		p := math.Exp(math.Min(lp, 0))
		q[id] = p
		mass += p
	}
	for _, t := range r.Top {
		if id, ok := m.TokenID(t.Token); ok {
			set(id, t.Logprob)
		}
	}
	if r.HasLogprob {
		set(chosen, r.Logprob)
	}
	if mass == 0 {
		q[chosen] = 1
		return false
	}
	rest := 0
	for _, s := range shown {
		if !s {
			rest++
		}
	}
	if mass >= 1 || rest == 0 {
		for i := range q {
			q[i] /= mass
		}
		return true
	}
	for i, s := range shown {
		if !s {
			q[i] = (1 - mass) / float64(rest)
		}
	}
	return true
}

// student is a softmax regression over [x, 1].
type student struct {
	d, v int
	w    []float64 // v×(d+1)
}

// train fits the student to targets by full-batch Adam on the
// cross-entropy (which, for one-hot targets, is ordinary maximum
// likelihood) with a small L2 penalty. Fixed epochs and no randomness keep
// it deterministic.
func trainStudent(xs [][]float64, qs [][]float64, v, epochs int) *student {
	d := len(xs[0])
	s := &student{d: d, v: v, w: make([]float64, v*(d+1))}
	const (
		lr     = 0.05
		beta1  = 0.9
		beta2  = 0.999
		eps    = 1e-8
		lambda = 1e-4
	)
	g := make([]float64, len(s.w))
	m1 := make([]float64, len(s.w))
	m2 := make([]float64, len(s.w))
	p := make([]float64, v)
	n := float64(len(xs))
	for e := 1; e <= epochs; e++ {
		for i := range g {
			g[i] = lambda * s.w[i]
		}
		for i, x := range xs {
			s.probs(x, p)
			for k := 0; k < v; k++ {
				c := (p[k] - qs[i][k]) / n
				row := g[k*(d+1) : (k+1)*(d+1)]
				for j, xv := range x {
					row[j] += c * xv
				}
				row[d] += c
			}
		}
		b1 := 1 - math.Pow(beta1, float64(e))
		b2 := 1 - math.Pow(beta2, float64(e))
		for i := range s.w {
			m1[i] = beta1*m1[i] + (1-beta1)*g[i]
			m2[i] = beta2*m2[i] + (1-beta2)*g[i]*g[i]
			s.w[i] -= lr * (m1[i] / b1) / (math.Sqrt(m2[i]/b2) + eps)
		}
	}
	return s
}

func (s *student) probs(x, p []float64) {
	for k := range p {
		row := s.w[k*(s.d+1) : (k+1)*(s.d+1)]
		z := row[s.d]
		for j, v := range x {
			z += row[j] * v
		}
		p[k] = z
	}
	softmaxInPlace(p)
}

func softmaxInPlace(z []float64) {
	lse := z[argmax(z)]
	var sum float64
	for i, v := range z {
		z[i] = math.Exp(v - lse)
		sum += z[i]
	}
	for i := range z {
		z[i] /= sum
	}
}

type fidelity struct {
	agreement float64 // top-1 agreement with the teacher on held-out inputs
	kl        float64 // mean KL(teacher ‖ student)
}

func scoreStudent(m *mlpModel, s *student, held [][]float64) fidelity {
	pt := make([]float64, m.v)
	ps := make([]float64, m.v)
	var agree int
	var kl float64
	for _, x := range held {
		m.logits(x, pt)
		softmaxInPlace(pt)
		s.probs(x, ps)
		if argmax(pt) == argmax(ps) {
			agree++
		}
		for k, p := range pt {
			if p > 0 {
				kl += p * math.Log(p/math.Max(ps[k], 1e-300))
			}
		}
	}
	return fidelity{agreement: float64(agree) / float64(len(held)), kl: kl / float64(len(held))}
}

// utility is the cost of a policy to an honest client, measured against the
// raw API on the same prompts. NaN marks a quantity the policy removed.
type utility struct {
	dLogprob   float64 // mean |Δ logprob| of the chosen token
	top1Change float64 // share of answers whose highest-ranked alternative changed
	kl         float64 // mean KL(raw top-k ‖ rewritten top-k), both renormalised
	altsKept   float64 // mean alternatives returned / requested
	removed    string  // what the client lost entirely, if anything
}

func measureUtility(raw, rew []Response) utility {
	var u utility
	var nLP, nTop, nKL int
	var alts, want float64
	for i := range raw {
		a, b := raw[i], rew[i]
		want += float64(len(a.Top))
		alts += float64(len(b.Top))
		if a.HasLogprob && b.HasLogprob {
			u.dLogprob += math.Abs(a.Logprob - b.Logprob)
			nLP++
		}
		if len(a.Top) > 0 && len(b.Top) > 0 {
			nTop++
			if topToken(b.Top) != topToken(a.Top) {
				u.top1Change++
			}
		}
		if len(a.Top) > 0 && len(b.Top) >= len(a.Top) {
			if kl, ok := topKL(a.Top, b.Top); ok {
				u.kl += kl
				nKL++
			}
		}
	}
	u.dLogprob = ratio(u.dLogprob, nLP)
	u.top1Change = ratio(u.top1Change, nTop)
	u.kl = ratio(u.kl, nKL)
	u.altsKept = alts / want
	switch {
	case nLP == 0:
		u.removed = "all logprobs"
	case nTop == 0:
		u.removed = "all alternatives"
	case nKL < len(raw):
		u.removed = "some alternatives"
	}
	return u
}

func ratio(s float64, n int) float64 {
	if n == 0 {
		return math.NaN()
	}
	return s / float64(n)
}

// topToken is the token a client would read as most likely: the first
// alternative with the highest logprob.
func topToken(top []TokenLogprob) string {
	best := 0
	for i, t := range top {
		if t.Logprob > top[best].Logprob {
			best = i
		}
	}
	return top[best].Token
}

func topKL(a, b []TokenLogprob) (float64, bool) {
	pb := make(map[string]float64, len(b))
	for _, t := range b {
		pb[t.Token] = t.Logprob
	}
	var za, zb float64
	for _, t := range a {
		lb, ok := pb[t.Token]
		if !ok {
			return 0, false
		}
		za += math.Exp(t.Logprob)
		zb += math.Exp(lb)
	}
	var kl float64
	for _, t := range a {
		p := math.Exp(t.Logprob) / za
		q := math.Exp(pb[t.Token]) / zb
		if p > 0 {
			kl += p * math.Log(p/q)
		}
	}
	return kl, true
}

type distillResult struct {
	policy  Policy
	soft    []fidelity // per budget
	softOK  bool       // the policy left soft information
	utility utility
}

// RunDistill trains students on teacher outputs collected under every
// policy and measures what each policy costs an honest client.
func RunDistill(ctx context.Context, seed uint64, p DistillParams, prog *Task) (Section, error) {
	m := newMLPModel(seed, p.Dim, p.Hidden, p.Vocab)
	r := newRand(seed, 5)
	maxQ := p.Budgets[len(p.Budgets)-1]
	xs := gaussians(r, maxQ, p.Dim)
	held := gaussians(r, p.HeldOut, p.Dim)
	honest := gaussians(r, p.HonestQueries, p.Dim)

	prog.Grow(len(p.Policies) * (maxQ + p.HonestQueries + len(p.Budgets)))
	query := func(api *API, x []float64, top int) (Response, error) {
		return api.Query(Query{Prompt: formatRecord(x), TopLogprobs: top})
	}
	rawAPI := NewAPI(m, p.Policies[0], APIOptions{Session: "honest", Seed: seed})
	rawHonest := make([]Response, len(honest))
	for i, x := range honest {
		resp, err := query(rawAPI, x, p.HonestTopLogprobs)
		if err != nil {
			return Section{}, err
		}
		rawHonest[i] = resp
	}

	var hard []fidelity
	var results []distillResult
	for pi, pol := range p.Policies {
		api := NewAPI(m, pol, APIOptions{Session: "distill-attacker", Seed: seed + uint64(pi)})
		qs := make([][]float64, maxQ)
		hs := make([][]float64, maxQ)
		soft := false
		for i, x := range xs {
			if i%256 == 0 && ctx.Err() != nil {
				return Section{}, ctx.Err()
			}
			resp, err := query(api, x, maxTopLogprobs)
			if err != nil {
				return Section{}, fmt.Errorf("distill %s: %w", pol.Name, err)
			}
			qs[i] = make([]float64, m.v)
			if softTarget(resp, m, qs[i]) {
				soft = true
			}
			hs[i] = make([]float64, m.v)
			hs[i][argmax(qs[i])] = 1
			if id, ok := m.TokenID(resp.Chosen); ok {
				clear(hs[i])
				hs[i][id] = 1
			}
			prog.Add(1)
		}
		res := distillResult{policy: pol, softOK: soft}
		for _, n := range p.Budgets {
			st := trainStudent(xs[:n], qs[:n], m.v, p.Epochs)
			res.soft = append(res.soft, scoreStudent(m, st, held))
			if pi == 0 {
				// Hard labels are the generated tokens, which no output
				// policy changes: one baseline serves every row.
				hst := trainStudent(xs[:n], hs[:n], m.v, p.Epochs)
				hard = append(hard, scoreStudent(m, hst, held))
			}
			prog.Add(1)
		}
		hapi := NewAPI(m, pol, APIOptions{Session: "honest", Seed: seed})
		rew := make([]Response, len(honest))
		for i, x := range honest {
			resp, err := query(hapi, x, p.HonestTopLogprobs)
			if err != nil {
				return Section{}, err
			}
			rew[i] = resp
			prog.Add(1)
		}
		res.utility = measureUtility(rawHonest, rew)
		results = append(results, res)
	}
	return distillSection(seed, p, hard, results), nil
}

func distillSection(seed uint64, p DistillParams, hard []fidelity, results []distillResult) Section {
	last := len(p.Budgets) - 1
	s := Section{
		Title: "Distillation fidelity against honest-user utility",
		Intro: []string{
			"The teacher is a one-hidden-layer network from a record to next-token logits, served through the chat API. " +
				"The attacker asks for `top_logprobs: 20` on random records and trains a softmax-regression student either on the " +
				"generated tokens alone (hard labels; no output policy changes them) or on the distribution the rewritten logprobs " +
				"describe (soft labels: shown alternatives at their probabilities, the rest of the mass spread evenly). " +
				"Fidelity is the student's top-1 agreement with the teacher and KL(teacher ‖ student) on held-out records.",
			fmt.Sprintf("The utility cost is measured on %d honest requests asking for `top_logprobs: %d`, comparing each policy's "+
				"rewritten answer with the raw API's answer to the same request. Generated text is never changed by any policy.",
				p.HonestQueries, p.HonestTopLogprobs),
		},
		Params: [][2]string{
			{"seed", fmt.Sprint(seed)},
			{"teacher", fmt.Sprintf("%d inputs → %d tanh units → %d tokens", p.Dim, p.Hidden, p.Vocab)},
			{"student", fmt.Sprintf("softmax regression on %d inputs + bias, Adam, %d full-batch epochs", p.Dim, p.Epochs)},
			{"query budgets", joinInts(p.Budgets)},
			{"held-out records", itoa(p.HeldOut)},
		},
	}
	t1 := Table{
		Title: fmt.Sprintf("Student fidelity (%d queries) and honest-user cost", p.Budgets[last]),
		Header: []string{"policy", "soft-label agreement", "soft-label KL", "hard-label agreement",
			"mean |Δ logprob| (chosen)", "top-1 change", "KL(raw ‖ rewritten top-k)", "alternatives kept", "removed for honest users"},
	}
	for _, r := range results {
		sa, sk := "—", "—"
		if r.softOK {
			sa, sk = fmtPct(r.soft[last].agreement), fmtSci(r.soft[last].kl)
		}
		u := r.utility
		removed := u.removed
		if removed == "" {
			removed = "nothing"
		}
		t1.Rows = append(t1.Rows, []string{r.policy.Name, sa, sk, fmtPct(hard[last].agreement),
			fmtSci(u.dLogprob), fmtPct2(u.top1Change), fmtSci(u.kl), fmtPct(u.altsKept), removed})
	}
	t1.Notes = []string{"\"—\": the policy left no logprobs, so there is no soft-label student (the hard-label student applies) or no value to compare."}
	t2 := Table{Title: "Student agreement against queries", Header: []string{"labels"}}
	for _, n := range p.Budgets {
		t2.Header = append(t2.Header, fmt.Sprintf("%d queries", n))
	}
	row := []string{"hard labels (any policy)"}
	for _, f := range hard {
		row = append(row, fmtPct(f.agreement))
	}
	t2.Rows = append(t2.Rows, row)
	for _, r := range results {
		if !r.softOK {
			continue
		}
		row := []string{"soft, " + r.policy.Name}
		for _, f := range r.soft {
			row = append(row, fmtPct(f.agreement))
		}
		t2.Rows = append(t2.Rows, row)
	}
	s.Tables = []Table{t1, t2}

	fig := Figure{
		File:   "distill-precision.svg",
		Title:  "Distillation: student agreement vs. rounding",
		XLabel: "decimals kept in logprobs",
		YLabel: "top-1 agreement with teacher",
	}
	for bi, n := range p.Budgets {
		soft := Series{Name: fmt.Sprintf("soft labels, %d queries", n)}
		hardS := Series{Name: fmt.Sprintf("hard labels, %d queries", n)}
		for _, r := range results {
			var dec int
			if _, err := fmt.Sscanf(r.policy.Name, "round %d", &dec); err != nil {
				continue
			}
			soft.X = append(soft.X, float64(dec))
			soft.Y = append(soft.Y, r.soft[bi].agreement)
			hardS.X = append(hardS.X, float64(dec))
			hardS.Y = append(hardS.Y, hard[bi].agreement)
		}
		fig.Series = append(fig.Series, soft, hardS)
	}
	s.Figures = []Figure{fig}
	s.Findings = distillFindings(hard, results, last)
	return s
}

func distillFindings(hard []fidelity, results []distillResult, last int) []string {
	var out []string
	raw := results[0]
	out = append(out, fmt.Sprintf("Soft labels from the raw API: %s agreement; hard labels alone: %s (same queries).",
		fmtPct(raw.soft[last].agreement), fmtPct(hard[last].agreement)))
	for _, r := range results[1:] {
		if !r.softOK {
			out = append(out, fmt.Sprintf("%s: no soft labels left; the attacker is reduced to hard labels (%s); honest clients lose %s.",
				r.policy.Name, fmtPct(hard[last].agreement), r.utility.removed))
			continue
		}
		out = append(out, fmt.Sprintf("%s: soft-label agreement %s (raw %s) for an honest-user cost of %s mean |Δ logprob| and %s top-1 changes.",
			r.policy.Name, fmtPct(r.soft[last].agreement), fmtPct(raw.soft[last].agreement), fmtSci(r.utility.dLogprob), fmtPct2(r.utility.top1Change)))
	}
	return out
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = itoa(n)
	}
	return strings.Join(s, ", ")
}
