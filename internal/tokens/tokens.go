// Package tokens splits text into the pieces a model's tokenizer streams
// it in, for tests and experiments that need streamed text without a
// tokenizer: a word with its leading space, every other rune alone, and a
// word longer than six runes in two (so some words span two events, as
// sub-word tokens do).
package tokens

import "unicode"

// Split returns text's pieces; they concatenate to text when it is valid
// UTF-8.
func Split(text string) []string {
	var out []string
	rs := []rune(text)
	for i := 0; i < len(rs); {
		j := i
		if rs[j] == ' ' {
			j++
		}
		for j < len(rs) && unicode.IsLetter(rs[j]) {
			j++
		}
		if j == i || j == i+1 && rs[i] == ' ' {
			j = i + 1
		}
		if w := rs[i:j]; len(w) > 6 {
			out = append(out, string(w[:4]), string(w[4:]))
		} else {
			out = append(out, string(w))
		}
		i = j
	}
	return out
}
