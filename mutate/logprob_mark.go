package mutate

import (
	"bytes"

	"github.com/distillguard/distillguard/watermark"
)

// LogprobShifter is the logprob watermark as the Rewriter applies it:
// Shift returns the marked value of alternative v of token (decoded text)
// at one position, first for the most likely alternative. It runs on the
// values after the perturbation and before rounding and the cut to
// MaxAlternatives, so the mark's amplitude is part of the output's
// perturbation budget and survives the rounding that follows.
type LogprobShifter interface {
	Shift(token []byte, v float64, first bool) float64
}

// WithLogprobShift marks the alternatives of Chat Completions and
// Responses API logprob entries (entries.go) with s. The values of those
// entries are then always rewritten (rounded to RoundDecimals when it is
// set, else printed in full). Nil: no mark.
func WithLogprobShift(s LogprobShifter) RewriterOption {
	return func(r *Rewriter) {
		if s == nil {
			return
		}
		r.shift = s
		r.numLP, r.touchLP = true, true
	}
}

// shiftEntry marks the alternatives of the entry just collected (their
// out values, perturbed or not) and returns the sampled token's value:
// that of its own alternative when it is listed, else cout unchanged.
// Each shifted value is clamped to the one ranked above it, so the order
// the API promises survives (watermark.Shifter.ShiftTop does the same).
func (r *Rewriter) shiftEntry(tok span, cv, cout float64, cok bool) float64 {
	b := r.s.b
	for gi, g := range r.groups {
		alts := r.alts[g.lo:g.hi]
		if r.p.Perturb == 0 {
			r.parseAlts(alts)
			for j := range alts {
				alts[j].out = alts[j].v
			}
		}
		prev := 0.0
		for j := range alts {
			a := &alts[j]
			if !a.ok {
				continue
			}
			var t []byte
			if a.tok.s >= 0 {
				t = r.decodeTok(b[a.tok.s:a.tok.e])
			}
			v := r.shift.Shift(t, a.out, j == 0)
			if j > 0 {
				v = min(v, prev)
			}
			a.out, prev = v, v
		}
		if gi == len(r.groups)-1 && cok {
			if k := r.sameToken(tok, alts); k >= 0 && (r.p.Perturb != 0 || alts[k].v == cv) {
				cout = alts[k].out
			}
		}
	}
	return cout
}

// decodeTok returns the decoded token of raw string content (raw itself
// when it has no escapes).
func (r *Rewriter) decodeTok(raw []byte) []byte {
	if bytes.IndexByte(raw, '\\') < 0 {
		return raw
	}
	r.tokBuf, _ = appendUnescaped(r.tokBuf[:0], raw)
	return r.tokBuf
}

// LogprobMark applies a watermark.LogprobMark in the context of one
// request's prompt: the signal h is computed once from the prompt
// (watermark.Shifter.TextContext), so every position of the response
// carries the same input-dependent shift that a probe of a student shows
// (watermark/logprob.go). One per response; not safe for concurrent use.
type LogprobMark struct {
	sh *watermark.Shifter
	h  float64
}

// NewLogprobMark returns the shifter of mark m for a request whose prompt
// is prompt (the text the verifier's probe contexts hold).
func NewLogprobMark(m *watermark.LogprobMark, prompt []byte) *LogprobMark {
	sh := m.NewShifter()
	return &LogprobMark{sh: sh, h: sh.TextContext(prompt)}
}

// Shift implements LogprobShifter.
func (l *LogprobMark) Shift(token []byte, v float64, first bool) float64 {
	return l.sh.Shift(l.h, token, v, first)
}
