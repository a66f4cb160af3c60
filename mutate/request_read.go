package mutate

import (
	"hash/maphash"
	"math"
	"strconv"
	"strings"
	"unicode"
	"unsafe"
)

// The strict request reader's second half: the guarded fields. Where the
// validator (strict.go) makes the body's tree unambiguous, this reads the
// members a policy acts on with the types the upstream declares for them,
// and refuses a body in which one has another type.
//
// vLLM declares its request models with pydantic v2 in lax mode
// (vllm/entrypoints/openai/protocol.py: ChatCompletionRequest,
// CompletionRequest, ResponsesRequest; OpenAIBaseModel allows extra
// fields), and lax mode coerces (https://docs.pydantic.dev/latest/concepts/conversion_table/):
// an int field takes an integral float (20.0, 2e1), a numeric string ("20",
// " 20 ", "+20", "2_0", "20.00") and a bool; a bool field takes 0, 1, 0.0,
// 1.0 and the strings "1", "true", "yes", "on", "t", "y" (any case) and
// their negations. The reader accepts a guarded field only as null, as the
// JSON type itself, or in the non-string forms both readings take as the
// same value: integral numbers (20.0, 2e1) and true/false (1, 0: Python's
// bool is an int) for integer fields, 0 and 1 for boolean fields. Every
// other form, every string the lax mode would coerce included, is refused
// with a 400 that names the field. So the value the upstream acts on is
// the value the policy judged, and capping it replaces the number in
// place.

// ReadOptions bound what ReadRequest accepts.
type ReadOptions struct {
	// Format is the API the request is addressed to (FormatForPath). It
	// decides which members are guarded and the declared type of those
	// whose type differs between APIs (logprobs is a boolean for chat
	// completions, an integer for legacy completions). FormatOpenAI, the
	// zero value, is any OpenAI-compatible endpoint: such a field may have
	// any of its declared types.
	Format Format
	// MaxPrompt caps the prompt texts kept for scoring (see ParseRequest).
	MaxPrompt int
	// MaxDepth bounds the nesting (0: DefaultMaxDepth).
	MaxDepth int
	// MaxBiasEntries bounds the entries of logit_bias and of the fields
	// that act like it (0: DefaultMaxBiasEntries).
	MaxBiasEntries int
}

// DefaultMaxBiasEntries bounds logit_bias: token restrictions of a few
// hundred entries are what structured-output libraries send; a body that
// biases tens of thousands of tokens is refused before it costs anything.
const DefaultMaxBiasEntries = 1024

// fieldType is the JSON type a guarded field must have (null is always
// accepted: every such field is optional).
type fieldType uint8

const (
	tInt           fieldType = iota // an integer, or an integral number
	tBool                           // true or false
	tIntOrBool                      // logprobs where the endpoint is unknown
	tString                         // a string
	tNumber                         // a finite number
	tObject                         // an object
	tArray                          // an array
	tObjectOrArray                  // logit_bias: an object (OpenAI, vLLM) or an array of pairs (llama.cpp)
	tStringArray                    // an array of strings
)

// fieldRole is what a policy does with a guarded field.
type fieldRole uint8

const (
	roleType      fieldRole = iota // typed for scoring only
	roleTopK                       // alternatives per token: capped at MaxTopLogprobs, > 0 asks for logprobs
	rolePromptK                    // prompt logprobs: capped; any value but null asks
	roleLogprobs                   // logprobs: true asks; an integer (legacy completions) is also roleTopK and asks
	roleAsk                        // a boolean that asks for logprobs when true
	roleEcho                       // echo: on chat completions vLLM returns prompt logprobs for it
	roleN                          // choices: capped at MaxN
	roleBias                       // logit_bias and the fields that act like it
	roleInclude                    // Responses include: its logprobs item asks for logprobs
	rolePromptAsk                  // a boolean that asks for prompt logprobs when true (TGI decoder_input_details)
)

// fieldSpec is a guarded field: its declared type and its role.
type fieldSpec struct {
	typ  fieldType
	role fieldRole
}

