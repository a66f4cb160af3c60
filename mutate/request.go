package mutate

import (
	"encoding/json"
	"math"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/distillguard/distillguard/internal/textcut"
)

// Request is what the parser extracts from an OpenAI-compatible request body.
type Request struct {
	Model         string
	Prompt        string // text of the newest user turn (or the prompt/input)
	Messages      int    // messages in the conversation; 1 for prompt/input
	Stream        bool
	N             int // 0 when unset
	MaxTokens     int // max_tokens / max_completion_tokens / max_output_tokens; 0 when unset
	Temperature   *float64
	Logprobs      bool // logprobs requested in any form
	TopLogprobs   int  // top_logprobs, or the integer logprobs of legacy completions
	LogitBiasSize int
	Echo          bool
	ShapeKeys     []string // sorted top-level keys

	// Conversation structure, for telling an application's fixed parts
	// (system prompt, tool schema) and an agent's tool loop from what a
	// user newly wrote. Texts are capped like Prompt.
	System string // system and developer messages (Responses: also instructions), joined with "\n"
	// Tools is the raw JSON of the tool definitions ("tools", or the legacy
	// "functions"), capped; ToolCount is how many there are.
	Tools     string
	ToolCount int
	// FirstUser is the text of the conversation's first user turn when it
	// is not the newest one ("" otherwise).
	FirstUser      string
	UserTurns      int // user messages carrying user-authored content
	AssistantTurns int // assistant messages and Responses output items (tool calls included)
	ToolTurns      int // tool / function results (role tool or function, function_call_output, tool_result parts)
	// AfterUser counts the messages after the newest user turn: an agent's
	// tool loop re-sends the same user turn with assistant tool calls and
	// tool results after it.
	AfterUser int
}

// respLogprobsInclude is the Responses API include value that asks for
// output text logprobs
// (https://platform.openai.com/docs/api-reference/responses/create#responses-create-include).
const respLogprobsInclude = "message.output_text.logprobs"

// ParseRequest parses a chat/completions/responses/embeddings request body
// (https://platform.openai.com/docs/api-reference/chat/create,
// .../completions/create, .../responses/create, .../embeddings/create;
// prompt_logprobs is vLLM's extension).
// maxPrompt caps the bytes of Prompt kept (cut at a UTF-8 boundary);
// maxPrompt <= 0 keeps it whole.
//
// Fields are read leniently: a field of an unexpected type is ignored
// rather than failing the request; only a body that is not a JSON object,
// or nests deeper than 128 levels, is an error (wrapping ErrNotJSON).
// This is the reading for tools and replays; the server reads requests
// with ReadRequest, which refuses what ParseRequest would ignore.
//
// Logprobs is true when the body asks for logprobs in any form: chat
// "logprobs": true, legacy completions "logprobs": <int> (TopLogprobs is
// then that int), "top_logprobs" > 0, the Responses API include value
// "message.output_text.logprobs", or vLLM's "prompt_logprobs".
//
// Prompt is the text of the newest user message (chat: messages[], the
// Responses API: input items), or the prompt / input when it is a string or
// an array of strings (joined with "\n"; token arrays are rendered as
// space-separated ids). When the Responses input has no user text, the
// instructions are used.
func ParseRequest(body []byte, maxPrompt int) (*Request, error) {
	// One pass of the validating scanner over the top level, instead of
	// encoding/json's validate-then-decode into a map of copied values
	// (most of ParseRequest's cost); values stay slices of body.
	top, err := topMembers(body)
	if err != nil {
		return nil, notJSON(err)
	}
	req := &Request{}
	req.Model, _ = jsonString(top.get("model"))
	req.Stream, _ = jsonBool(top.get("stream"))
	req.Echo, _ = jsonBool(top.get("echo"))
	if v, ok := jsonInt(top.get("n")); ok {
		req.N = v
	}
	for _, k := range [...]string{"max_completion_tokens", "max_tokens", "max_output_tokens"} {
		if v, ok := jsonInt(top.get(k)); ok {
			req.MaxTokens = v
			break
		}
	}
	if v, ok := jsonNumber(top.get("temperature")); ok {
		req.Temperature = &v
	}
	if raw := top.get("logprobs"); raw != nil {
		if b, ok := jsonBool(raw); ok {
			req.Logprobs = b
		} else if v, ok := jsonInt(raw); ok {
			req.Logprobs = true
			req.TopLogprobs = v
		}
	}
	if v, ok := jsonInt(top.get("top_logprobs")); ok {
		req.TopLogprobs = max(req.TopLogprobs, v)
		if v > 0 {
			req.Logprobs = true
		}
	}
	if v, ok := jsonInt(top.get("prompt_logprobs")); ok {
		req.Logprobs = true
		req.TopLogprobs = max(req.TopLogprobs, v)
	}
	if include, ok := jsonArray(top.get("include")); ok {
		for _, it := range include {
			if s, _ := jsonString(it); s == respLogprobsInclude {
				req.Logprobs = true
			}
		}
	}
	if n, ok := countEntries(top.get("logit_bias"), -1); ok {
		req.LogitBiasSize = n
	}
	readContent(req, top, maxPrompt)
	return req, nil
}

