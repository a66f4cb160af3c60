package mutate

import "strings"

// The request side of each format: which members of a request body mean
// what in terms of RequestPolicy (logprobs asked for, how many
// alternatives, how many candidates, logit-bias-like controls, prompt
// distributions, output length) and where scoring finds the prompt, the
// system text, the conversation and the tools. The request parser reads
// this table; nothing here parses a body.
//
// Paths are member names from the body's top level joined with "."; "[]"
// stands for every element of an array ("messages[].content"). Google's
// APIs parse requests as proto3 JSON, which accepts every member under its
// lowerCamelCase name and under its proto field name
// (https://protobuf.dev/programming-guides/json/): their paths are listed
// in lowerCamelCase with ProtoNames set, and ProtoName gives the other
// spelling of each segment (a parser must accept any mix of the two).

// FieldType is the JSON type an upstream accepts for a request field.
type FieldType uint8

const (
	TypeBool FieldType = iota
	TypeInt
	TypeNumber
	TypeString
	TypeObject
	TypeArray
	TypeAny // several shapes (string or array, bool or string, ...): see Note
)

// String names the type as JSON does.
func (t FieldType) String() string {
	switch t {
	case TypeBool:
		return "boolean"
	case TypeInt:
		return "integer"
	case TypeNumber:
		return "number"
	case TypeString:
		return "string"
	case TypeObject:
		return "object"
	case TypeArray:
		return "array"
	}
	return "any"
}

// RequestField is one request member a policy acts on or scoring reads.
type RequestField struct {
	Path string
	Type FieldType
	Note string // how the upstream reads it: defaults, bounds, aliases
}

// Endpoint is a request path of a format. In Pattern, "{x}" is one path
// segment and "{x}:verb" a segment ending in ":verb" (Google's custom
// methods); the query string is not part of it. Stream is set for a path
// that always streams (TGI's /generate_stream, Gemini's
// :streamGenerateContent, whose framing is SSE with the query alt=sse and
// one JSON array without it).
type Endpoint struct {
	Method, Pattern string
	Stream          bool
}

// RequestFields is what one format's request bodies mean.
type RequestFields struct {
	Format    Format
	Endpoints []Endpoint
	Docs      []string // the references the fields are taken from
	// ProtoNames is set when every path segment is also accepted in its
	// proto field name spelling (ProtoName).
	ProtoNames bool

	// Stream selects a streamed response; StreamByDefault is set when the
	// API streams unless told not to.
	Stream          []RequestField
	StreamByDefault bool
	// Logprobs asks for the sampled tokens' logprobs
	// (RequestPolicy.StripLogprobs removes it or sets it false).
	Logprobs []RequestField
	// TopLogprobs is the number of alternatives per position
	// (RequestPolicy.MaxTopLogprobs caps it).
	TopLogprobs []RequestField
	// PromptLogprobs asks for distributions over the prompt's positions
	// (StripLogprobs removes it; a count is capped by MaxTopLogprobs).
	PromptLogprobs []RequestField
	// N is the number of candidates sampled (RequestPolicy.MaxN caps it).
	N []RequestField
	// LogitBias holds per-token biases and the controls that act like
	// them (RequestPolicy.DropLogitBias and DropLogitBiasWithLogprobs):
	// with logprobs they recover the output projection (Carlini et al.
	// 2024, Finlayson et al. 2024).
	LogitBias []RequestField
	// MaxTokens caps the output length.
	MaxTokens []RequestField
	// Reasoning asks for reasoning text in the response.
	Reasoning []RequestField
	// Shape changes where the response carries what the output rewriter
	// changes (the layout it walks).
	Shape []RequestField

	// For scoring.
	Model    []RequestField
	Prompt   []RequestField // raw prompt text (completion-style APIs)
	System   []RequestField // system / developer instructions
	Messages []RequestField // the conversation: roles and content
	Tools    []RequestField // tool and function definitions
}

func post(pattern string) Endpoint { return Endpoint{Method: "POST", Pattern: pattern} }

