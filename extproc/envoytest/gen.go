package envoytest

import (
	"encoding/base64"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"strconv"
	"unicode/utf8"
)

// Gen generates OpenAI-compatible bodies deterministically from a seed:
// the same seed and options always give the same bytes. Field order and
// formats follow the OpenAI API reference
// (https://platform.openai.com/docs/api-reference/chat/streaming,
// /completions/object, /responses-streaming, /embeddings/object).
type Gen struct {
	r           *rand.Rand
	Model       string
	Created     int64
	Fingerprint string
}

// NewGen returns a generator seeded with seed.
func NewGen(seed uint64) *Gen {
	g := &Gen{r: rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)), Model: "mock-gpt-4o-mini", Created: 1736000000}
	g.Created += int64(g.r.IntN(1 << 20))
	g.Fingerprint = "fp_" + g.hex(10)
	return g
}

// vocab mixes plain words, punctuation, JSON escapes, control characters
// and multi-byte UTF-8, so rewriters see every string shape.
var vocab = []string{
	"Hello", " world", ",", " the", " a", " of", " and", " to", "\n", "\n\n", " is",
	"\"", "\\", "'s", " café", " naïve", "日本", "語", " 🙂", "\t", "</s>", " 42",
	" 3.14", "-", " {", "}", " [\"x\"]", " null", " true", "\u2028", " é", "\u0001",
	" Let", " me", " think", " step", " by", ".", " Therefore", " answer", ":",
}

// Alt is one alternative token with its logprob.
type Alt struct {
	Token   string
	Logprob float64
}

// Token is one sampled token with its logprob and top alternatives (the
// chosen token first, as the API returns it when it is the most likely).
type Token struct {
	Token   string
	Logprob float64
	Top     []Alt
}

// Tokens samples n tokens with top alternatives each.
func (g *Gen) Tokens(n, top int) []Token {
	out := make([]Token, n)
	for i := range out {
		t := vocab[g.r.IntN(len(vocab))]
		lp := g.logprob(0)
		tk := Token{Token: t, Logprob: lp}
		if top > 0 {
			tk.Top = append(tk.Top, Alt{t, lp})
			prev := lp
			for len(tk.Top) < top {
				a := vocab[g.r.IntN(len(vocab))]
				v := g.logprob(prev)
				tk.Top = append(tk.Top, Alt{a, v})
				prev = v
			}
		}
		out[i] = tk
	}
	return out
}

// logprob draws a value at or below below (0 for a chosen token). Some are
// tiny, which JSON encoders print in exponent form (-1.9361265e-07).
func (g *Gen) logprob(below float64) float64 {
	switch g.r.IntN(8) {
	case 0:
		return below - g.r.Float64()*1e-6
	case 1:
		return below - math.Round(g.r.ExpFloat64()*1e8)/1e8
	}
	return below - g.r.ExpFloat64()*1.5
}

func (g *Gen) hex(n int) string {
	const digits = "0123456789abcdef"
	b := make([]byte, n)
	for i := range b {
		b[i] = digits[g.r.IntN(16)]
	}
	return string(b)
}

func (g *Gen) alnum(n int) string {
	const digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	for i := range b {
		b[i] = digits[g.r.IntN(len(digits))]
	}
	return string(b)
}

// Options shape a generated completion.
type Options struct {
	Tokens      int  // completion tokens (default 16)
	Logprobs    bool // include logprobs
	TopLogprobs int  // alternatives per position (0..20)
	N           int  // choices (default 1)
	Usage       bool // usage chunk at the end of a stream
	PromptTok   int  // prompt tokens reported in usage (default 12)
}

func (o Options) norm() Options {
	if o.Tokens <= 0 {
		o.Tokens = 16
	}
	if o.N <= 0 {
		o.N = 1
	}
	if o.PromptTok <= 0 {
		o.PromptTok = 12
	}
	o.TopLogprobs = max(0, min(o.TopLogprobs, 20))
	return o
}

// --- JSON writing helpers: compact, fixed field order ---