// readContent fills in what a request says besides its parameters: the
// shape keys, the prompt and the conversation structure.
func readContent(req *Request, top topObject, maxPrompt int) {
	req.ShapeKeys = make([]string, 0, len(top))
	for _, m := range top {
		req.ShapeKeys = append(req.ShapeKeys, m.key)
	}
	slices.Sort(req.ShapeKeys)
	req.ShapeKeys = slices.Compact(req.ShapeKeys) // a repeated key is one key, as in a map

	p := promptBuilder{max: maxPrompt}
	var conv conversation
	for _, k := range [...]string{"tools", "functions"} {
		if raw := top.get(k); raw != nil {
			if defs, ok := jsonArray(raw); ok && len(defs) > 0 {
				req.ToolCount = len(defs)
				t := promptBuilder{max: maxPrompt}
				t.addRaw(string(raw))
				req.Tools = t.b.String()
				break
			}
		}
	}
	conv.system.max, conv.first.max = maxPrompt, maxPrompt
	switch {
	case top.get("messages") != nil:
		if msgs, ok := jsonArray(top.get("messages")); ok {
			req.Messages = len(msgs)
			p.newestUser(msgs)
			conv.walk(msgs)
		}
	case top.get("contents") != nil:
		// Gemini: contents[] of {role: user or model, parts}.
		if items, ok := jsonArray(top.get("contents")); ok {
			req.Messages = len(items)
			conv.gemini(&p, items)
		}
	case top.get("prompt") != nil:
		req.Messages = 1
		p.textOrList(top.get("prompt"))
	case top.get("inputs") != nil:
		// TGI's native routes: the rendered prompt.
		req.Messages = 1
		p.textOrList(top.get("inputs"))
	case top.get("input") != nil:
		if s, ok := jsonString(top.get("instructions")); ok {
			conv.system.add(s)
		}
		if items, ok := jsonArray(top.get("input")); ok && len(items) > 0 && firstNonSpace(items[0]) == '{' {
			req.Messages = len(items)
			p.newestUser(items)
			conv.walk(items)
		} else {
			req.Messages = 1
			p.textOrList(top.get("input"))
		}
		if p.b.Len() == 0 {
			if s, ok := jsonString(top.get("instructions")); ok {
				p.add(s)
			}
		}
	}
	// A top-level system (Anthropic Messages: a string or text blocks;
	// Ollama's /api/generate: a string) and Gemini's systemInstruction (a
	// Content, in either proto3 JSON spelling).
	conv.textOf(&conv.system, top.get("system"))
	for _, k := range [...]string{"systemInstruction", "system_instruction"} {
		if raw := top.get(k); raw != nil && firstNonSpace(raw) == '{' {
			conv.textOf(&conv.system, innerMembers(raw).get("parts"))
		}
	}
	req.Prompt = p.b.String()
	req.System, req.FirstUser = conv.system.b.String(), conv.first.b.String()
	req.UserTurns, req.AssistantTurns, req.ToolTurns, req.AfterUser = conv.user, conv.assistant, conv.tool, conv.afterUser
}