func fb(path, note string) RequestField   { return RequestField{path, TypeBool, note} }
func fi(path, note string) RequestField   { return RequestField{path, TypeInt, note} }
func fs(path, note string) RequestField   { return RequestField{path, TypeString, note} }
func fo(path, note string) RequestField   { return RequestField{path, TypeObject, note} }
func fa(path, note string) RequestField   { return RequestField{path, TypeArray, note} }
func fany(path, note string) RequestField { return RequestField{path, TypeAny, note} }

// RequestFieldsFor returns the request table of format f (a new value on
// every call: build it once, at configuration time). FormatOpenAI is the
// union of the four OpenAI kinds.
func RequestFieldsFor(f Format) RequestFields {
	switch f {
	case FormatOpenAIChat:
		return openAIChatFields()
	case FormatOpenAICompletions:
		return openAICompletionsFields()
	case FormatOpenAIResponses:
		return openAIResponsesFields()
	case FormatOpenAIEmbeddings:
		return openAIEmbeddingsFields()
	case FormatGemini:
		return geminiFields()
	case FormatTGI:
		return tgiFields()
	case FormatLlamaCpp:
		return llamaCppFields()
	case FormatOllama:
		return ollamaFields()
	case FormatAnthropic:
		return anthropicFields()
	}
	return openAIUnion()
}

// vLLM's extra sampling parameters, accepted on its chat and completions
// endpoints (https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html#extra-parameters).
const vllmDocs = "https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html#extra-parameters"

func vllmLogitBiasLike() []RequestField {
	return []RequestField{
		fa("allowed_token_ids", "vLLM: sampling restricted to these token ids; acts as a bias of -inf on every other token"),
		fa("bad_words", "vLLM: words whose tokens are banned; a negative bias on chosen tokens"),
	}
}

func openAIChatFields() RequestFields {
	return RequestFields{
		Format:    FormatOpenAIChat,
		Endpoints: []Endpoint{post("/v1/chat/completions")},
		Docs:      []string{"https://platform.openai.com/docs/api-reference/chat/create", vllmDocs},
		Stream:    []RequestField{fb("stream", "server-sent events; stream_options.include_usage adds a usage chunk")},
		Logprobs:  []RequestField{fb("logprobs", "default false")},
		TopLogprobs: []RequestField{
			fi("top_logprobs", "0-20, needs logprobs true; vLLM bounds it by the server's --max-logprobs (default 20; -1 there: the whole vocabulary)"),
		},
		PromptLogprobs: []RequestField{
			fi("prompt_logprobs", "vLLM: alternatives per prompt position, answered in a top-level prompt_logprobs; bounded by --max-logprobs"),
			fb("echo", "vLLM: the last message is echoed before the answer, with logprobs when asked"),
		},
		N: []RequestField{
			fi("n", "default 1"),
			fi("best_of", "vLLM: candidates sampled server-side, n returned"),
		},
		LogitBias: append([]RequestField{
			fo("logit_bias", "token id (string) -> bias in [-100, 100]"),
		}, vllmLogitBiasLike()...),
		MaxTokens: []RequestField{
			fi("max_completion_tokens", ""),
			fi("max_tokens", "deprecated alias"),
		},
		Reasoning: []RequestField{
			fs("reasoning_effort", "reasoning models"),
			fo("chat_template_kwargs", "vLLM: enable_thinking and similar template switches"),
		},
		Model: []RequestField{fs("model", "")},
		System: []RequestField{
			fany("messages[].content", "of messages whose role is system or developer: a string or text parts"),
		},
		Messages: []RequestField{
			fa("messages", "roles system, developer, user, assistant, tool (function: deprecated)"),
			fany("messages[].content", "a string or parts [{type: text, text}, {type: image_url}, {type: input_audio}, {type: file}]"),
			fa("messages[].tool_calls", "assistant tool calls; their results are role tool messages"),
		},
		Tools: []RequestField{
			fa("tools", "[{type: function, function: {name, description, parameters}}]"),
			fa("functions", "deprecated"),
		},
	}
}

