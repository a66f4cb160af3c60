package mutate

import (
	"bytes"

	"github.com/distillguard/distillguard/internal/hashmix"
)

// Rewriter rewrites one JSON document at a time (an SSE event's data, an
// NDJSON line or a whole non-streamed body). One per HTTP stream; not safe
// for concurrent use. It carries the perturbation position across
// documents so that the output depends only on the sequence of documents,
// never on chunking.
//
// A Rewriter reads one API format (NewRewriterFor; format.go). The
// non-OpenAI formats each have their walk, which says what it rewrites:
// Gemini (walk_gemini.go), TGI (walk_tgi.go), llama.cpp (walk_llamacpp.go),
// Ollama (walk_ollama.go) and Anthropic Messages (walk_anthropic.go, text
// only). For the OpenAI-compatible formats, the fields rewritten (every
// other byte is copied through):
//   - chat.completion / chat.completion.chunk: choices[].logprobs.content[]
//     and .refusal[] entries {token, logprob, bytes, top_logprobs[]}
//     (https://platform.openai.com/docs/api-reference/chat/object);
//   - legacy text_completion: choices[].logprobs {tokens, token_logprobs,
//     top_logprobs, text_offset}
//     (https://platform.openai.com/docs/api-reference/completions/object);
//   - vLLM prompt_logprobs, top level or per choice;
//   - Responses API: top-level logprobs of response.output_text.delta/.done
//     events, and output[].content[].logprobs inside response objects
//     (response.completed, output_item.*, content_part.*, non-streamed)
//     (https://platform.openai.com/docs/api-reference/responses-streaming);
//   - embeddings: data[].embedding as float array or base64 float32
//     (https://platform.openai.com/docs/api-reference/embeddings/object).
//
// StripLogprobs writes the form each API uses for "absent": null for
// choices[].logprobs and prompt_logprobs (Chat Completions and Completions
// send null when logprobs were not requested), [] for Responses API logprobs
// arrays (the Responses API always sends an array).
//
// Order of operations per position: noise (Perturb), then rounding
// (RoundDecimals, on the decimal text when there is no noise: exact, half
// away from zero), then the cut to MaxAlternatives. The noise is uniform in
// [-Perturb, Perturb), drawn from a splitmix64 hash of (seed, choice,
// token position, alternative rank) only, so the same stream gives the
// same output in any chunking and in streamed or buffered mode. Values are
// clamped to <= 0 and each alternative to the one ranked above it; the
// sampled token takes the value of its own entry in the alternatives when
// it is listed there, and otherwise stays above them if it was the most
// likely. top_logprobs arrays keep their first k entries (the API sorts
// them most likely first); legacy top_logprobs and prompt_logprobs objects
// keep their k largest members, in their original order.
//
// Member names are matched as raw bytes: a key spelled with escapes
// ("\u006cogprobs") is not recognised. Upstream inference servers never
// emit such keys; clients cannot influence response keys.
type Rewriter struct {
	p        OutputPolicy
	f        Format // the API the documents speak (format.go)
	seedMix  uint64
	touchLP  bool // the policy changes logprobs
	touchEmb bool // the policy changes embeddings
	numLP    bool // logprob numbers change (rounding or noise)
	round    int  // RoundDecimals clamped to [-1, 22]
	embRound int  // EmbeddingDecimals clamped to [-1, 22]
	maxAlt   int
	// valProb is set while the walk is inside values that are
	// probabilities in [0, 1] rather than logprobs (llama.cpp's prob
	// layouts): they are ranked and perturbed in log space and rounded as
	// probabilities (values.go).
	valProb bool
	text    TextRewriter // rewrites generated text where a walk finds it (text.go); nil: none
	// textHold and textDrop are text's optional interfaces (text.go).
	textHold TextHolder
	textDrop TextDropper
	// drops are the spans the last piece of text lost its entries for;
	// entryDrops, when non-nil, are those the next entry array walked
	// applies (dropEntries).
	drops       []TextSpan
	kept        []TextSpan
	entryDrops  []TextSpan
	choiceDrops []TextSpan
	// deferred is set while walkTop walks a document whose text is handed
	// to the text rewriter only once the whole document has parsed
	// (walk_text.go): tasks are the choices with text, in document order,
	// defArrs the entry arrays (or legacy logprobs) they may drop entries
	// from, defEnts those arrays' entries. recArr: the next entry array
	// walked is recorded; recChoice: the walk is in a choice's logprobs.
	deferred  bool
	noDefer   bool // always prescan: the reference the deferred walk is tested against
	recArr    bool
	recChoice bool
	tasks     []choiceScan
	defArrs   []defArr
	defEnts   []defEnt
	// legacyText: a choice with a "text" member was seen (legacy
	// Completions), so an ending choice without text gets "text" rather
	// than a delta.
	legacyText bool
	// pre is a document to send as an event of its own before the current
	// one (preEvent its SSE event name, empty for none): the delta that
	// carries a Responses API text block's held tail (walk_responses.go).
	pre      []byte
	preEvent string
	lastTok  span // the token of the entry last walked
	// shift is the logprob watermark (WithLogprobShift); nil: none.
	shift  LogprobShifter
	tokBuf []byte

	s         scanner
	patchList           // the current document's patches
	ctr       []counter // committed positions (position.go)
	pend      []counter // positions the current document consumes

	// scratch, reused across documents
	alts   []alt
	chosen []chosenLP
	groups []group
	order  []int32
	legTok []span
	legLP  []chosenLP
	legTop []span
	steps  []step // decoding steps of parallel arrays read in one pass (walk_fields.go)
	b64    []byte

	stats RewriterStats
}