func appendString(dst []byte, s string) []byte {
	const hexd = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c == '\t':
			dst = append(dst, '\\', 't')
		case c == '\r':
			dst = append(dst, '\\', 'r')
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hexd[c>>4], hexd[c&15])
		case c < utf8.RuneSelf:
			dst = append(dst, c)
		default:
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == '\u2028' || r == '\u2029' {
				dst = append(dst, `\u202`...)
				dst = append(dst, hexd[r&15])
			} else {
				dst = append(dst, s[i:i+n]...)
			}
			i += n
			continue
		}
		i++
	}
	return append(dst, '"')
}

func appendFloat(dst []byte, f float64) []byte { return strconv.AppendFloat(dst, f, 'g', -1, 64) }

func appendBytes(dst []byte, s string) []byte {
	dst = append(dst, '[')
	for i := 0; i < len(s); i++ {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = strconv.AppendInt(dst, int64(s[i]), 10)
	}
	return append(dst, ']')
}

// appendChatLogprob writes one chat/responses logprob entry.
func appendChatLogprob(dst []byte, t Token, top int) []byte {
	dst = AppendTokenFields(dst, t.Token, t.Logprob, -1)
	dst = append(dst, `,"top_logprobs":[`...)
	for i, a := range t.Top[:min(top, len(t.Top))] {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendTokenFields(dst, a.Token, a.Logprob, -1)
		dst = append(dst, '}')
	}
	return append(dst, "]}"...)
}

// AppendTokenFields opens a chat or responses logprob entry and writes the
// fields the chosen token and its alternatives share,
// {"token":...,"logprob":...,"bytes":[...] (the caller closes it;
// https://platform.openai.com/docs/api-reference/chat/object). digits is
// the logprob's significant digits as strconv.AppendFloat takes them with
// format 'g': -1 for the shortest form that reads back exactly, 8 for how
// OpenAI's serializer prints float32 values.
func AppendTokenFields(dst []byte, token string, logprob float64, digits int) []byte {
	dst = append(dst, `{"token":`...)
	dst = appendString(dst, token)
	dst = append(dst, `,"logprob":`...)
	dst = strconv.AppendFloat(dst, logprob, 'g', digits, 64)
	dst = append(dst, `,"bytes":`...)
	return appendBytes(dst, token)
}

func appendUsage(dst []byte, prompt, completion int) []byte {
	dst = append(dst, `{"prompt_tokens":`...)
	dst = strconv.AppendInt(dst, int64(prompt), 10)
	dst = append(dst, `,"completion_tokens":`...)
	dst = strconv.AppendInt(dst, int64(completion), 10)
	dst = append(dst, `,"total_tokens":`...)
	dst = strconv.AppendInt(dst, int64(prompt+completion), 10)
	return append(dst, '}')
}

// Event frames one SSE event: optional "event:" line, one "data:" line,
// blank line.
func Event(name string, data []byte) []byte {
	var b []byte
	if name != "" {
		b = append(b, "event: "...)
		b = append(b, name...)
		b = append(b, '\n')
	}
	b = append(b, "data: "...)
	b = append(b, data...)
	return append(b, '\n', '\n')
}

// Join concatenates events into one stream body.
func Join(events [][]byte) []byte {
	var n int
	for _, e := range events {
		n += len(e)
	}
	b := make([]byte, 0, n)
	for _, e := range events {
		b = append(b, e...)
	}
	return b
}

// DoneEvent is the terminating event of chat and legacy completion streams.
const DoneEvent = "data: [DONE]\n\n"

// objectHead opens a completion object with the fields every one starts
// with: id, object, created, model.
func (g *Gen) objectHead(dst []byte, id, object string) []byte {
	dst = append(dst, `{"id":`...)
	dst = appendString(dst, id)
	dst = append(dst, `,"object":"`...)
	dst = append(dst, object...)
	dst = append(dst, `","created":`...)
	dst = strconv.AppendInt(dst, g.Created, 10)
	dst = append(dst, `,"model":`...)
	return appendString(dst, g.Model)
}

// joinTokens is the text of toks.
func joinTokens(toks []Token) string {
	var text string
	for _, t := range toks {
		text += t.Token
	}
	return text
}

func (g *Gen) chunkHead(dst []byte, id, object string) []byte {
	dst = g.objectHead(dst, id, object)
	dst = append(dst, `,"system_fingerprint":`...)
	return appendString(dst, g.Fingerprint)
}