// nestedParent returns the top-level members of format f whose object
// members are guarded fields too: TGI's native parameters, Gemini's
// generation config (protobuf JSON accepts both spellings), Ollama's
// options. An OpenAI-compatible route reads the first two as well: the
// servers behind it (TGI, llama.cpp, vLLM) pass unknown members on to
// their native readers.
func nestedParent(f Format) func(name string) bool {
	return func(name string) bool {
		switch f {
		case FormatGemini:
			return name == "generationConfig" || name == "generation_config"
		case FormatTGI:
			return name == "parameters"
		case FormatOllama:
			return name == "options"
		case FormatLlamaCpp, FormatAnthropic:
			return false
		}
		switch name {
		case "parameters", "generationConfig", "generation_config":
			return true
		}
		return false
	}
}

// guardSpec returns the spec of the member name inside parent ("" for the
// top level) of a request of format f, and false when it is not guarded.
// The types and roles are those of the format's request table
// (RequestFieldsFor; TestGuardSpecMatchesFieldTable holds the two
// together): a Logprobs field asks, a TopLogprobs one is capped, an N one
// capped by MaxN, a LogitBias one dropped.
func guardSpec(parent, name string, f Format) (fieldSpec, bool) {
	var spec fieldSpec
	ok := false
	switch f {
	case FormatGemini:
		spec, ok = geminiSpec(parent, name)
	case FormatTGI:
		spec, ok = tgiSpec(parent, name)
	case FormatLlamaCpp:
		spec, ok = llamaCppSpec(parent, name)
	case FormatOllama:
		spec, ok = ollamaSpec(parent, name)
	case FormatAnthropic:
		spec, ok = anthropicSpec(parent, name)
	default:
		return openAISpec(parent, name, f)
	}
	if ok || parent != "" {
		return spec, ok
	}
	// The same path is often served by an OpenAI-compatible server too
	// (vLLM and LiteLLM expose /v1/messages, llama.cpp and Ollama read
	// unknown members leniently): a top-level OpenAI or vLLM member a
	// policy acts on is guarded whatever the format. A native upstream
	// ignores or refuses it; a compatible one honours it as capped.
	if s, ok := openAISpec("", name, FormatOpenAI); ok && s.role != roleType {
		return s, true
	}
	return fieldSpec{}, false
}

// openAISpec is guardSpec for the OpenAI kinds (and FormatOpenAI, any of
// them).
func openAISpec(parent, name string, f Format) (fieldSpec, bool) {
	switch parent {
	case "":
		switch name {
		case "model":
			return fieldSpec{tString, roleType}, true
		case "stream":
			return fieldSpec{tBool, roleType}, true
		case "temperature":
			return fieldSpec{tNumber, roleType}, true
		case "max_tokens", "max_completion_tokens", "max_output_tokens":
			return fieldSpec{tInt, roleType}, true
		case "n", "best_of":
			return fieldSpec{tInt, roleN}, true
		case "logprobs":
			switch f {
			case FormatOpenAIChat, FormatOpenAIResponses:
				return fieldSpec{tBool, roleLogprobs}, true
			case FormatOpenAICompletions:
				return fieldSpec{tInt, roleLogprobs}, true
			}
			return fieldSpec{tIntOrBool, roleLogprobs}, true
		case "top_logprobs",
			"n_probs",      // llama.cpp server
			"top_n_tokens": // TGI
			return fieldSpec{tInt, roleTopK}, true
		case "prompt_logprobs": // vLLM
			return fieldSpec{tInt, rolePromptK}, true
		case "echo":
			return fieldSpec{tBool, roleEcho}, true
		case "include":
			return fieldSpec{tStringArray, roleInclude}, true
		case "logit_bias":
			return fieldSpec{tObjectOrArray, roleBias}, true
		case "allowed_token_ids", "bad_words", "logits_processors": // vLLM
			return fieldSpec{tArray, roleBias}, true
		case "vllm_xargs": // vLLM: parameters for custom logits processors
			return fieldSpec{tObject, roleBias}, true
		}
	case "parameters": // TGI /generate
		return tgiSpec(parent, name)
	case "generationConfig", "generation_config": // Gemini
		return geminiSpec(parent, name)
	}
	return fieldSpec{}, false
}