// RewriterStats counts what a Rewriter saw.
type RewriterStats struct {
	Documents int64 // documents given to Rewrite
	Rewritten int64 // documents whose bytes changed
	NotJSON   int64 // documents passed through because they were not a JSON object
	Skipped   int64 // documents passed through by the fast path (nothing the policy touches)
}

// NewRewriter returns a Rewriter for policy p; seed keys the perturbation
// (derived from the session).
func NewRewriter(p OutputPolicy, seed uint64) *Rewriter {
	r := &Rewriter{p: p, seedMix: hashmix.Mix64(seed ^ 0x6a09e667f3bcc908)}
	r.round = clampDecimals(p.RoundDecimals)
	r.embRound = clampDecimals(p.EmbeddingDecimals)
	r.maxAlt = p.MaxAlternatives
	r.numLP = r.round >= 0 || p.Perturb != 0
	r.touchLP = p.StripLogprobs || r.numLP || p.MaxAlternatives >= 0
	r.touchEmb = r.embRound >= 0
	return r
}

// clampDecimals maps a decimals setting to -1 (leave alone) or to [0, 22],
// the range of exact powers of ten (pow10).
func clampDecimals(k int) int {
	switch {
	case k < 0:
		return -1
	case k > 22:
		return 22
	}
	return k
}

// Stats returns the counts so far.
func (r *Rewriter) Stats() RewriterStats { return r.stats }

// Rewrite appends the rewritten doc to dst. When doc is not a JSON object
// (or, for the formats that send them, a JSON array of responses: Gemini,
// TGI, llama.cpp) it appends doc unchanged and returns an error wrapping
// ErrNotJSON.
//
// Documents that contain nothing the policy touches (no `logprobs"` or
// `"embedding"` member, or only with a null value) take a fast path: they
// are copied through after checking only that they start like an object,
// so a malformed document without those keys is passed through without an
// error. The output is the same either way: invalid documents are never
// changed.
func (r *Rewriter) Rewrite(dst, doc []byte) ([]byte, error) {
	dst, _, err := r.rewrite(dst, doc)
	return dst, err
}

