package watermark

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
)

// Logprob signal frequency range (cycles over the unit phase interval).
const (
	minFreq = 4
	maxFreq = 32
	// spectrumMax is the highest frequency the verifier's spectrum covers.
	spectrumMax = 64
)

// MaxAmplitude bounds the logprob signal, in nats.
const MaxAmplitude = 1.0

// LogprobMark is the logprob watermark for soft-label harvesters, after
// DRW (Zhao et al., "Distillation-Resistant Watermarking for Model
// Protection in NLP", Findings of EMNLP 2022) and GINSEW (Zhao et al., ICML
// 2023): a keyed periodic signal added to the probabilities a client sees,
// which a student trained on them inherits and a periodogram at the key's
// frequency reveals. DRW draws the phase from a keyed projection of an
// input token; a gateway sees only the returned tokens, so here the phase
// is a keyed PRF of the alternative's token text, g(w) in [0, 1), and every
// returned alternative except the first (most likely) one is lowered by
//
//	A (1 + cos(2 pi f g(w))) / 2   in [0, A] nats,
//
// with f a key-derived integer frequency. Lowering only (never raising) and
// leaving the first entry alone keeps every value <= 0 and the chosen
// (most likely) token first, the invariants mutate's perturbation keeps.
// A student of any architecture can learn the signal (it is a fixed
// function of the output token), and it needs no knowledge of the
// attacker's prompts to verify. Immutable and safe for concurrent use;
// each response stream takes a Shifter.
type LogprobMark struct {
	key *Key
	amp float64
}

// NewLogprobMark returns the mark of key k with amplitude amp nats
// (0 < amp <= MaxAmplitude; DRW used 0.2 in probability space, 0.1-0.3
// nats keeps the honest-user cost near mutate's perturbation).
func NewLogprobMark(k *Key, amp float64) (*LogprobMark, error) {
	if !(amp > 0 && amp <= MaxAmplitude) {
		return nil, fmt.Errorf("watermark: logprob amplitude %g outside (0, %g]", amp, MaxAmplitude)
	}
	return &LogprobMark{key: k, amp: amp}, nil
}

// Frequency is the key's signal frequency.
func (m *LogprobMark) Frequency() int { return m.key.freq }

// Amplitude is the signal's amplitude in nats.
func (m *LogprobMark) Amplitude() float64 { return m.amp }

// NewShifter returns the per-stream state for Shift (PRF scratch space).
func (m *LogprobMark) NewShifter() *Shifter {
	return &Shifter{m: m, p: prf{block: m.key.lpBlock, macKey: m.key.lpMAC}}
}

// Shifter applies a LogprobMark. Its output depends only on the key, the
// amplitude and its arguments, never on earlier calls. Not safe for
// concurrent use.
type Shifter struct {
	m *LogprobMark
	p prf
}

// Phase is the token's keyed phase g(w) in [0, 1).
func (s *Shifter) Phase(token []byte) float64 { return phase(&s.p, token) }

func phase(p *prf, token []byte) float64 { return phaseOf(p.sum64(token)) }

func phaseOf(u uint64) float64 { return float64(u>>11) * (1.0 / (1 << 53)) }

// Delta is the signal for token: -A (1 + cos(2 pi f g(w))) / 2, in [-A, 0].
func (s *Shifter) Delta(token []byte) float64 {
	return -s.m.amp * (1 + math.Cos(2*math.Pi*float64(s.m.key.freq)*s.Phase(token))) / 2
}

// Shift returns the marked value of logprob v for token: v itself for the
// first (most likely) alternative of a position (first = true), otherwise
// v + Delta(token), clamped to <= 0. A caller rewriting a top_logprobs
// array in place must also keep it sorted (ShiftTop does both); the
// chosen token's own "logprob" takes the value of its entry in the array.
func (s *Shifter) Shift(token []byte, v float64, first bool) float64 {
	if first {
		return v
	}
	return math.Min(v+s.Delta(token), 0)
}

// TokenLogprob is one returned alternative.
type TokenLogprob struct {
	Token   string  `json:"token"`
	Logprob float64 `json:"logprob"`
}

// ShiftTop marks one position's alternatives, given most likely first as
// the API returns them: the first is unchanged, every other one is shifted
// and clamped to the value ranked above it, so the order survives.
func (s *Shifter) ShiftTop(alts []TokenLogprob) {
	for i := 1; i < len(alts); i++ {
		d := -s.m.amp * (1 + math.Cos(2*math.Pi*float64(s.m.key.freq)*phaseOf(s.p.sum64s(alts[i].Token)))) / 2
		alts[i].Logprob = math.Min(math.Min(alts[i].Logprob+d, 0), alts[i-1].Logprob)
	}
}

