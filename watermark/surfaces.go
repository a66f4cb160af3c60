package watermark

import "sort"

// SurfaceList returns every substitutable surface form of the lexicon
// (lower case), sorted. A gateway rewriting streamed text uses it to tell
// whether a word still being streamed may become a candidate (a prefix of
// a surface), so that the logprob entries of its first tokens are not
// sent before the word is decided. The slice is the caller's.
func (l *Lexicon) SurfaceList() []string {
	out := make([]string, 0, len(l.words))
	for w := range l.words {
		out = append(out, w)
	}
	sort.Strings(out)
	return out
}
