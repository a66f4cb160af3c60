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

// geminiCandidate walks one Candidate: logprobsResult is read in the
// same pass (its decoding steps collected), avgLogprobs noted, and both
// rewritten once the candidate's index is known. With StripLogprobs both
// are dropped.
func (r *Rewriter) geminiCandidate(depth int) error {
	s := &r.s
	perturb := r.p.Perturb != 0
	var idx uint64
	if perturb {
		idx = r.prescanIndex(depth, "index", 0)
	}
	strip := r.p.StripLogprobs
	open := s.i
	avg, sum := span{-1, -1}, span{-1, -1}
	r.resetEntry()
	r.steps = r.steps[:0]
	d := r.dropper()
	err := s.eachMember(func(ks, ke int) error {
		ms := ks - 1 // the name's opening quote
		keep := true
		var err error
		switch k := string(s.b[ks:ke]); {
		case k == "logprobsResult" && s.peek() == '{' && !strip:
			sum, err = r.geminiLogprobs(depth + 1)
		case k == "logprobsResult", k == "avgLogprobs":
			keep = s.peek() == 'n' // a null carries nothing: left as sent
			var sp span
			sp, err = r.valueSpan(depth + 1)
			if k == "avgLogprobs" {
				avg = sp
			}
		default:
			err = s.skipValue(depth + 1)
		}
		if strip && err == nil {
			d.item(ms, s.i, keep)
		}
		return err
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
	r.finishSteps(idx, base)
	r.aggregate(idx, base, sum, aggSumRank)
	r.aggregate(idx, base, avg, aggAvgRank)
	return nil
}

// geminiLogprobs walks a LogprobsResult at the cursor (depth its level)
// and collects its decoding steps: chosenCandidates[i] and
// topCandidates[i].candidates are parallel arrays, step i in each. It
// returns the span of logProbabilitySum.
func (r *Rewriter) geminiLogprobs(depth int) (span, error) {
	s := &r.s
	sum := span{-1, -1}
	names := fieldNames{tok: "token", val: "logProbability"}
	err := s.eachMember(func(ks, ke int) error {
		switch c := s.peek(); string(s.b[ks:ke]) {
		case "chosenCandidates":
			if c == '[' {
				return s.eachElem(func(i int) error {
					st := r.stepAt(i)
					st.c0 = len(r.chosen)
					var err error
					if s.peek() == '{' {
						st.tok, err = r.chosenObject(depth+2, &names)
					} else {
						err = s.skipValue(depth + 2)
					}
					st.c1 = len(r.chosen)
					return err
				})
			}
		case "topCandidates":
			if c == '[' {
				return s.eachElem(func(i int) error {
					st := r.stepAt(i)
					st.g0 = len(r.groups)
					err := r.altGroup(depth+2, &names, "candidates")
					r.steps[i].g1 = len(r.groups)
					return err
				})
			}
		case "logProbabilitySum":
			var err error
			sum, err = r.valueSpan(depth + 1)
			return err
		}
		return s.skipValue(depth + 1)
	})
	return sum, err
}
