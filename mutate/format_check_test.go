package mutate

import (
	"encoding/json"
	"math"
	"reflect"
	"slices"
	"testing"
)

// formatSpec names the members that carry distributions in one format's
// documents, for checking a rewritten document against its input without
// the code under test: everything but those values must decode equal (after
// cutting alternatives), and the values must obey the policy.
type formatSpec struct {
	values map[string]bool   // members holding a logprob or probability
	probs  map[string]bool   // the subset holding probabilities
	alts   map[string]string // members holding alternatives -> key of the array their object sits in ("" any)
	strip  func(doc any)     // StripLogprobs' effect on a decoded input
}

func specOf(f Format) formatSpec {
	switch f {
	case FormatGemini:
		return formatSpec{
			values: map[string]bool{"logProbability": true, "avgLogprobs": true, "logProbabilitySum": true},
			alts:   map[string]string{"candidates": "topCandidates"},
			strip: func(doc any) {
				eachObject(doc, func(key string, m map[string]any) {
					if key == "candidates" {
						deleteLive(m, "logprobsResult")
						deleteLive(m, "avgLogprobs")
					}
				})
			},
		}
	case FormatTGI:
		return formatSpec{
			values: map[string]bool{"logprob": true},
			alts:   map[string]string{"top_tokens": ""},
			strip: func(doc any) {
				eachObject(doc, func(key string, m map[string]any) {
					if key == "token" || key == "tokens" || key == "prefill" {
						if _, ok := m["logprob"]; ok {
							m["logprob"] = nil
						}
					}
					if _, ok := m["top_tokens"].([]any); ok {
						m["top_tokens"] = []any{}
					}
				})
			},
		}
	case FormatLlamaCpp:
		return formatSpec{
			values: map[string]bool{"logprob": true, "prob": true},
			probs:  map[string]bool{"prob": true},
			alts:   map[string]string{"top_logprobs": "", "top_probs": "", "probs": ""},
			strip: func(doc any) {
				if a, ok := doc.([]any); ok {
					for _, el := range a {
						if m, ok := el.(map[string]any); ok {
							deleteLive(m, "completion_probabilities")
						}
					}
					return
				}
				deleteLive(doc.(map[string]any), "completion_probabilities")
			},
		}
	case FormatOllama:
		return formatSpec{
			values: map[string]bool{"logprob": true},
			alts:   map[string]string{"top_logprobs": ""},
			strip:  func(doc any) { deleteLive(doc.(map[string]any), "logprobs") },
		}
	case FormatAnthropic:
		return formatSpec{strip: func(any) {}}
	}
	return formatSpec{values: map[string]bool{"logprob": true}} // OpenAI: structure checked by property_test.go
}

// deleteLive deletes member k unless it is null (a null carries nothing
// and is left as sent).
func deleteLive(m map[string]any, k string) {
	if v, ok := m[k]; ok && v != nil {
		delete(m, k)
	}
}

// eachObject calls fn for every object in v with the key it sits under
// (the member name, or the name of the array holding it).
func eachObject(v any, fn func(key string, m map[string]any)) {
	var walk func(v any, key string)
	walk = func(v any, key string) {
		switch x := v.(type) {
		case map[string]any:
			fn(key, x)
			for k, y := range x {
				walk(y, k)
			}
		case []any:
			for _, y := range x {
				walk(y, key)
			}
		}
	}
	walk(v, "")
}

// valueCheck collects the rewritten values: every value, and each
// alternatives array's values in order.
type valueCheck struct {
	vals   []float64
	isProb []bool
	groups [][]float64
}

// normalize zeroes the distribution values of v (recording them in rec)
// and, with cut, keeps the first k alternatives of each array.
func normalize(v any, key string, sp *formatSpec, k int, cut bool, rec *valueCheck) any {
	switch x := v.(type) {
	case map[string]any:
		for mk, y := range x {
			if sp.values[mk] {
				if f, ok := y.(float64); ok {
					rec.vals = append(rec.vals, f)
					rec.isProb = append(rec.isProb, sp.probs[mk])
					x[mk] = 0.0
				}
				continue
			}
			if want, ok := sp.alts[mk]; ok && (want == "" || want == key) {
				if arr, ok := y.([]any); ok {
					x[mk] = normAlts(arr, mk, sp, k, cut, rec)
					continue
				}
			}
			x[mk] = normalize(y, mk, sp, k, cut, rec)
		}
		return x
	case []any:
		for i := range x {
			x[i] = normalize(x[i], key, sp, k, cut, rec)
		}
		return x
	}
	return v
}