func openAICompletionsFields() RequestFields {
	return RequestFields{
		Format:    FormatOpenAICompletions,
		Endpoints: []Endpoint{post("/v1/completions")},
		Docs:      []string{"https://platform.openai.com/docs/api-reference/completions/create", vllmDocs},
		Stream:    []RequestField{fb("stream", "")},
		Logprobs: []RequestField{
			fi("logprobs", "an integer: asks for logprobs and is the number of alternatives (OpenAI 0-5; vLLM up to --max-logprobs)"),
		},
		TopLogprobs: []RequestField{fi("logprobs", "the same member")},
		PromptLogprobs: []RequestField{
			fb("echo", "the prompt is echoed; with logprobs its tokens come first in the logprobs arrays, the first one null"),
			fi("prompt_logprobs", "vLLM: per choice, alternatives per prompt position"),
		},
		N: []RequestField{
			fi("n", "default 1"),
			fi("best_of", "candidates sampled server-side (>= n)"),
		},
		LogitBias: append([]RequestField{
			fo("logit_bias", "token id (string) -> bias in [-100, 100]"),
		}, vllmLogitBiasLike()...),
		MaxTokens: []RequestField{fi("max_tokens", "default 16")},
		Model:     []RequestField{fs("model", "")},
		Prompt: []RequestField{
			fany("prompt", "a string, an array of strings, a token array or an array of token arrays (one completion each)"),
			fs("suffix", "text after the completion"),
		},
	}
}

func openAIResponsesFields() RequestFields {
	return RequestFields{
		Format:    FormatOpenAIResponses,
		Endpoints: []Endpoint{post("/v1/responses")},
		Docs:      []string{"https://platform.openai.com/docs/api-reference/responses/create"},
		Stream:    []RequestField{fb("stream", "")},
		Logprobs: []RequestField{
			fa("include", `contains "message.output_text.logprobs"`),
		},
		TopLogprobs: []RequestField{fi("top_logprobs", "0-20")},
		MaxTokens:   []RequestField{fi("max_output_tokens", "")},
		Reasoning:   []RequestField{fo("reasoning", "effort and summary; include reasoning.encrypted_content")},
		Model:       []RequestField{fs("model", "")},
		Prompt:      []RequestField{fany("input", "a string (else input items, see Messages)")},
		System: []RequestField{
			fs("instructions", ""),
			fany("input[].content", "of items whose role is system or developer"),
		},
		Messages: []RequestField{
			fany("input", "items: messages {role, content: string or [{type: input_text, text}, ...]}, function_call, function_call_output, reasoning"),
			fs("previous_response_id", "the conversation so far is held server-side"),
			fany("conversation", "a conversation object held server-side"),
		},
		Tools: []RequestField{fa("tools", "function, web_search, file_search, mcp, ... tools")},
	}
}

func openAIEmbeddingsFields() RequestFields {
	return RequestFields{
		Format:    FormatOpenAIEmbeddings,
		Endpoints: []Endpoint{post("/v1/embeddings")},
		Docs:      []string{"https://platform.openai.com/docs/api-reference/embeddings/create"},
		Shape: []RequestField{
			fs("encoding_format", "float (default) or base64: the layout the embedding rounding reads"),
			fi("dimensions", ""),
		},
		Model:  []RequestField{fs("model", "")},
		Prompt: []RequestField{fany("input", "a string, an array of strings, a token array or an array of token arrays")},
	}
}