// countEntries counts the members of an object or the elements of an
// array (raw must be valid JSON, or nil), without decoding them. It stops
// once the count passes limit (limit < 0: no limit) and reports false for
// anything but an object or an array.
func countEntries(raw []byte, limit int) (int, bool) {
	var s scanner
	s.reset(raw)
	s.ws()
	n := 0
	var err error
	switch s.peek() {
	case '{':
		err = s.eachMember(func(_, _ int) error {
			if n++; limit >= 0 && n > limit {
				return errSyntax // stop: the caller reads n
			}
			return s.skipValue(1)
		})
	case '[':
		err = s.eachElem(func(int) error {
			if n++; limit >= 0 && n > limit {
				return errSyntax
			}
			return s.skipValue(1)
		})
	default:
		return 0, false
	}
	if err != nil && !(limit >= 0 && n > limit) {
		return 0, false
	}
	return n, true
}

// conversation tallies the roles of chat messages or Responses input items
// (https://platform.openai.com/docs/api-reference/chat/create#chat-create-messages,
// https://platform.openai.com/docs/api-reference/responses/create#responses-create-input).
type conversation struct {
	system, first         promptBuilder
	user, assistant, tool int
	afterUser             int
	firstIdx              int
}

// walk classifies every item: system/developer text is collected, user
// turns counted (the first one's text kept), assistant messages, tool calls
// and reasoning items count as assistant turns, and tool results (role tool
// or function, Responses function_call_output, or a user message made only
// of tool_result parts as some gateways forward them) as tool turns.
func (c *conversation) walk(items []json.RawMessage) {
	lastUser := -1
	for i, it := range items {
		if firstNonSpace(it) != '{' {
			continue
		}
		m := innerMembers(it)
		role, _ := jsonString(m.get("role"))
		typ, _ := jsonString(m.get("type"))
		content := m.get("content")
		switch {
		case role == "system" || role == "developer":
			c.textOf(&c.system, content)
		case role == "user":
			if onlyToolResults(content) {
				c.tool++
				continue
			}
			c.user++
			if c.user == 1 {
				c.firstIdx = i
			}
			lastUser = i
		case role == "assistant" || typ == "function_call" || typ == "reasoning" || typ == "custom_tool_call":
			c.assistant++
		case role == "tool" || role == "function" || typ == "function_call_output" || typ == "custom_tool_call_output":
			c.tool++
		}
	}
	if lastUser >= 0 {
		c.afterUser = len(items) - 1 - lastUser
	}
	if c.user >= 2 {
		c.textOf(&c.first, innerMembers(items[c.firstIdx]).get("content"))
	}
}

// gemini tallies Gemini contents
// (https://ai.google.dev/api/caching#Content): role "model" is the
// assistant (a functionCall part included), a content made only of
// functionResponse parts is a tool result, any other one (role "user" or
// absent) a user turn; the newest user turn's text parts are the prompt.
func (c *conversation) gemini(p *promptBuilder, items []json.RawMessage) {
	lastUser := -1
	for i, it := range items {
		if firstNonSpace(it) != '{' {
			continue
		}
		m := innerMembers(it)
		role, _ := jsonString(m.get("role"))
		switch {
		case role == "model":
			c.assistant++
		case onlyParts(m.get("parts"), "functionResponse", "function_response"):
			c.tool++
		default:
			c.user++
			if c.user == 1 {
				c.firstIdx = i
			}
			lastUser = i
		}
	}
	if lastUser < 0 {
		return
	}
	c.afterUser = len(items) - 1 - lastUser
	c.textOf(p, innerMembers(items[lastUser]).get("parts"))
	if c.user >= 2 {
		c.textOf(&c.first, innerMembers(items[c.firstIdx]).get("parts"))
	}
}

