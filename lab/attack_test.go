package lab

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

func TestObserve(t *testing.T) {
	lp := func(p float64) float64 { return math.Log(p) }
	margin := math.Log(0.8 / 0.2)
	for _, tc := range []struct {
		name   string
		r      Response
		label  float64
		z      float64
		finite bool
	}{
		{"both classes", Response{Chosen: "yes", HasLogprob: true, Logprob: lp(0.8), Top: []TokenLogprob{{"yes", lp(0.8)}, {"no", lp(0.2)}}}, 1, margin, true},
		{"chosen only, yes", Response{Chosen: "yes", HasLogprob: true, Logprob: lp(0.8)}, 1, margin, true},
		{"chosen only, no", Response{Chosen: "no", HasLogprob: true, Logprob: lp(0.8)}, -1, -margin, true},
		{"rounded to zero", Response{Chosen: "no", HasLogprob: true, Logprob: 0}, -1, 0, false},
		{"label only", Response{Chosen: "yes"}, 1, 0, false},
		{"one alternative", Response{Chosen: "yes", HasLogprob: true, Logprob: lp(0.8), Top: []TokenLogprob{{"yes", lp(0.8)}}}, 1, margin, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := observe(tc.r)
			if o.label != tc.label || o.finite != tc.finite || (tc.finite && math.Abs(o.z-tc.z) > 1e-12) {
				t.Errorf("observe = %+v, want label %v z %v finite %v", o, tc.label, tc.z, tc.finite)
			}
		})
	}
}

func TestFitTramer(t *testing.T) {
	m := &logisticModel{w: []float64{1, -2, 0.5}, b: 0.25}
	r := newRand(1, 9)
	xs := gaussians(r, 40, 3)
	exact := make([]tramerObs, len(xs))
	labels := make([]tramerObs, len(xs))
	for i, x := range xs {
		z := m.margin(x)
		exact[i] = tramerObs{label: math.Copysign(1, z), z: z, finite: true}
		labels[i] = tramerObs{label: math.Copysign(1, z)}
	}
	held := gaussians(r, 2000, 3)
	for _, tc := range []struct {
		name      string
		n         int
		obs       []tramerObs
		method    string
		maxErr    float64
		minAgree  float64
		equations int
	}{
		{"exact", 4, exact, "exact solve", 1e-12, 1, 4},
		{"least squares", 40, exact, "least squares", 1e-12, 1, 40},
		{"labels", 40, labels, "labels only", math.Inf(1), 0.9, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := fitTramer(xs[:tc.n], tc.obs[:tc.n])
			s := scoreTramer(m, f.theta, held)
			if f.method != tc.method || f.equations != tc.equations || s.paramErr > tc.maxErr || s.agreement < tc.minAgree {
				t.Errorf("fit %s/%d equations, error %g, agreement %g", f.method, f.equations, s.paramErr, s.agreement)
			}
		})
	}
}

func TestEstimateHidden(t *testing.T) {
	r := newRand(2, 9)
	for _, h := range []int{1, 5, 12} {
		const n, v = 20, 50
		w := gaussians(r, v, h)
		rows := make([][]float64, n)
		for i := range rows {
			g := gaussians(r, 1, h)[0]
			rows[i] = make([]float64, v)
			for j := range rows[i] {
				for k := range g {
					rows[i][j] += w[j][k] * g[k]
				}
				rows[i][j] += 3 // an unknown shift per vector is removed
			}
		}
		got, gap, sv, ok := estimateHidden(rows)
		if !ok || got != h || gap < 1e6 || len(sv) != n {
			t.Errorf("h=%d: estimate %d, gap %g, %d values, ok %v", h, got, gap, len(sv), ok)
		}
	}
	if _, _, _, ok := estimateHidden([][]float64{{1, math.NaN()}, {1, 2}}); ok {
		t.Error("a vector with a hole gave an estimate")
	}
}

func TestSoftTarget(t *testing.T) {
	m := newMLPModel(1, 2, 2, 4)
	for _, tc := range []struct {
		name string
		r    Response
		want []float64
		soft bool
	}{
		{"alternatives", Response{Chosen: "tok1", HasLogprob: true, Logprob: math.Log(0.5),
			Top: []TokenLogprob{{"tok1", math.Log(0.5)}, {"tok2", math.Log(0.3)}}}, []float64{0.1, 0.5, 0.3, 0.1}, true},
		{"chosen only", Response{Chosen: "tok0", HasLogprob: true, Logprob: math.Log(0.7)}, []float64{0.7, 0.1, 0.1, 0.1}, true},
		{"hard", Response{Chosen: "tok3"}, []float64{0, 0, 0, 1}, false},
		{"rounding overshoot", Response{Chosen: "tok0", HasLogprob: true, Logprob: 0,
			Top: []TokenLogprob{{"tok0", 0}, {"tok1", math.Log(0.25)}}}, []float64{0.8, 0.2, 0, 0}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := make([]float64, 4)
			soft := softTarget(tc.r, m, q)
			if soft != tc.soft {
				t.Errorf("soft = %v", soft)
			}
			for i := range q {
				if math.Abs(q[i]-tc.want[i]) > 1e-12 {
					t.Fatalf("q = %v, want %v", q, tc.want)
				}
			}
		})
	}
}

func TestMeasureUtility(t *testing.T) {
	raw := []Response{{Chosen: "a", HasLogprob: true, Logprob: -0.1, Top: []TokenLogprob{{"a", -0.1}, {"b", -2.5}}}}
	same := measureUtility(raw, raw)
	if same.dLogprob != 0 || same.top1Change != 0 || same.kl != 0 || same.altsKept != 1 || same.removed != "" {
		t.Errorf("identical answers: %+v", same)
	}
	swapped := measureUtility(raw, []Response{{Chosen: "a", HasLogprob: true, Logprob: -0.3, Top: []TokenLogprob{{"a", -0.3}, {"b", -0.2}}}})
	if math.Abs(swapped.dLogprob-0.2) > 1e-12 || swapped.top1Change != 1 || swapped.kl <= 0 {
		t.Errorf("swapped: %+v", swapped)
	}
	stripped := measureUtility(raw, []Response{{Chosen: "a"}})
	if !math.IsNaN(stripped.dLogprob) || stripped.removed != "all logprobs" || stripped.altsKept != 0 {
		t.Errorf("stripped: %+v", stripped)
	}
}

func TestProgressPlainLines(t *testing.T) {
	var b bytes.Buffer
	p := NewProgress(&b, false)
	task := p.Start("carlini", 10)
	for range 10 {
		task.Add(1)
	}
	task.Done("3 tables")
	p.Close()
	want := "carlini: 10% (1/10)\ncarlini: 20% (2/10)\ncarlini: 30% (3/10)\ncarlini: 40% (4/10)\ncarlini: 50% (5/10)\n" +
		"carlini: 60% (6/10)\ncarlini: 70% (7/10)\ncarlini: 80% (8/10)\ncarlini: 90% (9/10)\ncarlini: done — 3 tables\n"
	if b.String() != want {
		t.Errorf("plain output:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestProgressTerminalBar(t *testing.T) {
	var b bytes.Buffer
	p := NewProgress(&b, true)
	task := p.Start("tramer", 4)
	task.Add(2) // the first update always draws
	task.Done("ok")
	p.Close()
	out := b.String()
	for _, want := range []string{"tramer [##########..........]  50%", "\r", "tramer: done — ok\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("terminal output %q lacks %q", out, want)
		}
	}
	// A nil task (no display) ignores calls.
	var nt *Task
	nt.Grow(1)
	nt.Add(1)
	nt.Done("x")
}
