// Package textcut cuts text to a byte budget without splitting a rune. The
// server cuts the prompts it keeps (mutate), scores (scoring) and keys the
// logprob mark on with it, and the watermark verifier cuts a probe's
// context with it, so both sides cut at the same byte.
package textcut

import "unicode/utf8"

// Prefix returns the longest prefix of s of at most limit bytes (none when
// limit <= 0) that does not end inside a multi-byte rune. A budget meaning
// "no limit" is the caller's to handle.
func Prefix(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	n := max(limit, 0)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