// geminiSpec: GenerationConfig's responseLogprobs, logprobs and
// candidateCount (https://ai.google.dev/api/generate-content#v1beta.GenerationConfig),
// in either proto3 JSON spelling.
func geminiSpec(parent, name string) (fieldSpec, bool) {
	if parent != "generationConfig" && parent != "generation_config" {
		return fieldSpec{}, false
	}
	switch name {
	case "logprobs":
		return fieldSpec{tInt, roleTopK}, true
	case "responseLogprobs", "response_logprobs":
		return fieldSpec{tBool, roleAsk}, true
	case "candidateCount", "candidate_count":
		return fieldSpec{tInt, roleN}, true
	case "maxOutputTokens", "max_output_tokens":
		return fieldSpec{tInt, roleType}, true
	}
	return fieldSpec{}, false
}

// tgiSpec: GenerateRequest's inputs, stream (compatibility route) and
// GenerateParameters (docs/openapi.json of text-generation-inference).
func tgiSpec(parent, name string) (fieldSpec, bool) {
	switch parent {
	case "":
		switch name {
		case "stream":
			return fieldSpec{tBool, roleType}, true
		case "inputs":
			return fieldSpec{tString, roleType}, true
		}
	case "parameters":
		switch name {
		case "top_n_tokens":
			return fieldSpec{tInt, roleTopK}, true
		case "details":
			return fieldSpec{tBool, roleAsk}, true
		case "decoder_input_details":
			return fieldSpec{tBool, rolePromptAsk}, true
		case "best_of":
			return fieldSpec{tInt, roleN}, true
		case "max_new_tokens":
			return fieldSpec{tInt, roleType}, true
		case "temperature":
			return fieldSpec{tNumber, roleType}, true
		case "grammar":
			return fieldSpec{tObject, roleBias}, true
		}
	}
	return fieldSpec{}, false
}

// llamaCppSpec: the members of llama.cpp's POST /completion
// (tools/server/README.md) a policy acts on.
func llamaCppSpec(parent, name string) (fieldSpec, bool) {
	if parent != "" {
		return fieldSpec{}, false
	}
	switch name {
	case "stream", "post_sampling_probs":
		return fieldSpec{tBool, roleType}, true
	case "n_predict", "max_tokens":
		return fieldSpec{tInt, roleType}, true
	case "temperature":
		return fieldSpec{tNumber, roleType}, true
	case "n_probs":
		return fieldSpec{tInt, roleTopK}, true
	case "logit_bias":
		return fieldSpec{tObjectOrArray, roleBias}, true
	case "grammar":
		return fieldSpec{tString, roleBias}, true
	case "json_schema":
		return fieldSpec{tObject, roleBias}, true
	}
	return fieldSpec{}, false
}

// ollamaSpec: /api/generate and /api/chat (https://docs.ollama.com/api/generate).
// Ollama reads bodies with Go's encoding/json, which matches member names
// case-insensitively: the reader folds names for this format (foldNames).
func ollamaSpec(parent, name string) (fieldSpec, bool) {
	switch parent {
	case "":
		switch name {
		case "model", "prompt", "system":
			return fieldSpec{tString, roleType}, true
		case "stream":
			return fieldSpec{tBool, roleType}, true
		case "logprobs":
			return fieldSpec{tBool, roleAsk}, true
		case "top_logprobs":
			return fieldSpec{tInt, roleTopK}, true
		}
	case "options":
		switch name {
		case "num_predict":
			return fieldSpec{tInt, roleType}, true
		case "temperature":
			return fieldSpec{tNumber, roleType}, true
		}
	}
	return fieldSpec{}, false
}

// anthropicSpec: the Messages API has no logprobs; its parameters are read
// for scoring (https://docs.anthropic.com/en/api/messages).
func anthropicSpec(parent, name string) (fieldSpec, bool) {
	if parent != "" {
		return fieldSpec{}, false
	}
	switch name {
	case "model":
		return fieldSpec{tString, roleType}, true
	case "stream":
		return fieldSpec{tBool, roleType}, true
	case "max_tokens":
		return fieldSpec{tInt, roleType}, true
	case "temperature":
		return fieldSpec{tNumber, roleType}, true
	}
	return fieldSpec{}, false
}

