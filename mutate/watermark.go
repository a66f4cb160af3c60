package mutate

import (
	"bytes"
	"sort"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/distillguard/distillguard/watermark"
)

// WatermarkText is the TextRewriter of the lexical watermark: it runs each
// block's text through a watermark.Stream of one key (package watermark:
// keyed, frequency-preserving synonym substitution) and writes the result
// back as JSON string content.
//
// Every byte outside a substituted word is copied from the input as it was
// escaped (the Stream works on decoded text; WatermarkText maps its
// substitutions back onto the raw string content), so a document's only
// changes are the replaced words. Across the pieces of a delta block the
// Stream holds the unfinished word (a token such as " big" may be followed
// by "ger"); WatermarkText holds its raw bytes with it (HeldText, counted
// in SSEStream.Held) and writes them at the front of the block's next
// piece, or into the piece that ends the block (TextLoc.End). Whole texts
// (a non-streamed message, response.output_text.done) are marked with a
// fresh Stream, which gives the same bytes as the deltas did.
//
// Logprob entries: DropSpans reports the substituted words and a held word
// that starts a substitutable surface (it may be replaced once the word
// ends, after its entry went out: " per" of " per"+"haps"); the walks drop
// the entries of the tokens that cover them.
//
// One per response (a Rewriter's), from TextMark.NewText; not safe for
// concurrent use.
type WatermarkText struct {
	m      *watermark.Marker
	tm     *TextMark
	blocks []*textBlock
	whole  *textBlock
	drops  []TextSpan
	subs   []watermark.Substitution
	dec    []byte  // the piece, decoded
	craw   []byte  // the held raw bytes followed by the piece's
	coff   []int32 // craw offset of each decoded byte of the held text and the piece, and one past the end
	out    []byte  // the Stream's output
	stats  WatermarkStats
	served *watermark.Served
}

// WatermarkStats counts what a WatermarkText did.
type WatermarkStats struct {
	Pieces      int64 // pieces of text seen
	Substituted int64 // words replaced
	// Overflow counts pieces passed through unmarked because the response
	// had more than maxTextBlocks blocks in flight.
	Overflow int64
}

// maxTextBlocks bounds the delta blocks (choices, content parts) one
// response marks at the same time: n is capped upstream of any sane
// deployment far below this, and each block holds at most one word.
const maxTextBlocks = 64

// textBlock is one block's marking state.
type textBlock struct {
	block  uint64
	kind   TextKind
	st     *watermark.Stream
	in     int64   // decoded offset of the held text's first byte in the block
	outPos int64   // output bytes the Stream produced so far
	raw    []byte  // raw bytes of the held text
	off    []int32 // raw offset of each held decoded byte
}

// TextMark is the lexical watermark of one key, shared by every response
// (immutable, safe for concurrent use): the marker and the sorted surface
// forms of its lexicon, which tell whether a held word may still become a
// candidate.
type TextMark struct {
	m        *watermark.Marker
	surfaces []string
}

// NewTextMark returns the shared state of marker m.
func NewTextMark(m *watermark.Marker) *TextMark {
	return &TextMark{m: m, surfaces: m.Lexicon().SurfaceList()}
}

// Marker is the mark's marker.
func (tm *TextMark) Marker() *watermark.Marker { return tm.m }

// NewText returns the text rewriter of one response.
func (tm *TextMark) NewText() *WatermarkText { return &WatermarkText{m: tm.m, tm: tm} }

// prefix reports whether p (lower case) starts a surface form. The
// string conversions in comparisons do not allocate.
func (tm *TextMark) prefix(p []byte) bool {
	i := sort.Search(len(tm.surfaces), func(i int) bool { return tm.surfaces[i] >= string(p) })
	return i < len(tm.surfaces) && strings.HasPrefix(tm.surfaces[i], string(p))
}

// Stats returns the counts so far.
func (w *WatermarkText) Stats() WatermarkStats { return w.stats }

// RecordServed makes every block's Stream record its candidates' groups
// into sv (watermark.Served: the served record of the response). Call it
// before the first piece: the blocks' Streams take it when they are made.
func (w *WatermarkText) RecordServed(sv *watermark.Served) { w.served = sv }

// newStream is a block's Stream.
func (w *WatermarkText) newStream() *watermark.Stream {
	st := w.m.NewStream()
	st.RecordServed(w.served)
	return st
}

// HeldText is the number of raw text bytes held across pieces.
func (w *WatermarkText) HeldText() int {
	n := 0
	for _, b := range w.blocks {
		n += len(b.raw)
	}
	return n
}

// DropSpans reports the spans of the last piece whose logprob entries go.
func (w *WatermarkText) DropSpans() []TextSpan { return w.drops }

// block returns the state of loc's block, nil when too many are open.
func (w *WatermarkText) block(loc TextLoc) *textBlock {
	if !loc.Delta {
		if w.whole == nil {
			w.whole = &textBlock{st: w.newStream()}
		}
		w.whole.reset()
		return w.whole
	}
	for _, b := range w.blocks {
		if b.block == loc.Block && b.kind == loc.Kind {
			return b
		}
	}
	if len(w.blocks) >= maxTextBlocks {
		return nil
	}
	b := &textBlock{block: loc.Block, kind: loc.Kind, st: w.newStream()}
	w.blocks = append(w.blocks, b)
	return b
}

func (b *textBlock) reset() {
	b.st.Reset()
	b.in, b.outPos = 0, 0
	b.raw, b.off = b.raw[:0], b.off[:0]
}

