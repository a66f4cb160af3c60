package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"

	"github.com/distillguard/distillguard/watermark"
)

// chatLogprobJSON renders one position's alternatives as an OpenAI
// chat.completion with choices[0].logprobs.content[0].top_logprobs
// (https://platform.openai.com/docs/api-reference/chat/object), the form
// the verifier reads from a suspect endpoint.
func chatLogprobJSON(b *bytes.Buffer, top []watermark.TokenLogprob) error {
	type entry struct {
		Token       string                   `json:"token"`
		Logprob     float64                  `json:"logprob"`
		TopLogprobs []watermark.TokenLogprob `json:"top_logprobs"`
	}
	doc := map[string]any{
		"object": "chat.completion",
		"choices": []any{map[string]any{
			"index":    0,
			"message":  map[string]any{"role": "assistant", "content": top[0].Token},
			"logprobs": map[string]any{"content": []entry{{Token: top[0].Token, Logprob: top[0].Logprob, TopLogprobs: top}}},
		}},
	}
	enc, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	b.Write(enc)
	b.WriteByte('\n')
	return nil
}

// topAlternatives returns the 20 most likely tokens of a log-probability
// vector, most likely first.
func topAlternatives(m Model, lp []float64) []watermark.TokenLogprob {
	idx := topK(nil, lp, maxTopLogprobs)
	out := make([]watermark.TokenLogprob, len(idx))
	for i, id := range idx {
		out[i] = watermark.TokenLogprob{Token: m.Token(id), Logprob: lp[id]}
	}
	return out
}

func round2(v float64) float64 { return math.Round(v*100) / 100 }