// openAIUnion merges the four OpenAI kinds: what a route that takes any
// of them must read.
func openAIUnion() RequestFields {
	u := RequestFields{Format: FormatOpenAI}
	for _, k := range []RequestFields{openAIChatFields(), openAICompletionsFields(), openAIResponsesFields(), openAIEmbeddingsFields()} {
		u.Endpoints = append(u.Endpoints, k.Endpoints...)
		u.Docs = appendNew(u.Docs, k.Docs...)
		u.Stream = mergeFields(u.Stream, k.Stream)
		u.Logprobs = mergeFields(u.Logprobs, k.Logprobs)
		u.TopLogprobs = mergeFields(u.TopLogprobs, k.TopLogprobs)
		u.PromptLogprobs = mergeFields(u.PromptLogprobs, k.PromptLogprobs)
		u.N = mergeFields(u.N, k.N)
		u.LogitBias = mergeFields(u.LogitBias, k.LogitBias)
		u.MaxTokens = mergeFields(u.MaxTokens, k.MaxTokens)
		u.Reasoning = mergeFields(u.Reasoning, k.Reasoning)
		u.Shape = mergeFields(u.Shape, k.Shape)
		u.Model = mergeFields(u.Model, k.Model)
		u.Prompt = mergeFields(u.Prompt, k.Prompt)
		u.System = mergeFields(u.System, k.System)
		u.Messages = mergeFields(u.Messages, k.Messages)
		u.Tools = mergeFields(u.Tools, k.Tools)
	}
	return u
}

// mergeFields appends the fields of b whose path a lacks; a path present
// in both with another type becomes TypeAny (logprobs: chat's boolean,
// completions' integer).
func mergeFields(a, b []RequestField) []RequestField {
next:
	for _, f := range b {
		for i := range a {
			if a[i].Path == f.Path {
				if a[i].Type != f.Type {
					a[i].Type = TypeAny
					a[i].Note += "; " + f.Note
				}
				continue next
			}
		}
		a = append(a, f)
	}
	return a
}

func appendNew(a []string, b ...string) []string {
	for _, s := range b {
		found := false
		for _, t := range a {
			found = found || t == s
		}
		if !found {
			a = append(a, s)
		}
	}
	return a
}

func geminiFields() RequestFields {
	var eps []Endpoint
	for _, v := range []string{"v1", "v1beta"} {
		for _, m := range []string{"generateContent", "streamGenerateContent"} {
			eps = append(eps,
				Endpoint{"POST", "/" + v + "/models/{model}:" + m, m != "generateContent"},
				Endpoint{"POST", "/" + v + "/tunedModels/{model}:" + m, m != "generateContent"})
		}
	}
	for _, v := range []string{"v1", "v1beta1"} {
		for _, m := range []string{"generateContent", "streamGenerateContent"} {
			eps = append(eps,
				Endpoint{"POST", "/" + v + "/projects/{project}/locations/{location}/publishers/google/models/{model}:" + m, m != "generateContent"},
				Endpoint{"POST", "/" + v + "/projects/{project}/locations/{location}/endpoints/{endpoint}:" + m, m != "generateContent"})
		}
	}
	return RequestFields{
		Format:    FormatGemini,
		Endpoints: eps,
		Docs: []string{
			"https://ai.google.dev/api/generate-content#v1beta.GenerationConfig",
			"https://cloud.google.com/vertex-ai/generative-ai/docs/reference/rest/v1/GenerationConfig",
		},
		ProtoNames:  true,
		Logprobs:    []RequestField{fb("generationConfig.responseLogprobs", "default false")},
		TopLogprobs: []RequestField{fi("generationConfig.logprobs", "alternatives per decoding step, valid only with responseLogprobs; Gemini API [0, 20], Vertex AI [1, 20]")},
		N:           []RequestField{fi("generationConfig.candidateCount", "default 1")},
		MaxTokens:   []RequestField{fi("generationConfig.maxOutputTokens", "")},
		Reasoning:   []RequestField{fo("generationConfig.thinkingConfig", "includeThoughts returns thought parts (parts[].thought true)")},
		System:      []RequestField{fo("systemInstruction", "a Content: parts[].text")},
		Messages: []RequestField{
			fa("contents", "[{role: user or model, parts: [{text}, {inlineData}, {fileData}, {functionCall}, {functionResponse}]}]"),
			fs("cachedContent", "a prompt prefix held server-side"),
		},
		Tools: []RequestField{
			fa("tools", "[{functionDeclarations: [{name, description, parameters}]}, {codeExecution}, {googleSearch}]"),
			fo("toolConfig", ""),
		},
	}
}

