package mutate

import (
	"bytes"
	"strconv"
)

// RewriteRequest appends the body rewritten by p to dst and reports whether
// anything changed. Untouched bytes are copied through.
//
// It caps top_logprobs, the integer logprobs of legacy completions and
// vLLM's prompt_logprobs at p.MaxTopLogprobs, caps n and best_of at p.MaxN,
// removes logit_bias (always with p.DropLogitBias; with
// p.DropLogitBiasWithLogprobs when the body asks for logprobs in any form,
// judged on the body as sent), and with p.StripLogprobs removes logprobs,
// top_logprobs and prompt_logprobs and the include value
// "message.output_text.logprobs". Only top-level members are considered,
// matched by their raw name bytes (as the response side matches them).
// A removed member goes with its comma; a capped number is replaced in
// place. When the body is not a JSON object it is appended unchanged with
// an error wrapping ErrNotJSON.
func RewriteRequest(dst, body []byte, p RequestPolicy) ([]byte, bool, error) {
	if p.IsNoop() {
		return append(dst, body...), false, nil
	}
	var buf [16]member
	ms, open, close, err := scanTop(body, buf[:0])
	if err != nil {
		return append(dst, body...), false, notJSON(err)
	}
	var r requestRewriter
	r.reset(body)
	r.rewrite(ms, p)
	d := r.dropper()
	for _, m := range ms {
		d.item(m.s, m.e, m.keep)
	}
	d.done(open, close)
	out, changed := r.apply(dst)
	return out, changed, nil
}

// requestRewriter holds the patches of one request body.
type requestRewriter struct {
	patchList
}

// rewrite decides, member by member, what p keeps, caps and removes: it
// patches the capped values and sets keep.
func (r *requestRewriter) rewrite(ms []member, p RequestPolicy) {
	body := r.doc
	asks := false
	for _, m := range ms {
		v := body[m.vs:m.e]
		switch string(body[m.ks:m.ke]) {
		case "logprobs":
			asks = asks || string(v) == "true" || isNumberStart(v)
		case "top_logprobs":
			n, ok := jsonNumber(v)
			asks = asks || ok && n > 0
		case "prompt_logprobs":
			asks = asks || isNumberStart(v)
		case "include":
			asks = asks || bytes.Contains(v, []byte(`"`+respLogprobsInclude+`"`))
		}
	}
	dropBias := p.DropLogitBias || p.DropLogitBiasWithLogprobs && asks
	for i := range ms {
		m := &ms[i]
		m.keep = true
		switch string(body[m.ks:m.ke]) {
		case "logit_bias":
			m.keep = !dropBias
		case "logprobs", "top_logprobs", "prompt_logprobs":
			m.keep = !p.StripLogprobs
		}
	}
	for _, m := range ms {
		if !m.keep {
			continue
		}
		v := body[m.vs:m.e]
		switch string(body[m.ks:m.ke]) {
		case "logprobs", "top_logprobs", "prompt_logprobs":
			if p.MaxTopLogprobs >= 0 {
				r.capNumber(m.vs, m.e, p.MaxTopLogprobs)
			}
		case "n", "best_of":
			if p.MaxN > 0 {
				r.capNumber(m.vs, m.e, p.MaxN)
			}
		case "include":
			if p.StripLogprobs && len(v) > 0 && v[0] == '[' {
				r.dropIncludeLogprobs(m.vs)
			}
		}
	}
}

// capNumber replaces the number at vs:ve with limit when it is larger.
func (r *requestRewriter) capNumber(vs, ve int, limit int) {
	n, ok := jsonNumber(r.doc[vs:ve])
	if !ok || n <= float64(limit) {
		return
	}
	r.replace(vs, ve, strconv.Itoa(limit))
}

// dropIncludeLogprobs removes "message.output_text.logprobs" from the
// (validated) include array at off.
func (r *requestRewriter) dropIncludeLogprobs(off int) {
	t := scanner{b: r.doc, i: off}
	d := r.dropper()
	empty, _ := t.arrayBegin()
	for !empty {
		vs := t.i
		_ = t.skipValue(2) // validated
		d.item(vs, t.i, string(t.b[vs:t.i]) != `"`+respLogprobsInclude+`"`)
		if more, _ := t.arrayNext(); !more {
			break
		}
	}
	d.done(off, t.i-1)
}
