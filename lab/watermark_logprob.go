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
		return watermark.ParseChatLogprobs(&b)
	}
	ref, err := answers(func(x, dst []float64) { m.logits(x, dst); softmaxInPlace(dst) })
	if err != nil {
		return nil, nil, err
	}
	score := func(susp []watermark.LogprobPosition, n int, withRef bool, k *watermark.Key) (watermark.LogprobResult, error) {
		var r []watermark.LogprobPosition
		if withRef {
			r = ref[:n]
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
	t1 := Table{Title: fmt.Sprintf("Logprob watermark (amplitude %.2g nats): p-value of a soft-label student, with the provider's reference answers", p.Amplitude),
		Header: []string{"harvested responses"}}
	t2 := Table{Title: "Logprob watermark without a reference (the suspect's own logprobs only)", Header: []string{"harvested responses"}}
	for _, n := range p.Probes {
		t1.Header = append(t1.Header, fmt.Sprintf("%d probes", n))
		t2.Header = append(t2.Header, fmt.Sprintf("%d probes", n))
	}
	var lastSusp []watermark.LogprobPosition
	var lastRes, lastNoRef watermark.LogprobResult
	for _, h := range p.Harvests {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		susp, err := student(h, qm)
		if err != nil {
			return nil, nil, err
		}
		row1, row2 := []string{itoa(h)}, []string{itoa(h)}
		for _, n := range p.Probes {
			r1, err := score(susp, n, true, key)
			if err != nil {
				return nil, nil, err
			}
			r2, err := score(susp, n, false, key)
			if err != nil {
				return nil, nil, err
			}
			row1, row2 = append(row1, cell(r1)), append(row2, cell(r2))
			lastRes, lastNoRef = r1, r2
		}
		t1.Rows, t2.Rows = append(t1.Rows, row1), append(t2.Rows, row2)
		lastSusp = susp
	}
	t1.Notes = []string{"p: the conservative Rademacher tail bound of `LogprobSample.Score` (min of Hoeffding and Bentkus-Dzindzalieta); z: the standardised statistic."}
	t2.Notes = []string{"Without the reference, each token's own slope along the key's projection is noise that more probes do not average away (it grows with the probes as the signal does)."}

	// Amplitude curve at the largest harvest and probe count.
	tA := Table{Title: fmt.Sprintf("Logprob watermark: p-value against amplitude (%d harvested, %d probes)", maxH, maxP),
		Header: []string{"amplitude (nats)", "with reference", "without reference", "mean |Δ| chosen token", "mean |Δ| alternatives"}}
	var amps []float64
	for _, a := range []float64{p.Amplitude / 4, p.Amplitude / 2, p.Amplitude, p.Amplitude * 1.5} {
		if a <= watermark.MaxAmplitude {
			amps = append(amps, a)
		}
	}
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
		r1, err := score(susp, maxP, true, key)
		if err != nil {
			return nil, nil, err
		}
		r2, err := score(susp, maxP, false, key)
		if err != nil {
			return nil, nil, err
		}
		tA.Rows = append(tA.Rows, []string{fmt.Sprintf("%.3g", a), cell(r1), cell(r2),
			fmt.Sprintf("%.4f", c.chosen/float64(max(c.nc, 1))), fmt.Sprintf("%.4f", c.alts/float64(max(c.na, 1)))})
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
		for _, withRef := range []bool{true, false} {
			below, minP := 0, 1.0
			for _, k := range decoys {
				r, err := score(c.susp, maxP, withRef, k)
				if err != nil {
					return nil, nil, err
				}
				if r.PValue < 0.01 {
					below++
				}
				minP = math.Min(minP, r.PValue)
			}
			t3.Rows = append(t3.Rows, []string{c.name, fmt.Sprint(withRef), fmt.Sprintf("%d / %d", below, len(decoys)),
				fmtPct(1 - float64(below)/float64(len(decoys))), fmtSci(minP)})
		}
	}
	trueOnPlain, err := score(plainSusp, maxP, true, key)
	if err != nil {
		return nil, nil, err
	}
	t3.Notes = []string{
		fmt.Sprintf("The provider's key on the unmarked student (with reference): p = %s.", fmtSci(trueOnPlain.PValue)),
		"The p-value is a tail bound that holds for any suspect (the key's token signs are fair coins independent of everything else under the null), so P(p < 0.01) <= 1% by construction; the decoys check it.",
		fmt.Sprintf("Honest-user cost at amplitude %.2g: mean |Δ logprob| %.4f for the chosen token, %.4f for the %d alternatives (after rounding).",
			p.Amplitude, costA.chosen/float64(max(costA.nc, 1)), costA.alts/float64(max(costA.na, 1)), costA.na),
	}
	findings := []string{fmt.Sprintf("A softmax-regression student of %d marked soft labels is identified from %d probes at p = %s with the provider's reference answers (z %.1f), p = %s without (z %.1f); an unmarked student gives p = %s for the same key.",
		maxH, maxP, fmtSci(lastRes.PValue), lastRes.Z, fmtSci(lastNoRef.PValue), lastNoRef.Z, fmtSci(trueOnPlain.PValue))}
	return []Table{t1, t2, tA, t3}, findings, nil
}