// rewrite is Rewrite that also reports whether the bytes changed.
func (r *Rewriter) rewrite(dst, doc []byte) ([]byte, bool, error) {
	r.stats.Documents++
	if c := firstNonSpace(doc); c != '{' && (c != '[' || !r.f.acceptsArray()) {
		r.stats.NotJSON++
		return append(dst, doc...), false, notJSON(errNotObject)
	}
	if !r.mayTouch(doc) {
		r.stats.Skipped++
		return append(dst, doc...), false, nil
	}
	r.patchList.reset(doc)
	r.pre = r.pre[:0]
	r.pend = r.pend[:0]
	r.s.reset(doc)
	if r.text != nil && !r.f.isOpenAI() {
		// A text rewriter keeps state across documents (the held word):
		// it must not see the text of a document that then turns out not
		// to parse and goes out as it came, so the whole document is
		// validated first, and the walk then skips without validating
		// again. (The OpenAI walk validates in its prescan, prescanTop,
		// which reads every top-level member anyway, or hands the text
		// over only once its walk has succeeded: see walkTop.)
		r.s.ws()
		if err := r.s.end(r.s.skipValue(0)); err != nil {
			r.stats.NotJSON++
			return append(dst, doc...), false, notJSON(err)
		}
		r.s.reset(doc)
		r.s.valid = true
	}
	if err := r.walkDoc(); err != nil {
		r.stats.NotJSON++
		r.pre = r.pre[:0]
		r.patchList.done()
		return append(dst, doc...), false, notJSON(err)
	}
	r.commit()
	dst, changed := r.apply(dst)
	r.patchList.done()
	if changed {
		r.stats.Rewritten++
	}
	return dst, changed, nil
}

// Byte patterns of the fast path and of the Responses API prescan.
const (
	keyLogprobs  = `logprobs"`
	keyEmbedding = `"embedding"`
	keyOutputIdx = `"output_index"`
)

// mayTouch is the fast path's test: whether doc may hold a member the
// policy changes, by the keys of the document's format. A text rewriter
// sees every document.
func (r *Rewriter) mayTouch(doc []byte) bool {
	if r.text != nil {
		return true
	}
	switch r.f {
	case FormatGemini:
		return r.touchLP && (hasLiveKey(doc, keyLogprobsResult) || hasLiveKey(doc, keyAvgLogprobs))
	case FormatTGI:
		return r.touchLP && hasLiveKey(doc, keyLogprob)
	case FormatLlamaCpp:
		return r.touchLP && hasLiveKey(doc, keyCompletionProbs)
	case FormatOllama:
		return r.touchLP && hasLiveKey(doc, keyLogprobs)
	case FormatAnthropic:
		return false // no distributions: only text, which needs a text rewriter
	}
	return r.touchLP && hasLiveKey(doc, keyLogprobs) ||
		r.touchEmb && hasLiveKey(doc, keyEmbedding)
}

// walkDoc runs the walk of the Rewriter's format over the document.
func (r *Rewriter) walkDoc() error {
	switch r.f {
	case FormatGemini:
		return r.walkGemini()
	case FormatTGI:
		return r.walkTGI()
	case FormatLlamaCpp:
		return r.walkLlamaCpp()
	case FormatOllama:
		return r.walkOllama()
	case FormatAnthropic:
		return r.walkAnthropic()
	}
	return r.walkTop()
}

// walkArrayOr walks a document that is one object, handed to obj, or an
// array of them (each element that is an object handed to obj; others
// validated), and checks that nothing follows.
func (r *Rewriter) walkArrayOr(obj func(depth int, n uint64) error) error {
	s := &r.s
	s.ws()
	var err error
	switch s.peek() {
	case '{':
		err = obj(0, 0)
	case '[':
		err = s.eachElem(func(n int) error {
			if s.peek() == '{' {
				return obj(1, uint64(n))
			}
			return s.skipValue(1)
		})
	default:
		return errNotObject
	}
	return s.end(err)
}