// onlyParts reports whether parts is a non-empty array of objects that
// each have one of the members keys.
func onlyParts(parts json.RawMessage, keys ...string) bool {
	list, ok := jsonArray(parts)
	if !ok || len(list) == 0 {
		return false
	}
	for _, part := range list {
		if firstNonSpace(part) != '{' {
			return false
		}
		m, found := innerMembers(part), false
		for _, k := range keys {
			found = found || m.get(k) != nil
		}
		if !found {
			return false
		}
	}
	return true
}

// textOf adds the text of a message content: a string, or the text of its
// parts.
func (c *conversation) textOf(p *promptBuilder, content json.RawMessage) {
	if s, ok := jsonString(content); ok {
		p.add(s)
		return
	}
	parts, ok := jsonArray(content)
	if !ok {
		return
	}
	for _, part := range parts {
		if firstNonSpace(part) != '{' {
			continue
		}
		if s, ok := jsonString(innerMembers(part).get("text")); ok {
			p.add(s)
		}
	}
}

// onlyToolResults reports whether content is a non-empty array of parts all
// of type tool_result.
func onlyToolResults(content json.RawMessage) bool {
	parts, ok := jsonArray(content)
	if !ok || len(parts) == 0 {
		return false
	}
	for _, part := range parts {
		if firstNonSpace(part) != '{' {
			return false
		}
		if t, _ := jsonString(innerMembers(part).get("type")); t != "tool_result" {
			return false
		}
	}
	return true
}

// topMember is a member of the request's top-level object, as ParseRequest
// reads it.
type topMember struct {
	key string          // decoded as encoding/json decodes map keys
	raw json.RawMessage // the value's bytes, a slice of the body
}

type topObject []topMember

// scanTop validates body in one pass of the scanner (its top-level value
// must be an object, with nothing but whitespace after it) and appends the
// object's members to ms in document order. open and close are the
// offsets of the object's braces.
func scanTop(body []byte, ms []member) (_ []member, open, close int, err error) {
	var s scanner
	s.reset(body)
	s.ws()
	if s.peek() != '{' {
		return ms, 0, 0, errNotObject
	}
	open = s.i
	empty, err := s.objectBegin()
	for err == nil && !empty {
		m := member{s: s.i}
		if m.ks, m.ke, err = s.key(); err != nil {
			break
		}
		m.vs = s.i
		if err = s.skipValue(1); err != nil {
			break
		}
		m.e = s.i
		ms = append(ms, m)
		var more bool
		if more, err = s.objectNext(); !more {
			break
		}
	}
	if err != nil {
		return ms, 0, 0, err
	}
	close = s.i - 1 // the '}' objectNext or objectBegin consumed
	s.ws()
	if s.i != len(body) {
		return ms, 0, 0, errTrailing
	}
	return ms, open, close, nil
}

// topMembers validates body and lists the members of its top-level
// object in document order, with their names decoded.
// innerMembers lists the members of an object nested in a body that
// scanTop already validated as a whole, so it cannot fail.
func innerMembers(b []byte) topObject {
	t, _ := topMembers(b)
	return t
}

func topMembers(body []byte) (topObject, error) {
	var buf [16]member
	ms, _, _, err := scanTop(body, buf[:0])
	if err != nil {
		return nil, err
	}
	out := make(topObject, len(ms))
	for i, m := range ms {
		out[i] = topMember{decodeKey(body[m.s : m.ke+1]), body[m.vs:m.e]}
	}
	return out, nil
}

// get returns the value of member k, the last one when k repeats (as
// encoding/json keeps the last into a map), or nil when absent.
func (t topObject) get(k string) json.RawMessage {
	for i := len(t) - 1; i >= 0; i-- {
		if t[i].key == k {
			return t[i].raw
		}
	}
	return nil
}

// decodeKey decodes a quoted member name. Plain ASCII names (all that
// servers and SDKs send) are their bytes; names with escapes or non-ASCII
// bytes go through encoding/json, which unescapes them and replaces invalid
// UTF-8 as it does for map keys.
func decodeKey(quoted []byte) string {
	for _, c := range quoted {
		if c == '\\' || c >= utf8.RuneSelf {
			var k string
			_ = json.Unmarshal(quoted, &k) // validated by validTop
			return k
		}
	}
	return string(quoted[1 : len(quoted)-1])
}