// biasField reports the top-level fields whose entries are bounded
// (MaxBiasEntries), so that an absurd one is refused while it is being
// validated, before it costs anything more.
func biasField(f Format) func(name string) bool {
	return func(name string) bool {
		s, ok := guardSpec("", canonicalName(f, name), f)
		return ok && s.role == roleBias
	}
}

// field is a guarded member found in the body, read.
type field struct {
	spec    fieldSpec
	name    string // the member's name, canonical (canonicalName)
	obj     int    // -1: the top-level object; else an index into Body.inner
	idx     int    // the member's index in its object
	null    bool
	isInt   bool    // a number (for tIntOrBool: the integer form)
	num     float64 // the number, for tInt, tNumber and integer tIntOrBool
	flag    bool    // the boolean, for tBool and boolean tIntOrBool
	str     string  // tString
	entries int     // roleBias: members or elements
	asks    bool    // this member asks for logprobs
	// fromBool: an integer field given as true or false (1, 0)
	fromBool bool
}

func map01(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Body is a request body ReadRequest understood: its guarded fields are
// read the way the upstream reads them, and Rewrite changes them in place.
type Body struct {
	// Request is the scoring view of the body; its parameter fields
	// (Model, Stream, N, MaxTokens, Temperature, Logprobs, TopLogprobs,
	// LogitBiasSize, Echo) come from the guarded reading.
	Request
	doc    []byte
	ep     Format
	top    object
	inner  []object
	fields []field
	asks   bool
}

// Asks reports whether the body asks for logprobs in any form the
// upstream honours.
func (b *Body) Asks() bool { return b.asks }

// ReadRequest validates body strictly and reads its guarded fields. It
// returns a *RequestError for a body it refuses.
func ReadRequest(body []byte, o ReadOptions) (*Body, error) {
	maxBias := o.MaxBiasEntries
	if maxBias <= 0 {
		maxBias = DefaultMaxBiasEntries
	}
	v := validator{b: body, maxDepth: o.MaxDepth, seed: newSeed(), nested: func(n string) bool { return nestedParent(o.Format)(canonicalName(o.Format, n)) }, limited: biasField(o.Format), maxEntries: maxBias}
	if v.maxDepth <= 0 {
		v.maxDepth = DefaultMaxDepth
	}
	if err := v.validate(); err != nil {
		return nil, err
	}
	b := &Body{doc: body, ep: o.Format, top: v.top, inner: v.inner}
	nested := nestedParent(o.Format)
	read := func(parent string, obj int, ms []member) error {
		var seen []string // canonical names of the guarded members of this object
		for i := range ms {
			name := canonicalName(o.Format, ms[i].name)
			spec, ok := guardSpec(parent, name, o.Format)
			if !ok && !(obj < 0 && nested(name)) {
				continue
			}
			// Two spellings the upstream reads as one member: no single
			// reading (see canonicalName; exact duplicates the validator
			// refused already).
			for _, n := range seen {
				if n == name {
					return &RequestError{Status: 400, Reason: RefuseDuplicate, Param: ms[i].name,
						Message: "request body: member " + strconv.Quote(ms[i].name) + " is given twice under different spellings"}
				}
			}
			seen = append(seen, name)
			if !ok {
				continue
			}
			f, err := b.readField(spec, &ms[i], maxBias)
			if err != nil {
				return err
			}
			f.obj, f.idx, f.name = obj, i, name
			b.fields = append(b.fields, f)
		}
		return nil
	}
	if err := read("", -1, b.top.members); err != nil {
		return nil, err
	}
	for k := range b.inner {
		if err := read(canonicalName(o.Format, v.innerOf[k]), k, b.inner[k].members); err != nil {
			return nil, err
		}
	}
	b.fillRequest(o.MaxPrompt)
	return b, nil
}

// canonicalName is the name under which the upstream of format f reads a
// member. Google's APIs parse proto3 JSON, which accepts a field under its
// lowerCamelCase JSON name and under its proto name
// (https://protobuf.dev/programming-guides/json/: "Parsers accept both
// the lowerCamelCase name ... and the original proto field name"):
// the canonical form is the proto name. Ollama reads with Go's
// encoding/json, which matches names case-insensitively under Unicode
// simple folding ("preferring an exact match but also accepting a
// case-insensitive match", so "LogProbs" and "ſtream" are logprobs and
// stream there): the canonical form folds every rune whose case orbit
// holds an ASCII letter to that letter in lower case. Two members with one
// canonical name are refused (ReadRequest) because the two readers could
// take different ones.
func canonicalName(f Format, name string) string {
	switch f {
	case FormatGemini:
		return ProtoName(name)
	case FormatOllama:
		return foldASCII(name)
	}
	return name
}

// foldASCII maps each rune whose simple case folding orbit contains an
// ASCII letter to that letter, lower-cased (K, the Kelvin sign, is k;
// the long s is s).
func foldASCII(name string) string {
	ascii := true
	for i := 0; i < len(name); i++ {
		if c := name[i]; c >= 0x80 || 'A' <= c && c <= 'Z' {
			ascii = false
			break
		}
	}
	if ascii {
		return name
	}
	var b strings.Builder
	for _, r := range name {
		out := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			if 'a' <= f && f <= 'z' {
				out = f
			}
		}
		if 'A' <= r && r <= 'Z' {
			out = r + 'a' - 'A'
		}
		b.WriteRune(out)
	}
	return b.String()
}