// RewriteText marks one piece (see TextRewriter).
func (w *WatermarkText) RewriteText(dst []byte, loc TextLoc, raw []byte) ([]byte, bool) {
	w.drops = w.drops[:0]
	w.stats.Pieces++
	b := w.block(loc)
	if b == nil {
		w.stats.Overflow++
		return dst, false
	}
	lo := len(dst)
	// The combined input: the held text, then the piece.
	w.craw = append(append(w.craw[:0], b.raw...), raw...)
	w.coff = append(w.coff[:0], b.off...)
	held := int64(len(b.off))
	w.dec, w.coff = decodeMapped(w.dec[:0], w.coff, raw, int32(len(b.raw)))
	w.coff = append(w.coff, int32(len(w.craw)))
	pieceStart := b.in + held
	pieceEnd := pieceStart + int64(len(w.dec))

	w.out = b.st.Write(w.out[:0], w.dec)
	w.subs = append(w.subs[:0], b.st.Substitutions()...)
	end := loc.End || !loc.Delta
	if end {
		w.out = b.st.Flush(w.out)
		w.subs = append(w.subs, b.st.Substitutions()...)
	}
	emitEnd := pieceEnd - int64(b.st.Held())

	at := func(p int64) int32 { return w.coff[p-b.in] }
	cur := b.in
	for _, s := range w.subs {
		dst = append(dst, w.craw[at(cur):at(s.In.Start)]...)
		dst = appendEscaped(dst, w.out[s.Out.Start-b.outPos:s.Out.End-b.outPos])
		cur = s.In.End
		if s.In.Start < pieceEnd && s.In.End > pieceStart {
			w.drops = append(w.drops, TextSpan{int(max(s.In.Start, pieceStart) - pieceStart), int(s.In.End - pieceStart)})
		}
	}
	w.stats.Substituted += int64(len(w.subs))
	dst = append(dst, w.craw[at(cur):at(emitEnd)]...)
	b.outPos += int64(len(w.out))

	if end {
		if loc.Delta {
			b.reset()
		}
	} else {
		// Keep the raw bytes of what the Stream holds.
		from := at(emitEnd)
		b.raw = append(b.raw[:0], w.craw[from:]...)
		b.off = b.off[:0]
		for p := emitEnd; p < pieceEnd; p++ {
			b.off = append(b.off, at(p)-from)
		}
		b.in = emitEnd
		if emitEnd < pieceEnd && w.surface(emitEnd-b.in, pieceStart-b.in, pieceStart-emitEnd) {
			w.drops = append(w.drops, TextSpan{int(max(emitEnd, pieceStart) - pieceStart), int(pieceEnd - pieceStart)})
		}
	}
	return dst, !bytes.Equal(dst[lo:], raw)
}

// surface reports whether the held word starts a substitutable surface: it
// starts at index from of w.coff, the piece at index piece, and before
// bytes of it came in earlier pieces.
func (w *WatermarkText) surface(from, piece, before int64) bool {
	var word [24]byte
	n := 0
	// The held word's decoded bytes: its part in earlier pieces is held
	// raw (letters are never escaped in practice; an escaped one makes
	// the word no candidate, which is conservative for nothing but this
	// check).
	collect := func(c byte) bool {
		if n == len(word) || c >= utf8.RuneSelf {
			return false
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		word[n] = c
		n++
		return true
	}
	if before > 0 {
		for _, c := range w.craw[w.coff[from]:w.coff[piece]] {
			if !collect(c) {
				return false
			}
		}
	}
	for _, c := range w.dec[max(-before, 0):] {
		if !collect(c) {
			return false
		}
	}
	return n > 0 && w.tm.prefix(word[:n])
}

// decodeMapped appends the JSON string content raw decoded to dec, and to
// off the offset (raw's own plus base) each decoded byte comes from; a
// multi-byte rune written as an escape maps all its bytes to the escape.
// A lone surrogate escape decodes to U+FFFD.
func decodeMapped(dec []byte, off []int32, raw []byte, base int32) ([]byte, []int32) {
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' || i+1 >= len(raw) {
			dec = append(dec, c)
			off = append(off, base+int32(i))
			i++
			continue
		}
		start := base + int32(i)
		e := raw[i+1]
		i += 2
		var r rune
		switch e {
		case 'b':
			r = '\b'
		case 'f':
			r = '\f'
		case 'n':
			r = '\n'
		case 'r':
			r = '\r'
		case 't':
			r = '\t'
		case 'u':
			if i+4 > len(raw) {
				r = utf8.RuneError
				break
			}
			r = rune(hex4(raw[i:]))
			i += 4
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if r < 0xdc00 && i+6 <= len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
					r2 = rune(hex4(raw[i+2:]))
				}
				if r2 >= 0xdc00 && r2 <= 0xdfff {
					r = utf16.DecodeRune(r, r2)
					i += 6
				} else {
					r = utf8.RuneError
				}
			}
		default: // '"', '\\', '/'
			r = rune(e)
		}
		n := len(dec)
		dec = utf8.AppendRune(dec, r)
		for ; n < len(dec); n++ {
			off = append(off, start)
		}
	}
	return dec, off
}

// appendEscaped appends b as JSON string content.
func appendEscaped(dst, b []byte) []byte {
	const hex = "0123456789abcdef"
	for _, c := range b {
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
		default:
			dst = append(dst, c)
		}
	}
	return dst
}
