package watermark

import (
	"bufio"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxAmplitude bounds the logprob signal, in nats.
const MaxAmplitude = 1.0

// PRF domains of the logprob mark (first message byte), so the token
// partition, the word hashes and the feature signs are independent draws.
const (
	lpDomainToken   = 0x01
	lpDomainWord    = 0x02
	lpDomainFeature = 0x03
)

// LogprobMark is the logprob watermark for soft-label harvesters, after
// DRW (Zhao et al., "Distillation-Resistant Watermarking for Model
// Protection in NLP", Findings of EMNLP 2022) and GINSEW (Zhao et al.,
// "Protecting Language Generation Models via Invisible Watermarking", ICML
// 2023): a keyed signal added to the probabilities a client sees that
// varies with the INPUT, so a student fitting the soft labels must learn
// it as a function of its input, and a probe of the student shows it.
//
// The key splits tokens into two groups, s(w) = +1 or -1 (a keyed PRF of
// the token text), and maps each response's context to a signal
// h = sin(u) in [-1, 1], where u is a keyed projection of the context,
// standardised to unit variance: a signed hash of the prompt's words
// (TextContext; feature hashing, Weinberger et al., ICML 2009) or a keyed
// +-1 projection of a numeric feature vector (VectorContext). GINSEW
// perturbs the two groups' probability mass by a sinusoid of a projection
// of the input's representation; here, so that the chosen token stays
// first and every value stays <= 0, each returned alternative but the
// first is lowered by
//
//	A (1 - s(w) h) / 2   in [0, A] nats,
//
// so the log-ratio between the groups moves by A h, opposite signs for
// opposite contexts. The sinusoid is one half-period over +-1.6 standard
// deviations of u, nearly linear there (its correlation with u is 0.92),
// so a student as simple as a softmax regression over the input features
// fits it; a fixed per-token shift (the previous design) is absorbed by
// per-token biases and stays buried under the student's own per-token
// errors. Immutable and safe for concurrent use; each response stream
// takes a Shifter.
type LogprobMark struct {
	key *Key
	amp float64
}

// NewLogprobMark returns the mark of key k with amplitude amp nats
// (0 < amp <= MaxAmplitude; keep it within the output perturbation
// budget, e.g. 0.2-0.3 nats).
func NewLogprobMark(k *Key, amp float64) (*LogprobMark, error) {
	if !(amp > 0 && amp <= MaxAmplitude) {
		return nil, fmt.Errorf("watermark: logprob amplitude %g outside (0, %g]", amp, MaxAmplitude)
	}
	return &LogprobMark{key: k, amp: amp}, nil
}

// Amplitude is the signal's amplitude in nats.
func (m *LogprobMark) Amplitude() float64 { return m.amp }

// Key is the mark's key.
func (m *LogprobMark) Key() *Key { return m.key }

// NewShifter returns the per-stream state for Shift (PRF scratch space).
func (m *LogprobMark) NewShifter() *Shifter {
	return &Shifter{m: m, p: lpPRF(m.key)}
}

func lpPRF(k *Key) prf { return prf{block: k.lpBlock, macKey: k.lpMAC} }

// Shifter applies a LogprobMark. Its output depends only on the key, the
// amplitude and its arguments, never on earlier calls. Not safe for
// concurrent use.
type Shifter struct {
	m   *LogprobMark
	p   prf
	msg []byte
}

// domainSum is the PRF of (domain, b).
func (p *prf) domainSum(scratch *[]byte, domain byte, b []byte) uint64 {
	*scratch = append(append((*scratch)[:0], domain), b...)
	return p.sum64(*scratch)
}

func (p *prf) domainSumString(scratch *[]byte, domain byte, s string) uint64 {
	*scratch = append(append((*scratch)[:0], domain), s...)
	return p.sum64(*scratch)
}

// signOf is +1 or -1 from the top bit of a PRF output.
func signOf(u uint64) float64 {
	if u>>63 == 0 {
		return 1
	}
	return -1
}

// Sign is the token's keyed group, +1 or -1.
func (s *Shifter) Sign(token []byte) float64 {
	return signOf(s.p.domainSum(&s.msg, lpDomainToken, token))
}

// TextContext is the context signal h of a prompt: sin(u), u the sum of a
// keyed sign per word (maximal runs of letters and digits, ASCII lower
// case) over the square root of the word count. 0 for a prompt without
// words.
func (s *Shifter) TextContext(prompt []byte) float64 { return textContext(&s.p, &s.msg, prompt) }

func textContext(p *prf, scratch *[]byte, prompt []byte) float64 {
	var sum float64
	n := 0
	var w []byte
	flush := func() {
		if len(w) > 0 {
			sum += signOf(p.domainSum(scratch, lpDomainWord, w))
			n++
			w = w[:0]
		}
	}
	var buf [64]byte
	w = buf[:0]
	for i := 0; i < len(prompt); {
		r, size := utf8.DecodeRune(prompt[i:])
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			if r < utf8.RuneSelf && r >= 'A' && r <= 'Z' {
				w = append(w, byte(r)+'a'-'A')
			} else {
				w = append(w, prompt[i:i+size]...)
			}
		} else {
			flush()
		}
		i += size
	}
	flush()
	if n == 0 {
		return 0
	}
	return math.Sin(sum / math.Sqrt(float64(n)))
}