func runLogprobWatermark(ctx context.Context, seed uint64, p LogprobWatermarkParams) ([]Table, []string, error) {
	m := newMLPModel(seed+7, p.Dim, p.Hidden, p.Vocab)
	key := labWatermarkKey(seed, 44)
	maxH, maxP := p.Harvests[len(p.Harvests)-1], p.Probes[len(p.Probes)-1]
	xs := gaussians(newRand(seed, 45), maxH, p.Dim)
	probes := gaussians(newRand(seed, 46), maxP, p.Dim)
	contexts := make([]watermark.ProbeContext, len(probes))
	for i, y := range probes {
		// The lab's prompts are records; the gateway's context signal
		// is the keyed projection of the record's features.
		contexts[i] = watermark.ProbeContext{Features: y}
	}

	z := make([]float64, m.v)
	// cost accumulates the honest-user cost of one amplitude's marking:
	// |delta| of the chosen token and of the alternatives, after the
	// 2-decimal rounding the policy applies to both.
	type cost struct {
		chosen, alts float64
		nc, na       int
	}
	// label is the soft target the attacker builds from one (marked or
	// raw) response, rounded to 2 decimals as the default policy returns it.
	label := func(x []float64, sh *watermark.Shifter, c *cost) []float64 {
		m.logits(x, z)
		logSoftmax(z)
		alts := topAlternatives(m, z)
		if sh != nil {
			before := make([]float64, len(alts))
			for i := range alts {
				before[i] = round2(alts[i].Logprob)
			}
			sh.ShiftTop(sh.VectorContext(x), alts)
			c.chosen += math.Abs(round2(alts[0].Logprob) - before[0])
			c.nc++
			for i := 1; i < len(alts); i++ {
				c.alts += math.Abs(round2(alts[i].Logprob) - before[i])
				c.na++
			}
		}
		resp := Response{Chosen: alts[0].Token, HasLogprob: true, Logprob: round2(alts[0].Logprob)}
		for _, a := range alts {
			resp.Top = append(resp.Top, TokenLogprob{Token: a.Token, Logprob: round2(a.Logprob)})
		}
		q := make([]float64, m.v)
		softTarget(resp, m, q)
		return q
	}
	labels := func(amp float64) ([][]float64, cost, error) {
		var c cost
		var sh *watermark.Shifter
		if amp > 0 {
			mark, err := watermark.NewLogprobMark(key, amp)
			if err != nil {
				return nil, c, err
			}
			sh = mark.NewShifter()
		}
		q := make([][]float64, maxH)
		for i, x := range xs {
			q[i] = label(x, sh, &c)
		}
		return q, c, nil
	}
	// answers: the top-20 of a model on every probe, through chat JSON.
	answers := func(probs func(x, dst []float64)) ([]watermark.LogprobPosition, error) {
		var b bytes.Buffer
		pr := make([]float64, m.v)
		for _, y := range probes {
			probs(y, pr)
			for i := range pr {
				pr[i] = math.Log(math.Max(pr[i], 1e-300))
			}
			if err := chatLogprobJSON(&b, topAlternatives(m, pr)); err != nil {
				return nil, err
			}
		}
		return watermark.ParseLogprobs(&b)
	}
	teacherRef, err := answers(func(x, dst []float64) { m.logits(x, dst); softmaxInPlace(dst) })
	if err != nil {
		return nil, nil, err
	}
	// The shadow reference: the provider distils its own unmarked model
	// into a student of its own, on inputs of its own (independent of the
	// attacker's), and uses that student's answers as the reference. It
	// removes what any student of that class gets wrong about the teacher,
	// which otherwise buries the mark; the test stays valid whatever the
	// shadow is (it does not depend on the key).
	// Queries cost the provider nothing, so the shadow learns from
	// ShadowFactor times the attacker's harvest: its own estimation error,
	// part of the test's noise, shrinks accordingly.
	nShadow := maxH * max(p.ShadowFactor, 1)
	shadowX := gaussians(newRand(seed, 47), nShadow, p.Dim)
	shadowQ := make([][]float64, nShadow)
	for i, x := range shadowX {
		shadowQ[i] = label(x, nil, nil)
	}
	shadow := trainStudent(shadowX, shadowQ, m.v, p.Epochs)
	shadowRef, err := answers(shadow.probs)
	if err != nil {
		return nil, nil, err
	}
	const (
		refNone = iota
		refTeacher
		refShadow
	)
	refName := [...]string{"none", "teacher", "shadow student"}
	score := func(susp []watermark.LogprobPosition, n int, kind int, k *watermark.Key) (watermark.LogprobResult, error) {
		var r []watermark.LogprobPosition
		switch kind {
		case refTeacher:
			r = teacherRef[:n]
		case refShadow:
			r = shadowRef[:n]
		}
		ls, err := watermark.NewLogprobSample(susp[:n], r, contexts)
		if err != nil {
			return watermark.LogprobResult{}, err
		}
		return ls.Score(k), nil
	}
	student := func(h int, q [][]float64) ([]watermark.LogprobPosition, error) {
		st := trainStudent(xs[:h], q[:h], m.v, p.Epochs)
		return answers(st.probs)
	}
	cell := func(r watermark.LogprobResult) string { return fmt.Sprintf("%s (z %.1f)", fmtSci(r.PValue), r.Z) }

	qm, costA, err := labels(p.Amplitude)
	if err != nil {
		return nil, nil, err
	}
	titles := [...]string{
		refNone:    "Logprob watermark without a reference (the suspect's own logprobs only)",
		refTeacher: fmt.Sprintf("Logprob watermark (amplitude %.2g nats): p-value of a soft-label student, reference = the provider's unmarked teacher on the probes", p.Amplitude),
		refShadow:  fmt.Sprintf("Logprob watermark (amplitude %.2g nats): p-value of a soft-label student, reference = the provider's own shadow student of its unmarked teacher", p.Amplitude),
	}
	var tabs [3]Table
	for kind := range tabs {
		tabs[kind] = Table{Title: titles[kind], Header: []string{"harvested responses"}}
		for _, n := range p.Probes {
			tabs[kind].Header = append(tabs[kind].Header, fmt.Sprintf("%d probes", n))
		}
	}
	var lastSusp []watermark.LogprobPosition
	var last [3]watermark.LogprobResult
	for _, h := range p.Harvests {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		susp, err := student(h, qm)
		if err != nil {
			return nil, nil, err
		}
		for kind := range tabs {
			row := []string{itoa(h)}
			for _, n := range p.Probes {
				r, err := score(susp, n, kind, key)
				if err != nil {
					return nil, nil, err
				}
				row = append(row, cell(r))
				last[kind] = r
			}
			tabs[kind].Rows = append(tabs[kind].Rows, row)
		}
		lastSusp = susp
	}
	tabs[refTeacher].Notes = []string{"p: the conservative Rademacher tail bound of `LogprobSample.Score` (min of Hoeffding and Bentkus-Dzindzalieta); z: the standardised statistic.",
		"With the teacher as reference, the residual is the mark plus everything the linear student gets wrong about the teacher (about 0.9 nats RMS per alternative, against a learned mark of about 0.05 nats), and part of that error is a smooth function of the input that correlates with the key's projection per token."}
	tabs[refShadow].Notes = []string{fmt.Sprintf("The shadow is a softmax regression the provider trains on its own teacher's unmarked soft labels for %d inputs of its own (independent of the attacker's); it assumes the suspect's model class, which only the power depends on, never the validity.", nShadow)}
	tabs[refNone].Notes = []string{"Without a reference, each token's own slope along the key's projection is noise that more probes do not average away."}

	// Amplitude curve at the largest harvest and probe count.
	tA := Table{Title: fmt.Sprintf("Logprob watermark: p-value against amplitude (%d harvested, %d probes)", maxH, maxP),
		Header: []string{"amplitude (nats)", "reference: teacher", "reference: shadow student", "no reference", "mean |Δ| chosen token", "mean |Δ| alternatives"}}
	amps := p.Amplitudes
	for _, a := range amps {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		susp, c := lastSusp, costA
		if a != p.Amplitude {
			var q [][]float64
			if q, c, err = labels(a); err != nil {
				return nil, nil, err
			}
			if susp, err = student(maxH, q); err != nil {
				return nil, nil, err
			}
		}
		row := []string{fmt.Sprintf("%.3g", a)}
		for _, kind := range []int{refTeacher, refShadow, refNone} {
			r, err := score(susp, maxP, kind, key)
			if err != nil {
				return nil, nil, err
			}
			row = append(row, cell(r))
		}
		tA.Rows = append(tA.Rows, append(row,
			fmt.Sprintf("%.4f", c.chosen/float64(max(c.nc, 1))), fmt.Sprintf("%.4f", c.alts/float64(max(c.na, 1)))))
	}
	tA.Notes = []string{"Cost: the attacker-visible change of each returned value after 2-decimal rounding, marked vs unmarked, over the harvested responses; the chosen (first) token is never moved."}

	qp, _, err := labels(0)
	if err != nil {
		return nil, nil, err
	}
	plainSusp, err := student(maxH, qp)
	if err != nil {
		return nil, nil, err
	}
	decoys := decoyKeys(seed+1, p.Decoys)
	t3 := Table{Title: "Logprob watermark: false positives over decoy keys (p < 0.01)", Header: []string{"suspect", "reference", "p < 0.01", "share p >= 0.01", "smallest p"}}
	for _, c := range []struct {
		name string
		susp []watermark.LogprobPosition
	}{{fmt.Sprintf("student of %d unmarked soft labels", maxH), plainSusp}, {fmt.Sprintf("student of %d marked soft labels (other keys)", maxH), lastSusp}} {
		for _, kind := range []int{refTeacher, refShadow, refNone} {
			below, minP := 0, 1.0
			for _, k := range decoys {
				r, err := score(c.susp, maxP, kind, k)
				if err != nil {
					return nil, nil, err
				}
				if r.PValue < 0.01 {
					below++
				}
				minP = math.Min(minP, r.PValue)
			}
			t3.Rows = append(t3.Rows, []string{c.name, refName[kind], fmt.Sprintf("%d / %d", below, len(decoys)),
				fmtPct(1 - float64(below)/float64(len(decoys))), fmtSci(minP)})
		}
	}
	var trueOnPlain [3]watermark.LogprobResult
	for kind := range trueOnPlain {
		if trueOnPlain[kind], err = score(plainSusp, maxP, kind, key); err != nil {
			return nil, nil, err
		}
	}
	t3.Notes = []string{
		fmt.Sprintf("The provider's key on the unmarked student: p = %s (teacher reference), %s (shadow reference), %s (none).",
			fmtSci(trueOnPlain[refTeacher].PValue), fmtSci(trueOnPlain[refShadow].PValue), fmtSci(trueOnPlain[refNone].PValue)),
		"The p-value is a tail bound that holds for any suspect (the key's token signs are fair coins independent of everything else under the null), so P(p < 0.01) <= 1% by construction; the decoys check it.",
		fmt.Sprintf("Honest-user cost at amplitude %.2g: mean |Δ logprob| %.4f for the chosen token, %.4f for the %d alternatives (after rounding).",
			p.Amplitude, costA.chosen/float64(max(costA.nc, 1)), costA.alts/float64(max(costA.na, 1)), costA.na),
	}
	findings := []string{fmt.Sprintf("Logprob mark at %.2g nats: a softmax-regression student of %d marked soft labels, %d probes: p = %s (z %.1f) with the provider's shadow student as reference, p = %s (z %.1f) with the teacher as reference, p = %s (z %.1f) with none; an unmarked student gives p = %s (shadow reference) for the same key.",
		p.Amplitude, maxH, maxP, fmtSci(last[refShadow].PValue), last[refShadow].Z, fmtSci(last[refTeacher].PValue), last[refTeacher].Z,
		fmtSci(last[refNone].PValue), last[refNone].Z, fmtSci(trueOnPlain[refShadow].PValue))}
	return []Table{tabs[refShadow], tabs[refTeacher], tabs[refNone], tA, t3}, findings, nil
}
