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
	strip := r.p.StripLogprobs
	open := s.i
	d := r.dropper()
	err := s.eachMember(func(ks, ke int) error {
		ms := ks - 1
		keep := true
		var err error
		switch {
		case string(s.b[ks:ke]) != "logprobs":
			err = s.skipValue(1)
		case strip:
			keep = s.peek() == 'n' // a null carries nothing: left as sent
			err = s.skipValue(1)
		case s.peek() == '[':
			err = r.entryArray(1, 0, true)
		default:
			err = s.skipValue(1)
		}
		if strip && err == nil {
			d.item(ms, s.i, keep)
		}
		return err
	})
	if err != nil {
		return err
	}
	if strip {
		d.done(open, s.i-1)
	}
	return s.end(nil)
}