// hasLiveKey reports whether doc may hold key as a member name with a
// value other than null. It is a conservative pre-filter run before any
// parsing: an occurrence not followed by ':' is a string value
// ("object":"embedding") and one followed by ': null' has nothing to
// rewrite ("logprobs":null in every vLLM chunk). Inside strings the quote
// of a match would be escaped, so text cannot produce a false key; a
// false positive only costs a full parse.
func hasLiveKey(doc []byte, key string) bool {
	k := []byte(key) // on the stack: keys are short
	for off := 0; off < len(doc); {
		i := bytes.Index(doc[off:], k)
		if i < 0 {
			return false
		}
		j := skipSpace(doc, off+i+len(k))
		if j >= len(doc) || doc[j] != ':' {
			off = j
			continue
		}
		j = skipSpace(doc, j+1)
		if len(doc)-j < 4 || string(doc[j:j+4]) != "null" {
			return true
		}
		off = j
	}
	return false
}

// walkTop walks the document's top-level object and hands each member the
// policy may touch to its walk: choices[] (Chat Completions, legacy
// Completions), prompt_logprobs (vLLM), logprobs, response, output, item
// and part (Responses API events and objects) and data (embeddings). Every
// other member is validated and skipped.
//
// With a text rewriter and no noise, a document that cannot be a Responses
// API event takes the deferred walk (walk_text.go): its text is handed
// over after the walk, which has validated it on the way. Any other takes
// the prescan (prescanTop) first.
func (r *Rewriter) walkTop() error {
	if r.text != nil && r.p.Perturb == 0 && !r.noDefer && !mayHoldResponsesText(r.s.b) {
		// The text goes to the text rewriter after the walk, which
		// validates the document on its way: one pass instead of a
		// validating prescan and then the walk.
		r.deferred = true
		r.tasks, r.defArrs, r.defEnts = r.tasks[:0], r.defArrs[:0], r.defEnts[:0]
		err := r.walkTopOnce()
		r.deferred = false
		if err == nil {
			r.flushTexts()
		}
		if err != errRetry {
			return err
		}
		// A Responses API object: walk again with the prescan, from a
		// clean slate (the text rewriter has seen nothing yet).
		r.patchList.reset(r.s.b)
		r.pend = r.pend[:0]
		r.s.reset(r.s.b)
	}
	return r.walkTopOnce()
}

// walkTopOnce is walkTop's walk of the top-level object.
func (r *Rewriter) walkTopOnce() error {
	s := &r.s
	s.ws()
	if s.peek() != '{' {
		return errNotObject
	}
	none := span{-1, -1}
	top := topInfo{text: none, itemID: none, seq: none, outR: none, cR: none}
	if !r.deferred && (r.text != nil || r.p.Perturb != 0 && bytes.Contains(s.b, []byte(keyOutputIdx))) {
		if err := r.prescanTop(&top); err != nil {
			return err
		}
	}
	var drops []TextSpan
	if r.text != nil {
		drops = r.topText(&top)
	}
	text := r.text != nil
	err := s.eachMember(func(ks, ke int) error {
		c := s.peek()
		switch string(s.b[ks:ke]) {
		case "choices":
			if (r.touchLP || r.text != nil) && c == '[' {
				return r.choices(1)
			}
		case "prompt_logprobs":
			if r.touchLP {
				return r.promptLogprobs(1, keyPrompt)
			}
		case "logprobs":
			if (r.touchLP || drops != nil) && c == '[' {
				r.entryDrops = drops
				err := r.respLogprobs(1, respKey(top.out, top.content), top.delta)
				r.entryDrops = nil
				return err
			}
		case "response":
			if (r.touchLP || text) && c == '{' {
				if r.deferred {
					return errRetry
				}
				return r.responseObj(1)
			}
		case "output":
			if (r.touchLP || text) && c == '[' {
				if r.deferred {
					return errRetry
				}
				return r.outputArr(1)
			}
		case "item":
			if (r.touchLP || text) && c == '{' {
				if r.deferred {
					return errRetry
				}
				return r.outputItem(1, top.out)
			}
		case "part":
			if (r.touchLP || text) && c == '{' {
				if r.deferred {
					return errRetry
				}
				return r.contentPart(1, top.out, top.content)
			}
		case "data":
			if r.touchEmb && c == '[' {
				return r.embData(1)
			}
		}
		return s.skipValue(1)
	})
	return s.end(err)
}