// ProtoName returns path with every lowerCamelCase segment in its proto
// field name spelling ("generationConfig.responseLogprobs" ->
// "generation_config.response_logprobs").
func ProtoName(path string) string {
	var b strings.Builder
	for i := 0; i < len(path); i++ {
		c := path[i]
		if 'A' <= c && c <= 'Z' {
			b.WriteByte('_')
			c += 'a' - 'A'
		}
		b.WriteByte(c)
	}
	return b.String()
}

func tgiFields() RequestFields {
	return RequestFields{
		Format: FormatTGI,
		Endpoints: []Endpoint{
			post("/generate"), {Method: "POST", Pattern: "/generate_stream", Stream: true}, post("/"),
		},
		Docs: []string{"https://huggingface.github.io/text-generation-inference/ (docs/openapi.json: GenerateRequest, GenerateParameters, CompatGenerateRequest)"},
		Stream: []RequestField{
			fb("stream", "only on the compatibility route /; /generate_stream always streams"),
		},
		Logprobs: []RequestField{
			fb("parameters.details", "token logprobs in details.tokens; streamed events carry token.logprob whatever it says"),
		},
		TopLogprobs: []RequestField{
			fi("parameters.top_n_tokens", "alternatives per position; bounded by the server's --max-top-n-tokens (default 5)"),
		},
		PromptLogprobs: []RequestField{
			fb("parameters.decoder_input_details", "prompt token logprobs in details.prefill (not with streaming)"),
		},
		N: []RequestField{
			fi("parameters.best_of", "sequences sampled, returned in details.best_of_sequences; bounded by --max-best-of (default 2)"),
		},
		LogitBias: []RequestField{
			fo("parameters.grammar", "not a bias: restricts sampling to a JSON schema or regex, so it forces chosen tokens as a bias would"),
		},
		MaxTokens: []RequestField{fi("parameters.max_new_tokens", "default 100")},
		Prompt:    []RequestField{fs("inputs", "the rendered prompt (the native routes take no messages)")},
	}
}

func llamaCppFields() RequestFields {
	return RequestFields{
		Format: FormatLlamaCpp,
		Endpoints: []Endpoint{
			post("/completion"), post("/completions"), post("/infill"),
		},
		Docs:   []string{"https://github.com/ggml-org/llama.cpp/blob/master/tools/server/README.md (POST /completion, POST /infill)"},
		Stream: []RequestField{fb("stream", "server-sent events")},
		Logprobs: []RequestField{
			fi("n_probs", "> 0 asks for completion_probabilities; also the number of alternatives"),
		},
		TopLogprobs: []RequestField{fi("n_probs", "the same member")},
		LogitBias: []RequestField{
			fany("logit_bias", `[[token id or string, bias or false], ...] or {"token id or string": bias}`),
			fs("grammar", "not a bias: a GBNF grammar restricting sampling; json_schema likewise"),
			fo("json_schema", "compiled to a grammar"),
		},
		MaxTokens: []RequestField{
			fi("n_predict", "default -1: no limit"),
			fi("max_tokens", "alias of n_predict"),
		},
		Shape: []RequestField{
			fb("post_sampling_probs", "probabilities after the sampling chain (prob, top_probs) instead of logprobs"),
		},
		Prompt: []RequestField{
			fany("prompt", "a string, a token array, a mix, or an array of these (one completion each)"),
			fs("input_prefix", "/infill"),
			fs("input_suffix", "/infill"),
			fa("input_extra", "/infill: [{filename, text}]"),
		},
	}
}