// VectorContext is the context signal h of a numeric input (a record's
// features, for APIs whose prompts are records): sin(u), u the keyed +-1
// projection of x over sqrt(len(x)) (unit variance for standardised
// features). 0 for an empty x.
func (s *Shifter) VectorContext(x []float64) float64 { return vectorContext(&s.p, &s.msg, x) }

func vectorContext(p *prf, scratch *[]byte, x []float64) float64 {
	if len(x) == 0 {
		return 0
	}
	var sum float64
	var idx [4]byte
	for i, v := range x {
		binary.BigEndian.PutUint32(idx[:], uint32(i))
		sum += signOf(p.domainSum(scratch, lpDomainFeature, idx[:])) * v
	}
	return math.Sin(sum / math.Sqrt(float64(len(x))))
}

// Delta is the signal for token in context h: -A (1 - s(w) h) / 2, in
// [-A, 0] for h in [-1, 1].
func (s *Shifter) Delta(h float64, token []byte) float64 {
	return -s.m.amp * (1 - s.Sign(token)*clampUnit(h)) / 2
}

func clampUnit(h float64) float64 {
	if !(h >= -1) { // also NaN
		return -1
	}
	return math.Min(h, 1)
}

// Shift returns the marked value of logprob v for token in context h: v
// itself for the first (most likely) alternative of a position (first =
// true), otherwise v + Delta(h, token), clamped to <= 0. A caller rewriting
// a top_logprobs array in place must also keep it sorted (ShiftTop does
// both); the chosen token's own "logprob" takes the value of its entry in
// the array. Apply it before rounding.
func (s *Shifter) Shift(h float64, token []byte, v float64, first bool) float64 {
	if first {
		return v
	}
	return math.Min(v+s.Delta(h, token), 0)
}

// TokenLogprob is one returned alternative.
type TokenLogprob struct {
	Token   string  `json:"token"`
	Logprob float64 `json:"logprob"`
}