// newSeed keys the hash the validator compares member names with; a
// fresh seed per body makes collisions impossible to aim at.
func newSeed() maphash.Seed { return maphash.MakeSeed() }

func fieldErr(name, msg string) *RequestError {
	return &RequestError{Status: 400, Reason: RefuseFieldType, Param: name, Message: name + " " + msg}
}

// readField reads one guarded member as its spec declares it.
func (b *Body) readField(spec fieldSpec, m *member, maxBias int) (field, error) {
	f := field{spec: spec}
	raw := b.doc[m.vs:m.e]
	c := raw[0]
	if c == 'n' {
		f.null = true
		return f, nil
	}
	isNum := c == '-' || isDigit(c)
	switch spec.typ {
	case tInt:
		switch {
		case isNum:
			if err := f.integer(m.name, raw); err != nil {
				return f, err
			}
		case c == 't' || c == 'f':
			// Python's bool is an int: pydantic takes true as 1.
			f.isInt, f.num, f.fromBool = true, map01(c == 't'), true
		default:
			return f, fieldErr(m.name, "must be an integer")
		}
	case tBool:
		switch {
		case c == 't' || c == 'f':
			f.flag = c == 't'
		case isNum:
			// pydantic takes the numbers 0 and 1 (0.0, 1.0) as booleans.
			v, _ := strconv.ParseFloat(unsafe.String(unsafe.SliceData(raw), len(raw)), 64)
			if v != 0 && v != 1 {
				return f, fieldErr(m.name, "must be a boolean")
			}
			f.flag = v == 1
		default:
			return f, fieldErr(m.name, "must be a boolean")
		}
	case tIntOrBool:
		switch {
		case c == 't' || c == 'f':
			f.flag = c == 't'
		case isNum:
			if err := f.integer(m.name, raw); err != nil {
				return f, err
			}
		default:
			return f, fieldErr(m.name, "must be a boolean or an integer")
		}
	case tNumber:
		if !isNum {
			return f, fieldErr(m.name, "must be a number")
		}
		v, err := strconv.ParseFloat(unsafe.String(unsafe.SliceData(raw), len(raw)), 64)
		if err != nil || math.IsInf(v, 0) {
			return f, fieldErr(m.name, "is out of range")
		}
		f.num = v
	case tString:
		if c != '"' {
			return f, fieldErr(m.name, "must be a string")
		}
		dec, lone := appendUnescaped(nil, raw[1:len(raw)-1])
		if lone {
			return f, fieldErr(m.name, "has a lone surrogate escape")
		}
		f.str = string(dec)
	case tObject, tArray, tObjectOrArray:
		ok := c == '{' && spec.typ != tArray || c == '[' && spec.typ != tObject
		if !ok {
			want := "must be an object"
			if spec.typ == tArray {
				want = "must be an array"
			}
			return f, fieldErr(m.name, want)
		}
		n, _ := countEntries(raw, maxBias)
		if n > maxBias {
			return f, &RequestError{Status: 400, Reason: RefuseFieldSize, Param: m.name,
				Message: m.name + " has more than " + strconv.Itoa(maxBias) + " entries"}
		}
		f.entries = n
	case tStringArray:
		items, ok := jsonArray(raw)
		if !ok {
			return f, fieldErr(m.name, "must be an array of strings")
		}
		for _, it := range items {
			if it[0] != '"' {
				return f, fieldErr(m.name, "must be an array of strings")
			}
			dec, _ := appendUnescaped(nil, it[1:len(it)-1])
			if string(dec) == respLogprobsInclude {
				f.flag = true
			}
		}
	}
	return f, nil
}

