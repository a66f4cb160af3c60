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
	mark, err := watermark.NewLogprobMark(key, p.Amplitude)
	if err != nil {
		return nil, nil, err
	}
	sh := mark.NewShifter()
	maxH, maxP := p.Harvests[len(p.Harvests)-1], p.Probes[len(p.Probes)-1]
	xs := gaussians(newRand(seed, 45), maxH, p.Dim)
	probes := gaussians(newRand(seed, 46), maxP, p.Dim)

	z := make([]float64, m.v)
	var dAbs float64
	var nAlt int
	// label is the soft target the attacker builds from one (marked or
	// raw) response, rounded to 2 decimals as the default policy returns it.
	label := func(x []float64, marked bool) []float64 {
		m.logits(x, z)
		logSoftmax(z)
		alts := topAlternatives(m, z)
		if marked {
			before := make([]float64, len(alts))
			for i := range alts {
				before[i] = alts[i].Logprob
			}
			sh.ShiftTop(alts)
			for i := 1; i < len(alts); i++ {
				dAbs += before[i] - alts[i].Logprob
				nAlt++
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
	qm, qp := make([][]float64, maxH), make([][]float64, maxH)
	for i, x := range xs {
		qm[i], qp[i] = label(x, true), label(x, false)
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
		ls, err := watermark.NewLogprobSample(susp[:n], r)
		if err != nil {
			return watermark.LogprobResult{}, err
		}
		return ls.Score(k), nil
	}

	t1 := Table{Title: fmt.Sprintf("Logprob watermark (amplitude %.2g nats): p-value of a soft-label student, with the provider's reference answers", p.Amplitude),
		Header: []string{"harvested responses"}}
	t2 := Table{Title: "Logprob watermark without a reference (the suspect's own logprobs only)", Header: []string{"harvested responses"}}
	for _, n := range p.Probes {
		t1.Header = append(t1.Header, fmt.Sprintf("%d probes", n))
		t2.Header = append(t2.Header, fmt.Sprintf("%d probes", n))
	}
	var lastSusp []watermark.LogprobPosition
	var lastRes watermark.LogprobResult
	for _, h := range p.Harvests {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		st := trainStudent(xs[:h], qm[:h], m.v, p.Epochs)
		susp, err := answers(st.probs)
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
			row1 = append(row1, fmt.Sprintf("%s (z %.1f)", fmtSci(r1.PValue), r1.Z))
			row2 = append(row2, fmt.Sprintf("%s (z %.1f)", fmtSci(r2.PValue), r2.Z))
			lastRes = r1
		}
		t1.Rows, t2.Rows = append(t1.Rows, row1), append(t2.Rows, row2)
		lastSusp = susp
	}
	plain := trainStudent(xs, qp, m.v, p.Epochs)
	plainSusp, err := answers(plain.probs)
	if err != nil {
		return nil, nil, err
	}
	decoys := decoyKeys(seed+1, p.Decoys)
	t3 := Table{Title: "Logprob watermark: false positives over decoy keys (p < 0.01)", Header: []string{"suspect", "reference", "p < 0.01", "share p >= 0.01"}}
	for _, c := range []struct {
		name string
		susp []watermark.LogprobPosition
	}{{fmt.Sprintf("student of %d unmarked soft labels", maxH), plainSusp}, {fmt.Sprintf("student of %d marked soft labels (other keys)", maxH), lastSusp}} {
		for _, withRef := range []bool{true, false} {
			below := 0
			for _, k := range decoys {
				r, err := score(c.susp, maxP, withRef, k)
				if err != nil {
					return nil, nil, err
				}
				if r.PValue < 0.01 {
					below++
				}
			}
			t3.Rows = append(t3.Rows, []string{c.name, fmt.Sprint(withRef), fmt.Sprintf("%d / %d", below, len(decoys)), fmtPct(1 - float64(below)/float64(len(decoys)))})
		}
	}
	trueOnPlain, err := score(plainSusp, maxP, true, key)
	if err != nil {
		return nil, nil, err
	}
	t3.Notes = []string{
		fmt.Sprintf("The provider's key on the unmarked student (with reference): p = %s.", fmtSci(trueOnPlain.PValue)),
		fmt.Sprintf("Honest-user cost of the mark: mean lowering of the %d non-first alternatives %.3f nats (at most %.2g); the first alternative never changes.",
			nAlt, dAbs/float64(max(nAlt, 1)), p.Amplitude),
	}
	findings := []string{fmt.Sprintf("A softmax-regression student of %d marked soft labels is identified from %d probes at p = %s (with reference answers); an unmarked student gives p = %s for the same key.",
		maxH, maxP, fmtSci(lastRes.PValue), fmtSci(trueOnPlain.PValue))}
	return []Table{t1, t2, t3}, findings, nil
}
