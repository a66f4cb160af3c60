package watermark

import (
	"testing"
)

// benchText is assistant-style text with the usual share of candidates.
const benchText = "Therefore, the children bought 3 large boxes of crayons for $12 each. " +
	"She usually walks to the store, but today she quickly drove her car instead. " +
	"To find the total, we multiply 4 by 7 and then add the remaining 9 apples. " +
	"Maybe the answer is different if we assume the prices changed; it is difficult to say. " +
	"Thus he needed 15 more dollars to purchase the bike, which is expensive but useful. "

// BenchmarkStreamDelta is one SSE delta of a few words (12 bytes, the size
// of a chat.completion.chunk's content for 2-3 tokens) through a stream
// that has been running: the per-event cost the rewriter adds.
func BenchmarkStreamDelta(b *testing.B) {
	m := NewMarker(DefaultLexicon(), testKey(b, "", 1))
	s := m.NewStream()
	text := []byte(benchText)
	out := make([]byte, 0, 256)
	const delta = 12
	b.ReportAllocs()
	b.ResetTimer()
	b.SetBytes(delta)
	pos := 0
	for i := 0; i < b.N; i++ {
		if pos+delta > len(text) {
			pos = 0
		}
		out = s.Write(out[:0], text[pos:pos+delta])
		pos += delta
	}
}

// BenchmarkStream1KB marks 1 KB of text per operation, stream reused.
func BenchmarkStream1KB(b *testing.B) {
	m := NewMarker(DefaultLexicon(), testKey(b, "", 1))
	s := m.NewStream()
	var text []byte
	for len(text) < 1024 {
		text = append(text, benchText...)
	}
	text = text[:1024]
	out := make([]byte, 0, 2048)
	b.ReportAllocs()
	b.ResetTimer()
	b.SetBytes(int64(len(text)))
	for i := 0; i < b.N; i++ {
		s.Reset()
		out = s.Write(out[:0], text)
		out = s.Flush(out)
	}
}

// BenchmarkShiftTop5 marks one position's five alternatives.
func BenchmarkShiftTop5(b *testing.B) {
	lm, _ := NewLogprobMark(testKey(b, "", 1), 0.2)
	s := lm.NewShifter()
	base := []TokenLogprob{{" the", -0.01}, {" a", -4.7}, {" an", -6.2}, {" this", -7.5}, {" that", -8.1}}
	alts := make([]TokenLogprob, len(base))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		copy(alts, base)
		s.ShiftTop(0.37, alts)
	}
}

// BenchmarkShift is one alternative's value, as a byte-level rewriter calls it.
func BenchmarkShift(b *testing.B) {
	lm, _ := NewLogprobMark(testKey(b, "", 1), 0.2)
	s := lm.NewShifter()
	tok := []byte(" token")
	b.ReportAllocs()
	b.ResetTimer()
	var v float64
	for i := 0; i < b.N; i++ {
		v += s.Shift(0.37, tok, -2.5, false)
	}
	_ = v
}

// BenchmarkNewMarker is the per-key setup: the frequency-preserving
// assignment of every (set, slot) unit of the embedded statistics.
func BenchmarkNewMarker(b *testing.B) {
	lex := DefaultLexicon()
	k := testKey(b, "", 1)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		NewMarker(lex, k)
	}
}

// BenchmarkScoreKey is one key's lexical score of 500 responses' worth of
// text: the cost per decoy key.
func BenchmarkScoreKey(b *testing.B) {
	lex := DefaultLexicon()
	sm := NewVerifier(lex).NewSample()
	for i := 0; i < 500; i++ {
		sm.Add(synthText(uint64(i), 2))
	}
	k := testKey(b, "", 1)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		sm.Score(k)
	}
}

// BenchmarkTextContext is the logprob mark's per-response context signal
// of a 60-word prompt.
func BenchmarkTextContext(b *testing.B) {
	lm, _ := NewLogprobMark(testKey(b, "", 1), 0.3)
	s := lm.NewShifter()
	prompt := []byte(benchText)
	b.ReportAllocs()
	b.ResetTimer()
	var h float64
	for i := 0; i < b.N; i++ {
		h += s.TextContext(prompt)
	}
	_ = h
}