// LogprobPosition is one token position of a response with its returned
// alternatives (choices[].logprobs.content[].top_logprobs of an OpenAI chat
// completion), most likely first.
type LogprobPosition struct {
	Probe int // which response (one per choice of each line of the input)
	Index int // position in the response
	Top   []TokenLogprob
}

// ParseChatLogprobs reads chat.completion objects, one a line (JSONL), and
// returns every position that carries top_logprobs. Each choice of each
// line is one probe, numbered in order. Lines that are empty are skipped; a
// line that is not a JSON object is an error naming it.
// (https://platform.openai.com/docs/api-reference/chat/object)
func ParseChatLogprobs(r io.Reader) ([]LogprobPosition, error) {
	type choice struct {
		Logprobs *struct {
			Content []struct {
				Token       string         `json:"token"`
				Logprob     float64        `json:"logprob"`
				TopLogprobs []TokenLogprob `json:"top_logprobs"`
			} `json:"content"`
		} `json:"logprobs"`
	}
	var out []LogprobPosition
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLineBytes)
	probe, line := 0, 0
	for sc.Scan() {
		line++
		b := trimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var doc struct {
			Choices []choice `json:"choices"`
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		for _, c := range doc.Choices {
			if c.Logprobs != nil {
				for i, e := range c.Logprobs.Content {
					if len(e.TopLogprobs) > 0 {
						out = append(out, LogprobPosition{Probe: probe, Index: i, Top: e.TopLogprobs})
					}
				}
			}
			probe++
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("line %d: %w", line+1, err)
	}
	return out, nil
}

// maxLineBytes bounds one input line.
const maxLineBytes = 64 << 20

// LogprobResult is the spectral test of a suspect's logprobs against a key.
type LogprobResult struct {
	KeyID     string `json:"key_id"`
	Frequency int    `json:"frequency"`
	Probes    int    `json:"probes"`
	Positions int    `json:"positions"`
	// Candidates is the number of distinct tokens scored (each a point of
	// the periodogram); Observations the alternatives behind them.
	Candidates   int  `json:"candidates"`
	Observations int  `json:"observations"`
	Reference    bool `json:"reference"`
	// Z is the matched-filter statistic: the tokens' mean residuals
	// projected on -cos(2 pi f g(w)), standardised under the null.
	Z float64 `json:"z"`
	// PValue is the one-sided p-value of Z.
	PValue float64 `json:"p_value"`
	// Power is the normalised periodogram at the key's frequency, and
	// PowerPValue its p-value exp(-Power) (DRW's phase-free test).
	Power       float64 `json:"power"`
	PowerPValue float64 `json:"power_p_value"`
	// PeakRatio is Power over the mean power at the other frequencies
	// 1..64, and Rank the key frequency's rank among them (1 = highest);
	// ScoreSpectrum fills them.
	PeakRatio float64 `json:"peak_ratio,omitempty"`
	Rank      int     `json:"rank,omitempty"`
}

// ErrNoLogprobs is returned when the input holds no alternatives to score.
var ErrNoLogprobs = errors.New("watermark: no top_logprobs alternatives to score")

type tokenStat struct {
	sum float64
	n   int
}

// LogprobSample holds a suspect's per-token mean logprob levels: for every
// alternative after the first, its logprob minus the position's first one,
// or, with a reference (the provider's own unmarked answers to the same
// probes), its logprob minus the reference's logprob for the same token at
// the same probe and position. The reference removes the tokens' natural
// levels, which otherwise are the noise of the test.
type LogprobSample struct {
	tokens    []string
	stats     []tokenStat
	probes    int
	positions int
	obs       int
	reference bool
}

// NewLogprobSample aggregates suspect positions; reference may be nil.
func NewLogprobSample(suspect, reference []LogprobPosition) (*LogprobSample, error) {
	type pk struct{ probe, index int }
	var ref map[pk]map[string]float64
	if reference != nil {
		ref = make(map[pk]map[string]float64, len(reference))
		for _, p := range reference {
			m := make(map[string]float64, len(p.Top))
			for _, t := range p.Top {
				m[t.Token] = t.Logprob
			}
			ref[pk{p.Probe, p.Index}] = m
		}
	}
	ls := &LogprobSample{reference: reference != nil}
	idx := map[string]int{}
	probes := map[int]bool{}
	for _, p := range suspect {
		if len(p.Top) < 2 {
			continue
		}
		var rm map[string]float64
		if ref != nil {
			if rm = ref[pk{p.Probe, p.Index}]; rm == nil {
				continue
			}
		}
		used := false
		for _, t := range p.Top[1:] {
			y := t.Logprob - p.Top[0].Logprob
			if rm != nil {
				r, ok := rm[t.Token]
				if !ok {
					continue
				}
				y = t.Logprob - r
			}
			if math.IsNaN(y) || math.IsInf(y, 0) {
				continue
			}
			i, ok := idx[t.Token]
			if !ok {
				i = len(ls.tokens)
				idx[t.Token] = i
				ls.tokens = append(ls.tokens, t.Token)
				ls.stats = append(ls.stats, tokenStat{})
			}
			ls.stats[i].sum += y
			ls.stats[i].n++
			ls.obs++
			used = true
		}
		if used {
			ls.positions++
			probes[p.Probe] = true
		}
	}
	ls.probes = len(probes)
	if len(ls.tokens) == 0 {
		return nil, ErrNoLogprobs
	}
	return ls, nil
}

// Tokens is the number of distinct tokens in the sample.
func (ls *LogprobSample) Tokens() int { return len(ls.tokens) }

// weights returns the per-token statistics a_w = (mean_w - mean) sqrt(n_w),
// clipped at four times their RMS: key-independent, so the null
// distribution below holds for any values, and no single token dominates
// the sums (the normal limit needs that).
func (ls *LogprobSample) weights() []float64 {
	var tot float64
	var n int
	for _, s := range ls.stats {
		tot += s.sum
		n += s.n
	}
	mu := tot / float64(n)
	a := make([]float64, len(ls.stats))
	var q float64
	for i, s := range ls.stats {
		a[i] = (s.sum/float64(s.n) - mu) * math.Sqrt(float64(s.n))
		q += a[i] * a[i]
	}
	if c := 4 * math.Sqrt(q/float64(len(a))); c > 0 {
		for i := range a {
			a[i] = math.Max(-c, math.Min(c, a[i]))
		}
	}
	return a
}

// Score tests the sample against key k. Under the null hypothesis (the
// suspect never learned from this key's marks) the phases g(w) are
// independent uniform draws whatever the suspect's values a_w, so
// C = sum a_w cos(2 pi f g_w) and S = sum a_w sin(2 pi f g_w) have mean 0,
// variance Q/2 each (Q = sum a_w^2) and no correlation (f an integer); by
// the central limit theorem Z = -C / sqrt(Q/2) is standard normal and
// 2 (C^2 + S^2) / Q is chi-squared with 2 degrees of freedom. The null is
// randomisation over the key, the same as for the lexical test, so decoy
// keys check it directly.
func (ls *LogprobSample) Score(k *Key) LogprobResult {
	p := prf{block: k.lpBlock, macKey: k.lpMAC}
	a := ls.weights()
	g := make([]float64, len(a))
	var q float64
	for i, tok := range ls.tokens {
		g[i] = phaseOf(p.sum64s(tok))
		q += a[i] * a[i]
	}
	r := LogprobResult{KeyID: k.ID(), Frequency: k.freq, Probes: ls.probes, Positions: ls.positions,
		Candidates: len(a), Observations: ls.obs, Reference: ls.reference, PValue: 1, PowerPValue: 1}
	if q == 0 {
		return r
	}
	c, s := ls.project(a, g, k.freq)
	r.Z = -c / math.Sqrt(q/2)
	r.PValue = normalUpper(r.Z)
	r.Power = (c*c + s*s) / q
	r.PowerPValue = math.Exp(-r.Power)
	return r
}

// project returns C and S at frequency f.
func (ls *LogprobSample) project(a, g []float64, f int) (c, s float64) {
	for i := range a {
		sn, cs := math.Sincos(2 * math.Pi * float64(f) * g[i])
		c += a[i] * cs
		s += a[i] * sn
	}
	return c, s
}

// ScoreSpectrum is Score plus the periodogram at every frequency 1..64:
// PeakRatio and Rank compare the key's frequency with the others (the
// DRW-style display; 64 times the work of Score).
func (ls *LogprobSample) ScoreSpectrum(k *Key) LogprobResult {
	r := ls.Score(k)
	p := prf{block: k.lpBlock, macKey: k.lpMAC}
	a := ls.weights()
	g := make([]float64, len(a))
	var q float64
	for i, tok := range ls.tokens {
		g[i] = phaseOf(p.sum64s(tok))
		q += a[i] * a[i]
	}
	if q == 0 {
		return r
	}
	var others []float64
	var mean float64
	for f := 1; f <= spectrumMax; f++ {
		if f == k.freq {
			continue
		}
		c, s := ls.project(a, g, f)
		others = append(others, (c*c+s*s)/q)
		mean += others[len(others)-1]
	}
	mean /= float64(len(others))
	if mean > 0 {
		r.PeakRatio = r.Power / mean
	}
	sort.Float64s(others)
	r.Rank = 1 + len(others) - sort.SearchFloat64s(others, r.Power)
	return r
}