// jsonArray splits a JSON array into its elements (slices of raw), with
// encoding/json's outcome for a []json.RawMessage: ok for an array or null
// (no elements), not ok for anything else. raw must be valid JSON (a value
// of a document validTop accepted), or nil.
func jsonArray(raw json.RawMessage) ([]json.RawMessage, bool) {
	switch firstNonSpace(raw) {
	case 'n':
		return nil, true
	case '[':
	default:
		return nil, false
	}
	var s scanner
	s.reset(raw)
	s.ws()
	var out []json.RawMessage
	empty, err := s.arrayBegin()
	for err == nil && !empty {
		vs := s.i
		if err = s.skipValue(1); err != nil {
			return nil, false
		}
		out = append(out, raw[vs:s.i])
		var more bool
		if more, err = s.arrayNext(); !more {
			break
		}
	}
	if err != nil {
		return nil, false
	}
	return out, true
}

func jsonString(raw json.RawMessage) (string, bool) {
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

func jsonBool(raw json.RawMessage) (bool, bool) {
	switch string(raw) {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	return false, false
}

func jsonNumber(raw json.RawMessage) (float64, bool) {
	if !isNumberStart(raw) {
		return 0, false
	}
	return parseNumber(raw)
}

func isNumberStart(v []byte) bool { return len(v) > 0 && (v[0] == '-' || isDigit(v[0])) }

// jsonInt reads an integral number (2 or 2.0), clamped to the int32 range.
func jsonInt(raw json.RawMessage) (int, bool) {
	v, ok := jsonNumber(raw)
	if !ok || v != math.Trunc(v) {
		return 0, false
	}
	return int(max(min(v, math.MaxInt32), math.MinInt32)), true
}

// promptBuilder collects prompt text up to max bytes.
type promptBuilder struct {
	b    strings.Builder
	max  int
	full bool
}

func (p *promptBuilder) add(s string) {
	if p.full {
		return
	}
	if p.b.Len() > 0 {
		p.addRaw("\n")
	}
	p.addRaw(s)
}

func (p *promptBuilder) addRaw(s string) {
	if p.max > 0 && p.b.Len()+len(s) > p.max {
		s = textcut.Prefix(s, p.max-p.b.Len())
		p.full = true
	}
	p.b.WriteString(s)
}

// newestUser adds the text of the last item whose role is "user".
func (p *promptBuilder) newestUser(items []json.RawMessage) {
	var m struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	}
	for i := len(items) - 1; i >= 0; i-- {
		m.Role, m.Content = "", nil
		if json.Unmarshal(items[i], &m) != nil || m.Role != "user" {
			continue
		}
		if s, ok := jsonString(m.Content); ok {
			p.add(s)
			return
		}
		var parts []struct {
			Text *string `json:"text"`
		}
		// Parts are {type: text|input_text, text}; image/audio parts carry
		// no text and are skipped.
		if json.Unmarshal(m.Content, &parts) == nil {
			for _, part := range parts {
				if part.Text != nil {
					p.add(*part.Text)
				}
			}
		}
		return
	}
}

// textOrList adds a string, an array of strings, a token array or an
// array of token arrays.
func (p *promptBuilder) textOrList(raw json.RawMessage) {
	if s, ok := jsonString(raw); ok {
		p.add(s)
		return
	}
	list, ok := jsonArray(raw)
	if !ok {
		return
	}
	if len(list) > 0 && isNumberStart(list[0]) {
		p.tokens(list)
		return
	}
	for _, it := range list {
		if s, ok := jsonString(it); ok {
			p.add(s)
		} else {
			if toks, ok := jsonArray(it); ok {
				p.tokens(toks)
			}
		}
	}
}

func (p *promptBuilder) tokens(list []json.RawMessage) {
	var b []byte
	for _, t := range list {
		if len(b) > 0 {
			b = append(b, ' ')
		}
		b = append(b, t...)
		if p.max > 0 && len(b) > p.max {
			break
		}
	}
	p.add(string(b))
}