// integer reads an integer-typed value: a JSON integer, or a number with
// an integral value (pydantic's float_as_int takes 20.0 as 20; Python
// parses the literal to the same float64 strconv does, both correctly
// rounded).
func (f *field) integer(name string, raw []byte) error {
	v, err := strconv.ParseFloat(unsafe.String(unsafe.SliceData(raw), len(raw)), 64)
	if err != nil && math.IsInf(v, 0) {
		// Python reads such a literal as inf (a float) or as an int
		// pydantic refuses beyond 4300 digits; neither is a count.
		return fieldErr(name, "is out of range")
	}
	if v != math.Trunc(v) {
		return fieldErr(name, "must be an integer")
	}
	f.isInt, f.num = true, v
	return nil
}

// fillRequest decides which members ask for logprobs and fills in the
// scoring view.
func (b *Body) fillRequest(maxPrompt int) {
	req := &b.Request
	// max_completion_tokens, max_tokens, max_output_tokens (OpenAI; also
	// Gemini's maxOutputTokens in its proto spelling), then the native
	// names: TGI's max_new_tokens, llama.cpp's n_predict, Ollama's
	// options.num_predict.
	maxTokens := [4]int{-1, -1, -1, -1}
	streamSet := false
	for i := range b.fields {
		f := &b.fields[i]
		if f.null {
			continue
		}
		name := f.name
		switch f.spec.role {
		case roleType:
			switch name {
			case "model":
				req.Model = f.str
			case "stream":
				req.Stream, streamSet = f.flag, true
			case "temperature":
				t := f.num
				req.Temperature = &t
			case "max_completion_tokens":
				maxTokens[0] = clampInt(f.num)
			case "max_tokens":
				maxTokens[1] = clampInt(f.num)
			case "max_output_tokens", "maxOutputTokens":
				maxTokens[2] = clampInt(f.num)
			case "max_new_tokens", "n_predict", "num_predict":
				maxTokens[3] = clampInt(f.num)
			}
		case roleTopK:
			f.asks = f.num > 0
			req.TopLogprobs = max(req.TopLogprobs, clampInt(f.num))
		case rolePromptK:
			f.asks = true
			req.TopLogprobs = max(req.TopLogprobs, clampInt(f.num))
		case roleLogprobs:
			if f.isInt {
				// Legacy completions: logprobs=0 still returns the chosen
				// token's logprob.
				f.asks = f.num >= 0
				req.TopLogprobs = max(req.TopLogprobs, clampInt(f.num))
			} else {
				f.asks = f.flag
			}
		case roleAsk:
			f.asks = f.flag
		case rolePromptAsk:
			f.asks = f.flag
			req.Echo = req.Echo || f.flag
		case roleEcho:
			req.Echo = f.flag
			// vLLM's chat completions take prompt_logprobs from
			// top_logprobs when echo is set (ChatCompletionRequest.
			// to_sampling_params), so echo alone returns the prompt's
			// logprobs there; legacy completions need logprobs too.
			f.asks = f.flag && b.ep != FormatOpenAICompletions
		case roleN:
			if name == "n" && f.obj < 0 || name == "candidate_count" || name == "candidateCount" {
				req.N = clampInt(f.num)
			}
		case roleBias:
			if name == "logit_bias" {
				req.LogitBiasSize = f.entries
			}
		case roleInclude:
			f.asks = f.flag
		}
		if f.asks {
			b.asks = true
		}
	}
	for _, v := range maxTokens {
		if v >= 0 {
			req.MaxTokens = v
			break
		}
	}
	if !streamSet && b.ep == FormatOllama {
		// Ollama streams unless told not to (RequestFields.StreamByDefault).
		req.Stream = true
	}
	req.Logprobs = b.asks
	top := make(topObject, len(b.top.members))
	for i, m := range b.top.members {
		top[i] = topMember{m.name, b.doc[m.vs:m.e]}
	}
	readContent(req, top, maxPrompt)
}

