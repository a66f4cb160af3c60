package mutate

// Google Gemini API and Vertex AI: GenerateContentResponse, from
// models/{m}:generateContent, :streamGenerateContent?alt=sse (one response
// per event) and :streamGenerateContent without alt=sse (one JSON array of
// responses, read whole), and the Vertex AI paths
// /v1/projects/{p}/locations/{l}/publishers/google/models/{m}:generateContent
// (https://ai.google.dev/api/generate-content#v1beta.GenerateContentResponse,
// https://cloud.google.com/vertex-ai/generative-ai/docs/reference/rest/v1/GenerateContentResponse).
//
// Rewritten, per candidates[] element:
//   - logprobsResult.chosenCandidates[i].logProbability: the sampled token
//     at decoding step i;
//   - logprobsResult.topCandidates[i].candidates[]: its alternatives,
//     "sorted by log probability in descending order", cut to
//     MaxAlternatives, each logProbability rounded and perturbed;
//   - logprobsResult.logProbabilitySum and avgLogprobs: sums of the
//     chosen values, rounded and perturbed by their own draw;
//   - StripLogprobs removes logprobsResult and avgLogprobs (the form
//     proto3 JSON gives an unset field: absent). avgLogprobs is sent even
//     when no logprobs were requested: it is the candidate's mean token
//     logprob, a confidence score in its own right.
//
// The candidate's "index" keys the positions and the noise; proto3 JSON
// omits it for candidate 0, so absent means 0.

// Keys of the Gemini fast path.
const (
	keyLogprobsResult = `"logprobsResult"`
	keyAvgLogprobs    = `"avgLogprobs"`
)

// walkGemini walks a GenerateContentResponse or an array of them.
func (r *Rewriter) walkGemini() error { return r.walkArrayOr(r.geminiResponse) }

// geminiResponse walks one GenerateContentResponse (depth is its level).
func (r *Rewriter) geminiResponse(depth int, _ uint64) error {
	s := &r.s
	return s.eachMember(func(ks, ke int) error {
		if string(s.b[ks:ke]) == "candidates" && s.peek() == '[' {
			return s.eachElem(func(int) error {
				if s.peek() == '{' {
					return r.geminiCandidate(depth + 2)
				}
				return s.skipValue(depth + 2)
			})
		}
		return s.skipValue(depth + 1)
	})
}

// geminiCandidate walks one Candidate: it notes where logprobsResult and
// avgLogprobs are (or drops them, with StripLogprobs) and rewrites them
// once the candidate's index is known.
func (r *Rewriter) geminiCandidate(depth int) error {
	s := &r.s
	perturb := r.p.Perturb != 0
	var idx uint64
	if perturb {
		idx = r.prescanIndex(depth, "index", 0)
	}
	strip := r.p.StripLogprobs
	open := s.i
	lr, avg := span{-1, -1}, span{-1, -1}
	d := r.dropper()
	err := s.eachMember(func(ks, ke int) error {
		ms := ks - 1 // the name's opening quote
		sp, err := r.valueSpan(depth + 1)
		if err != nil {
			return err
		}
		keep := true
		switch string(s.b[ks:ke]) {
		case "logprobsResult":
			lr, keep = sp, s.b[sp.s] == 'n' // a null carries nothing: left as sent
		case "avgLogprobs":
			avg, keep = sp, s.b[sp.s] == 'n'
		}
		if strip {
			d.item(ms, s.i, keep)
		}
		return nil
	})
	if err != nil || strip {
		if err == nil {
			d.done(open, s.i-1)
		}
		return err
	}
	var base uint64
	if perturb {
		base = r.position(idx)
	}
	if lr.s >= 0 && s.b[lr.s] == '{' {
		r.geminiLogprobs(depth+1, idx, base, lr)
	}
	r.aggregate(idx, base, avg, aggAvgRank)
	return nil
}

// geminiLogprobs rewrites a (validated) LogprobsResult at sp, depth its
// level: chosenCandidates and topCandidates are parallel arrays, one
// element per decoding step.
func (r *Rewriter) geminiLogprobs(depth int, idx, base uint64, sp span) {
	chosen, tops, sum := span{-1, -1}, span{-1, -1}, span{-1, -1}
	_ = r.at(sp.s, func() error {
		s := &r.s
		return s.eachMember(func(ks, ke int) error {
			v, err := r.valueSpan(depth + 1)
			switch string(s.b[ks:ke]) {
			case "chosenCandidates":
				chosen = v
			case "topCandidates":
				tops = v
			case "logProbabilitySum":
				sum = v
			}
			return err
		})
	})
	names := fieldNames{tok: "token", val: "logProbability"}
	r.parallel(depth+1, idx, chosen, tops, &names, &names, "candidates")
	r.aggregate(idx, base, sum, aggSumRank)
}