// ShiftTop marks one position's alternatives in context h, given most
// likely first as the API returns them: the first is unchanged, every other
// one is shifted and clamped to the value ranked above it, so the order
// survives.
func (s *Shifter) ShiftTop(h float64, alts []TokenLogprob) {
	h = clampUnit(h)
	for i := 1; i < len(alts); i++ {
		d := -s.m.amp * (1 - signOf(s.p.domainSumString(&s.msg, lpDomainToken, alts[i].Token))*h) / 2
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

// ParseLogprobs reads a suspect's answers, one JSON object a line (JSONL),
// and returns every position that carries top alternatives. Each choice
// (or Gemini candidate) of each line is one probe, numbered in order. It
// reads the three shapes that return alternatives:
//
//   - chat.completion: choices[].logprobs.content[].top_logprobs
//     (https://platform.openai.com/docs/api-reference/chat/object);
//   - text_completion: choices[].logprobs.top_logprobs, one token -> logprob
//     object per position
//     (https://platform.openai.com/docs/api-reference/completions/object);
//   - Gemini GenerateContentResponse: candidates[].logprobsResult.topCandidates[].candidates[]
//     (https://ai.google.dev/api/generate-content#LogprobsResult);
//   - Responses API response (one probe): output[] messages'
//     content[].logprobs[].top_logprobs, numbered across the output_text
//     parts in order
//     (https://platform.openai.com/docs/api-reference/responses/object).
//
// A text_completion position's alternatives, which JSON gives in no
// order, are sorted by logprob (then token). Lines that are empty are
// skipped; a line that is not a JSON object is an error naming it.
func ParseLogprobs(r io.Reader) ([]LogprobPosition, error) {
	// entry is a position of chat logprobs.content and of Responses
	// output_text logprobs, which have the same entries.
	type entry struct {
		TopLogprobs []TokenLogprob `json:"top_logprobs"`
	}
	type choice struct {
		Logprobs *struct {
			Content []entry `json:"content"`
			// Legacy completions: one object per position.
			TopLogprobs []map[string]float64 `json:"top_logprobs"`
		} `json:"logprobs"`
	}
	type candidate struct {
		LogprobsResult *struct {
			TopCandidates []struct {
				Candidates []struct {
					Token          string  `json:"token"`
					LogProbability float64 `json:"logProbability"`
				} `json:"candidates"`
			} `json:"topCandidates"`
		} `json:"logprobsResult"`
	}
	var out []LogprobPosition
	probe := 0
	// at records position i of the current probe, when it has alternatives.
	at := func(i int, top []TokenLogprob) {
		if len(top) > 0 {
			out = append(out, LogprobPosition{Probe: probe, Index: i, Top: top})
		}
	}
	err := eachJSONLine(r, func(doc *struct {
		Choices    []choice    `json:"choices"`
		Candidates []candidate `json:"candidates"`
		Output     []struct {
			Type    string `json:"type"`
			Content []struct {
				Type     string  `json:"type"`
				Logprobs []entry `json:"logprobs"`
			} `json:"content"`
		} `json:"output"`
	}) error {
		for _, c := range doc.Choices {
			if lp := c.Logprobs; lp != nil {
				for i, e := range lp.Content {
					at(i, e.TopLogprobs)
				}
				for i, m := range lp.TopLogprobs {
					at(i, sortedAlternatives(m))
				}
			}
			probe++
		}
		for _, c := range doc.Candidates {
			if lr := c.LogprobsResult; lr != nil {
				for i, tc := range lr.TopCandidates {
					top := make([]TokenLogprob, len(tc.Candidates))
					for j, a := range tc.Candidates {
						top[j] = TokenLogprob{Token: a.Token, Logprob: a.LogProbability}
					}
					at(i, top)
				}
			}
			probe++
		}
		if doc.Output != nil {
			i := 0
			for _, o := range doc.Output {
				if o.Type != "message" {
					continue
				}
				for _, c := range o.Content {
					if c.Type != "output_text" {
						continue
					}
					for _, e := range c.Logprobs {
						at(i, e.TopLogprobs)
						i++
					}
				}
			}
			probe++
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// sortedAlternatives lists a token -> logprob object, most likely first
// (ties by token), so that a position reads the same however the object's
// keys were ordered.
func sortedAlternatives(m map[string]float64) []TokenLogprob {
	top := make([]TokenLogprob, 0, len(m))
	for t, lp := range m {
		top = append(top, TokenLogprob{Token: t, Logprob: lp})
	}
	slices.SortFunc(top, func(a, b TokenLogprob) int {
		if c := cmp.Compare(b.Logprob, a.Logprob); c != 0 {
			return c
		}
		return strings.Compare(a.Token, b.Token)
	})
	return top
}

// maxLineBytes bounds one input line.
const maxLineBytes = 64 << 20

// eachJSONLine decodes every non-blank line of r (each at most
// maxLineBytes) into a fresh T and hands it to each, in order. An error,
// the decoder's or each's, names its 1-based line.
func eachJSONLine[T any](r io.Reader, each func(*T) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLineBytes)
	line := 0
	for sc.Scan() {
		line++
		b := trimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var doc T
		if err := json.Unmarshal(b, &doc); err != nil {
			return fmt.Errorf("line %d: %w", line, err)
		}
		if err := each(&doc); err != nil {
			return fmt.Errorf("line %d: %w", line, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("line %d: %w", line+1, err)
	}
	return nil
}