func ollamaFields() RequestFields {
	return RequestFields{
		Format:          FormatOllama,
		Endpoints:       []Endpoint{post("/api/generate"), post("/api/chat")},
		Docs:            []string{"https://docs.ollama.com/api/generate", "https://docs.ollama.com/api/chat"},
		Stream:          []RequestField{fb("stream", "default true: NDJSON unless false")},
		StreamByDefault: true,
		Logprobs:        []RequestField{fb("logprobs", "")},
		TopLogprobs:     []RequestField{fi("top_logprobs", "alternatives per position (up to 20), with logprobs")},
		MaxTokens:       []RequestField{fi("options.num_predict", "default -1: no limit")},
		Reasoning:       []RequestField{fany("think", "true/false, or high/medium/low for some models; the trace comes in thinking")},
		Model:           []RequestField{fs("model", "")},
		Prompt: []RequestField{
			fs("prompt", "/api/generate"),
			fs("suffix", "/api/generate"),
			fb("raw", "/api/generate: no template applied"),
			fs("template", "/api/generate: overrides the model's template"),
			fa("context", "/api/generate: token ids of an earlier exchange"),
		},
		System: []RequestField{
			fs("system", "/api/generate"),
			fs("messages[].content", "/api/chat: of messages whose role is system"),
		},
		Messages: []RequestField{
			fa("messages", "/api/chat: [{role: system, user, assistant or tool, content, images, tool_calls, thinking}]"),
		},
		Tools: []RequestField{fa("tools", "/api/chat: [{type: function, function: {name, description, parameters}}]")},
	}
}

func anthropicFields() RequestFields {
	return RequestFields{
		Format:    FormatAnthropic,
		Endpoints: []Endpoint{post("/v1/messages")},
		Docs:      []string{"https://docs.anthropic.com/en/api/messages"},
		Stream:    []RequestField{fb("stream", "server-sent events")},
		MaxTokens: []RequestField{fi("max_tokens", "required")},
		Reasoning: []RequestField{fo("thinking", "{type: enabled, budget_tokens}: thinking blocks in the response")},
		Model:     []RequestField{fs("model", "")},
		System:    []RequestField{fany("system", "a string or [{type: text, text}]")},
		Messages: []RequestField{
			fa("messages", "[{role: user or assistant, content}]; a last assistant message is a prefill the answer continues"),
			fany("messages[].content", "a string or blocks: text, image, document, tool_use, tool_result, thinking"),
		},
		Tools: []RequestField{
			fa("tools", "[{name, description, input_schema}] and server tools"),
			fo("tool_choice", ""),
		},
	}
}

// FormatForPath returns the format whose endpoint table (RequestFieldsFor)
// has a pattern matching method and path (any query string is ignored).
// The OpenAI paths give the specific kind (FormatOpenAIChat, ...). It
// builds the tables on every call; PathTable builds them once.
func FormatForPath(method, path string) (Format, bool) {
	return NewPathTable().Lookup(method, path)
}

// PathTable is every format's endpoints, built once (NewPathTable) and
// read-only after: what a server matches each request's path against.
type PathTable struct {
	eps []formatEndpoint
}

type formatEndpoint struct {
	Endpoint
	f Format
}

// NewPathTable collects the endpoints of every format, in declaration
// order (the OpenAI kinds first).
func NewPathTable() *PathTable {
	t := &PathTable{}
	for f := FormatOpenAIChat; f < numFormats; f++ {
		for _, ep := range RequestFieldsFor(f).Endpoints {
			t.eps = append(t.eps, formatEndpoint{ep, f})
		}
	}
	return t
}

// Lookup is FormatForPath against the table.
func (t *PathTable) Lookup(method, path string) (Format, bool) {
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	for i := range t.eps {
		ep := &t.eps[i]
		if strings.EqualFold(ep.Method, method) && matchPattern(ep.Pattern, path) {
			return ep.f, true
		}
	}
	return FormatOpenAI, false
}

// matchPattern matches path against an Endpoint pattern.
func matchPattern(pattern, path string) bool {
	ps, qs := strings.Split(pattern, "/"), strings.Split(path, "/")
	if len(ps) != len(qs) {
		return false
	}
	for i, p := range ps {
		q := qs[i]
		if !strings.HasPrefix(p, "{") {
			if p != q {
				return false
			}
			continue
		}
		end := strings.IndexByte(p, '}')
		if end < 0 {
			return false
		}
		verb := p[end+1:] // "" or ":method"
		if verb == "" {
			if q == "" || strings.IndexByte(q, ':') >= 0 {
				return false
			}
			continue
		}
		if len(q) <= len(verb) || !strings.HasSuffix(q, verb) || strings.IndexByte(q[:len(q)-len(verb)], ':') >= 0 {
			return false
		}
	}
	return true
}