// clampInt clamps an integral float64 to the int32 range (as jsonInt).
func clampInt(v float64) int { return int(max(min(v, math.MaxInt32), math.MinInt32)) }

// member returns the member a field was read from.
func (b *Body) member(f *field) *member {
	if f.obj < 0 {
		return &b.top.members[f.idx]
	}
	return &b.inner[f.obj].members[f.idx]
}

// Rewrite appends the body rewritten by p to dst and reports whether it
// changed. Untouched bytes are copied through; a removed member goes with
// its comma, a capped number is replaced in place, so the result is strict
// JSON without duplicates again, and the upstream reads exactly what the
// policy left.
//
// p.MaxTopLogprobs caps top_logprobs, the integer logprobs of legacy
// completions, prompt_logprobs and the other alternatives counts
// (llama.cpp's n_probs, TGI's top_n_tokens, Gemini's logprobs); p.MaxN
// caps n and best_of (TGI's best_of, Gemini's candidateCount).
// p.DropLogitBias removes logit_bias and the fields that act like it
// (vLLM's allowed_token_ids, bad_words, logits_processors and vllm_xargs:
// a vocabulary restriction or a custom processor moves logits the way a
// bias does); p.DropLogitBiasWithLogprobs removes them when the body asks
// for logprobs in any form. p.StripLogprobs removes every logprobs request
// (and echo, except on legacy completions, and the include value
// "message.output_text.logprobs").
func (b *Body) Rewrite(dst []byte, p RequestPolicy) ([]byte, bool) {
	if p.IsNoop() {
		return append(dst, b.doc...), false
	}
	var r requestRewriter
	r.reset(b.doc)
	dropBias := p.DropLogitBias || p.DropLogitBiasWithLogprobs && b.asks
	for _, o := range b.objects() {
		for i := range o.members {
			o.members[i].keep = true
		}
	}
	for i := range b.fields {
		f := &b.fields[i]
		m := b.member(f)
		switch f.spec.role {
		case roleBias:
			m.keep = !dropBias
		case roleTopK, rolePromptK, roleLogprobs, roleAsk, rolePromptAsk:
			m.keep = !p.StripLogprobs
		case roleEcho:
			m.keep = !(p.StripLogprobs && b.ep != FormatOpenAICompletions)
		}
		if f.spec.role == roleTopK && b.ep == FormatGemini && p.MaxTopLogprobs == 0 {
			// Vertex AI takes logprobs in [1, 20]: a cap of 0 is the
			// member's absence (chosen tokens only).
			m.keep = false
		}
		if !m.keep || f.null {
			continue
		}
		switch f.spec.role {
		case roleTopK, rolePromptK, roleLogprobs:
			if f.isInt && p.MaxTopLogprobs >= 0 && f.num > float64(p.MaxTopLogprobs) {
				r.replace(m.vs, m.e, strconv.Itoa(p.MaxTopLogprobs))
			}
		case roleN:
			if p.MaxN > 0 && f.num > float64(p.MaxN) {
				r.replace(m.vs, m.e, strconv.Itoa(p.MaxN))
			}
		case roleInclude:
			if p.StripLogprobs && f.flag {
				r.dropIncludeLogprobs(m.vs)
			}
		}
	}
	for _, o := range b.objects() {
		d := r.dropper()
		for _, m := range o.members {
			d.item(m.s, m.e, m.keep)
		}
		d.done(o.open, o.close)
	}
	return r.apply(dst)
}

// objects returns the recorded objects, the top level first.
func (b *Body) objects() []*object {
	out := make([]*object, 0, 1+len(b.inner))
	out = append(out, &b.top)
	for k := range b.inner {
		out = append(out, &b.inner[k])
	}
	return out
}