// ChatStream returns the SSE events of a streamed chat completion: a role
// chunk, one chunk per token (per choice), a finish chunk, an optional
// usage chunk, and [DONE].
func (g *Gen) ChatStream(o Options) [][]byte {
	o = o.norm()
	id := "chatcmpl-" + g.alnum(29)
	usage := func(b []byte) []byte {
		if o.Usage {
			b = append(b, `,"usage":null`...)
		}
		return b
	}
	var ev [][]byte
	for c := range o.N {
		b := g.chunkHead(nil, id, "chat.completion.chunk")
		b = append(b, `,"choices":[{"index":`...)
		b = strconv.AppendInt(b, int64(c), 10)
		b = append(b, `,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]`...)
		ev = append(ev, Event("", append(usage(b), '}')))
	}
	toks := make([][]Token, o.N)
	for c := range o.N {
		toks[c] = g.Tokens(o.Tokens, o.TopLogprobs)
	}
	for i := range o.Tokens {
		for c := range o.N {
			t := toks[c][i]
			b := g.chunkHead(nil, id, "chat.completion.chunk")
			b = append(b, `,"choices":[{"index":`...)
			b = strconv.AppendInt(b, int64(c), 10)
			b = append(b, `,"delta":{"content":`...)
			b = appendString(b, t.Token)
			b = append(b, `},"logprobs":`...)
			if o.Logprobs {
				b = append(b, `{"content":[`...)
				b = appendChatLogprob(b, t, o.TopLogprobs)
				b = append(b, `],"refusal":null}`...)
			} else {
				b = append(b, "null"...)
			}
			b = append(b, `,"finish_reason":null}]`...)
			ev = append(ev, Event("", append(usage(b), '}')))
		}
	}
	for c := range o.N {
		b := g.chunkHead(nil, id, "chat.completion.chunk")
		b = append(b, `,"choices":[{"index":`...)
		b = strconv.AppendInt(b, int64(c), 10)
		b = append(b, `,"delta":{},"logprobs":null,"finish_reason":"length"}]`...)
		ev = append(ev, Event("", append(usage(b), '}')))
	}
	if o.Usage {
		b := g.chunkHead(nil, id, "chat.completion.chunk")
		b = append(b, `,"choices":[],"usage":`...)
		b = appendUsage(b, o.PromptTok, o.Tokens*o.N)
		ev = append(ev, Event("", append(b, '}')))
	}
	return append(ev, []byte(DoneEvent))
}

