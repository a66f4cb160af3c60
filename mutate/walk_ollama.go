package mutate

// Ollama native API: /api/generate and /api/chat, one JSON object a line
// when streaming (the default; NDJSONStream frames it) or one object with
// "stream": false (https://docs.ollama.com/api/generate,
// https://docs.ollama.com/api/chat).
//
// Rewritten: the top-level logprobs[] of each object, entries {token,
// logprob, bytes, top_logprobs: [{token, logprob, bytes}]} (those of Chat
// Completions, entries.go), counted across the stream's lines.
// StripLogprobs removes the member (Ollama leaves it out when logprobs
// were not requested).

// walkOllama walks one /api/generate or /api/chat response object.
func (r *Rewriter) walkOllama() error {
	s := &r.s
	s.ws()
	if s.peek() != '{' {
		return errNotObject
	}
	return s.end(r.logprobMember(0, "logprobs", func() error { return r.entryArray(1, 0, true) }))
}