// normAlts normalizes an alternatives array (or an array of them, TGI's
// details.top_tokens).
func normAlts(arr []any, key string, sp *formatSpec, k int, cut bool, rec *valueCheck) []any {
	nested := len(arr) > 0 // no element is an object: an array of arrays (or nulls)
	for _, el := range arr {
		if _, ok := el.(map[string]any); ok {
			nested = false
		}
	}
	if nested {
		for i := range arr {
			if inner, ok := arr[i].([]any); ok {
				arr[i] = normAlts(inner, key, sp, k, cut, rec)
			}
		}
		return arr
	}
	if cut && k >= 0 && len(arr) > k {
		arr = arr[:k]
	}
	var g []float64
	for i := range arr {
		n := len(rec.vals)
		arr[i] = normalize(arr[i], key, sp, k, cut, rec)
		if len(rec.vals) > n {
			g = append(g, rec.vals[n])
		}
	}
	rec.groups = append(rec.groups, g)
	return arr
}

// checkFormatDoc checks one rewritten document of format f against its
// input under policy p.
func checkFormatDoc(t *testing.T, f Format, p OutputPolicy, in, out []byte) {
	t.Helper()
	var vin, vout any
	if err := json.Unmarshal(in, &vin); err != nil {
		t.Fatalf("input: %v", err)
	}
	if err := json.Unmarshal(out, &vout); err != nil {
		t.Fatalf("output not JSON: %v\n%s", err, out)
	}
	sp := specOf(f)
	if p.StripLogprobs && !f.isOpenAI() {
		sp.strip(vin)
		if !reflect.DeepEqual(vin, vout) {
			a, _ := json.Marshal(vin)
			t.Fatalf("strip: output differs from the input without its distributions:\nwant %s\ngot  %s", a, out)
		}
		return
	}
	var rin, rout valueCheck
	nin := normalize(vin, "", &sp, p.MaxAlternatives, true, &rin)
	nout := normalize(vout, "", &sp, p.MaxAlternatives, false, &rout)
	if !f.isOpenAI() && !reflect.DeepEqual(nin, nout) {
		a, _ := json.Marshal(nin)
		b, _ := json.Marshal(nout)
		t.Fatalf("fields other than distribution values differ:\nin  %s\nout %s", a, b)
	}
	numeric := p.Perturb != 0 || p.RoundDecimals >= 0
	// Map order is random: compare the values as sorted lists.
	slices.Sort(rin.vals)
	slices.Sort(rout.vals)
	if !f.isOpenAI() && !numeric && !reflect.DeepEqual(rin.vals, rout.vals) {
		t.Fatalf("values changed without rounding or noise:\n%v\n%v", rin.vals, rout.vals)
	}
	for i, v := range rout.vals {
		if i < len(rout.isProb) && rout.isProb[i] {
			if v < 0 || v > 1 {
				t.Fatalf("probability %v outside [0, 1]", v)
			}
		} else if v > 0 {
			t.Fatalf("logprob %v > 0", v)
		}
		if k := p.RoundDecimals; k >= 0 {
			y := v * math.Pow10(k)
			if math.Abs(y-math.Round(y)) > 1e-6*math.Max(1, math.Abs(y)) {
				t.Fatalf("%v not rounded to %d decimals", v, k)
			}
		}
	}
	for _, g := range rout.groups {
		if k := p.MaxAlternatives; k >= 0 && len(g) > k {
			t.Fatalf("%d alternatives kept, cap %d", len(g), k)
		}
		for j := 1; j < len(g); j++ {
			if g[j] > g[j-1] {
				t.Fatalf("ranking not kept: %v", g)
			}
		}
	}
}