// ChatCompletion returns a non-streamed chat completion body.
func (g *Gen) ChatCompletion(o Options) []byte {
	o = o.norm()
	b := g.objectHead(nil, "chatcmpl-"+g.alnum(29), "chat.completion")
	b = append(b, `,"choices":[`...)
	for c := range o.N {
		toks := g.Tokens(o.Tokens, o.TopLogprobs)
		if c > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"index":`...)
		b = strconv.AppendInt(b, int64(c), 10)
		b = append(b, `,"message":{"role":"assistant","content":`...)
		b = appendString(b, joinTokens(toks))
		b = append(b, `,"refusal":null,"annotations":[]},"logprobs":`...)
		if o.Logprobs {
			b = append(b, `{"content":[`...)
			for i, t := range toks {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendChatLogprob(b, t, o.TopLogprobs)
			}
			b = append(b, `],"refusal":null}`...)
		} else {
			b = append(b, "null"...)
		}
		b = append(b, `,"finish_reason":"length"}`...)
	}
	b = append(b, `],"usage":`...)
	b = appendUsage(b, o.PromptTok, o.Tokens*o.N)
	b = append(b, `,"service_tier":"default","system_fingerprint":`...)
	b = appendString(b, g.Fingerprint)
	return append(b, '}')
}

// appendLegacyLogprobs writes a legacy completions logprobs object.
func appendLegacyLogprobs(b []byte, toks []Token, top, offset int) []byte {
	b = append(b, `{"tokens":[`...)
	for i, t := range toks {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, t.Token)
	}
	b = append(b, `],"token_logprobs":[`...)
	for i, t := range toks {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendFloat(b, t.Logprob)
	}
	b = append(b, `],"top_logprobs":[`...)
	for i, t := range toks {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '{')
		seen := map[string]bool{}
		first := true
		for _, a := range t.Top[:min(top, len(t.Top))] {
			if seen[a.Token] {
				continue // object keys are unique
			}
			seen[a.Token] = true
			if !first {
				b = append(b, ',')
			}
			first = false
			b = appendString(b, a.Token)
			b = append(b, ':')
			b = appendFloat(b, a.Logprob)
		}
		b = append(b, '}')
	}
	b = append(b, `],"text_offset":[`...)
	for i, t := range toks {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(offset), 10)
		offset += len(t.Token)
	}
	return append(b, "]}"...)
}

// CompletionStream returns the SSE events of a streamed legacy completion
// (/v1/completions, object text_completion), one token per event, with
// legacy logprobs (tokens, token_logprobs, top_logprobs maps, text_offset).
func (g *Gen) CompletionStream(o Options) [][]byte {
	o = o.norm()
	id := "cmpl-" + g.alnum(29)
	var ev [][]byte
	toks := g.Tokens(o.Tokens, o.TopLogprobs)
	off := 0
	for i, t := range toks {
		b := append([]byte(nil), `{"id":`...)
		b = appendString(b, id)
		b = append(b, `,"object":"text_completion","created":`...)
		b = strconv.AppendInt(b, g.Created, 10)
		b = append(b, `,"choices":[{"text":`...)
		b = appendString(b, t.Token)
		b = append(b, `,"index":0,"logprobs":`...)
		if o.Logprobs {
			b = appendLegacyLogprobs(b, toks[i:i+1], o.TopLogprobs, off)
		} else {
			b = append(b, "null"...)
		}
		off += len(t.Token)
		b = append(b, `,"finish_reason":`...)
		if i == len(toks)-1 {
			b = append(b, `"length"`...)
		} else {
			b = append(b, "null"...)
		}
		b = append(b, `}],"model":`...)
		b = appendString(b, g.Model)
		b = append(b, `,"system_fingerprint":`...)
		b = appendString(b, g.Fingerprint)
		ev = append(ev, Event("", append(b, '}')))
	}
	if o.Usage {
		b := append([]byte(nil), `{"id":`...)
		b = appendString(b, id)
		b = append(b, `,"object":"text_completion","created":`...)
		b = strconv.AppendInt(b, g.Created, 10)
		b = append(b, `,"choices":[],"model":`...)
		b = appendString(b, g.Model)
		b = append(b, `,"usage":`...)
		b = appendUsage(b, o.PromptTok, o.Tokens)
		ev = append(ev, Event("", append(b, '}')))
	}
	return append(ev, []byte(DoneEvent))
}

// Completion returns a non-streamed legacy completion body.
func (g *Gen) Completion(o Options) []byte {
	o = o.norm()
	toks := g.Tokens(o.Tokens, o.TopLogprobs)
	b := g.objectHead(nil, "cmpl-"+g.alnum(29), "text_completion")
	b = append(b, `,"choices":[{"text":`...)
	b = appendString(b, joinTokens(toks))
	b = append(b, `,"index":0,"logprobs":`...)
	if o.Logprobs {
		b = appendLegacyLogprobs(b, toks, o.TopLogprobs, 0)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"finish_reason":"length"}],"usage":`...)
	b = appendUsage(b, o.PromptTok, o.Tokens)
	return append(b, '}')
}

// ResponsesStream returns the SSE events of a streamed Responses API call:
// response.created, output_item.added, content_part.added, one
// response.output_text.delta per token (with logprobs when asked),
// response.output_text.done with all logprobs, response.completed. Each
// event carries an "event:" line; there is no [DONE].
func (g *Gen) ResponsesStream(o Options) [][]byte {
	o = o.norm()
	rid := "resp_" + g.hex(48)
	mid := "msg_" + g.hex(48)
	toks := g.Tokens(o.Tokens, o.TopLogprobs)
	seq := 0
	var ev [][]byte
	head := func(typ string) []byte {
		b := append([]byte(nil), `{"type":"`...)
		b = append(b, typ...)
		b = append(b, `","sequence_number":`...)
		b = strconv.AppendInt(b, int64(seq), 10)
		seq++
		return b
	}
	resp := func(b []byte, status string, output []byte) []byte {
		b = append(b, `,"response":{"id":`...)
		b = appendString(b, rid)
		b = append(b, `,"object":"response","created_at":`...)
		b = strconv.AppendInt(b, g.Created, 10)
		b = append(b, `,"status":"`...)
		b = append(b, status...)
		b = append(b, `","model":`...)
		b = appendString(b, g.Model)
		b = append(b, `,"output":[`...)
		b = append(b, output...)
		b = append(b, ']')
		if status == "completed" {
			b = append(b, `,"usage":{"input_tokens":`...)
			b = strconv.AppendInt(b, int64(o.PromptTok), 10)
			b = append(b, `,"output_tokens":`...)
			b = strconv.AppendInt(b, int64(o.Tokens), 10)
			b = append(b, `,"total_tokens":`...)
			b = strconv.AppendInt(b, int64(o.PromptTok+o.Tokens), 10)
			b = append(b, '}')
		}
		return append(b, "}}"...)
	}
	logprobs := func(b []byte, ts []Token) []byte {
		b = append(b, '[')
		if o.Logprobs {
			for i, t := range ts {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendChatLogprob(b, t, o.TopLogprobs)
			}
		}
		return append(b, ']')
	}
	ev = append(ev, Event("response.created", resp(head("response.created"), "in_progress", nil)))
	b := head("response.output_item.added")
	b = append(b, `,"output_index":0,"item":{"id":`...)
	b = appendString(b, mid)
	b = append(b, `,"type":"message","status":"in_progress","role":"assistant","content":[]}}`...)
	ev = append(ev, Event("response.output_item.added", b))
	b = head("response.content_part.added")
	b = append(b, `,"item_id":`...)
	b = appendString(b, mid)
	b = append(b, `,"output_index":0,"content_index":0,"part":{"type":"output_text","annotations":[],"logprobs":[],"text":""}}`...)
	ev = append(ev, Event("response.content_part.added", b))
	var text string
	for i, t := range toks {
		text += t.Token
		b := head("response.output_text.delta")
		b = append(b, `,"item_id":`...)
		b = appendString(b, mid)
		b = append(b, `,"output_index":0,"content_index":0,"delta":`...)
		b = appendString(b, t.Token)
		b = append(b, `,"logprobs":`...)
		b = logprobs(b, toks[i:i+1])
		ev = append(ev, Event("response.output_text.delta", append(b, '}')))
	}
	b = head("response.output_text.done")
	b = append(b, `,"item_id":`...)
	b = appendString(b, mid)
	b = append(b, `,"output_index":0,"content_index":0,"text":`...)
	b = appendString(b, text)
	b = append(b, `,"logprobs":`...)
	b = logprobs(b, toks)
	ev = append(ev, Event("response.output_text.done", append(b, '}')))
	item := append([]byte(nil), `{"id":`...)
	item = appendString(item, mid)
	item = append(item, `,"type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","annotations":[],"logprobs":`...)
	item = logprobs(item, toks)
	item = append(item, `,"text":`...)
	item = appendString(item, text)
	item = append(item, "}]}"...)
	ev = append(ev, Event("response.completed", resp(head("response.completed"), "completed", item)))
	return ev
}

// Embeddings returns an embeddings list for n inputs of dims dimensions,
// as float arrays or base64 little-endian float32 (encoding_format).
func (g *Gen) Embeddings(n, dims int, b64 bool) []byte {
	b := append([]byte(nil), `{"object":"list","data":[`...)
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"object":"embedding","index":`...)
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, `,"embedding":`...)
		vals := make([]float32, dims)
		for j := range vals {
			vals[j] = float32(g.r.NormFloat64() * 0.05)
		}
		if b64 {
			raw := make([]byte, 4*dims)
			for j, v := range vals {
				binary.LittleEndian.PutUint32(raw[4*j:], math.Float32bits(v))
			}
			b = append(b, '"')
			b = base64.StdEncoding.AppendEncode(b, raw)
			b = append(b, '"')
		} else {
			b = append(b, '[')
			for j, v := range vals {
				if j > 0 {
					b = append(b, ',')
				}
				b = strconv.AppendFloat(b, float64(v), 'g', -1, 32)
			}
			b = append(b, ']')
		}
		b = append(b, '}')
	}
	b = append(b, `],"model":`...)
	b = appendString(b, g.Model)
	b = append(b, `,"usage":{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(8*n), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(8*n), 10)
	return append(b, "}}"...)
}
