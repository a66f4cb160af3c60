package mutate

import "bytes"

// NDJSONStream rewrites a newline-delimited JSON body (Ollama's streamed
// responses, application/x-ndjson: one JSON object a line,
// https://github.com/ndjson/ndjson-spec) with the SSE framer's own code
// path rather than a second framer: each input line is presented to an
// SSEStream as a one-line data event, and the framer's output is turned
// back into lines. The escape is positional and keeps no chunk-boundary
// state of its own: on the way in "data:" is written before the first
// byte of every line and every LF is doubled (the blank line that ends an
// event); on the way out the same bytes are dropped again. The framer only
// ever replaces a data payload, which holds no LF, so the bytes it adds
// are found by position alone, and the output is the input with each
// line's JSON rewritten, whatever the chunking. Line endings are the
// framer's: LF, CRLF and CR all end a line (Ollama sends LF; a CR inside a
// line splits it into pieces that are not JSON and pass through).
//
// Everything else is the SSEStream's: the hold bound (an unfinished line
// counts its escape, 6 bytes more), stats (Events counts lines, empty ones
// included), the pass-through of lines that are not JSON objects and hold
// nothing the policy changes, the drop (line and LF) of one that holds
// logprobs but does not parse or outgrows the hold bound, and the flush
// of a last line without its LF at end of stream.
type NDJSONStream struct {
	sse SSEStream
	in  []byte // the current chunk, escaped into events

	inLine bool // the input is inside a line (its "data:" was written)
	drop   int  // bytes of "data:" still to drop from the output
	dropLF bool // the next LF of the output is an added one
}

// dataField is the escape written before each line.
const dataField = "data:"

// NewNDJSONStream returns a line framer over rw that holds at most maxHeld
// bytes of an unfinished line (<= 0: DefaultMaxHeld); a longer line is
// dropped as the SSE framer drops an oversized event.
func NewNDJSONStream(rw *Rewriter, maxHeld int) *NDJSONStream {
	if maxHeld <= 0 {
		maxHeld = DefaultMaxHeld
	}
	return &NDJSONStream{sse: SSEStream{rw: rw, maxHeld: maxHeld}, drop: len(dataField)}
}

// PassOversize makes a line that outgrows the hold bound pass through raw
// instead of being dropped (SSEStream.PassOversize).
func (n *NDJSONStream) PassOversize() { n.sse.PassOversize() }

// Discard drops the unfinished line held back (SSEStream.Discard); the
// stream starts again at a line boundary.
func (n *NDJSONStream) Discard() {
	n.sse.Discard()
	n.inLine, n.drop, n.dropLF = false, len(dataField), false
}

// Held is the number of bytes currently held back (escaped).
func (n *NDJSONStream) Held() int { return n.sse.Held() }

// Stats returns the framer's counts so far.
func (n *NDJSONStream) Stats() StreamStats { return n.sse.Stats() }

// Write consumes chunk and appends to dst every line it completes,
// rewritten; with eos the unfinished last line is flushed (rewritten when
// it is a whole JSON object).
func (n *NDJSONStream) Write(dst, chunk []byte, eos bool) []byte {
	n.in = n.escape(n.in[:0], chunk)
	start := len(dst)
	dst = n.sse.Write(dst, n.in, eos)
	return n.unescape(dst, start)
}

// escape appends chunk to dst with "data:" before the first byte of each
// line and every LF doubled.
func (n *NDJSONStream) escape(dst, chunk []byte) []byte {
	for len(chunk) > 0 {
		if !n.inLine {
			dst = append(dst, dataField...)
			n.inLine = true
		}
		i := bytes.IndexByte(chunk, '\n')
		if i < 0 {
			return append(dst, chunk...)
		}
		dst = append(dst, chunk[:i+1]...)
		dst = append(dst, '\n')
		n.inLine = false
		chunk = chunk[i+1:]
	}
	return dst
}

// unescape removes, in place, the bytes escape added from dst[start:]: the
// "data:" that opens each line and the second LF of each pair. The framer
// copies every byte but a payload, and payloads hold no LF, so the added
// bytes are where the escape put them.
func (n *NDJSONStream) unescape(dst []byte, start int) []byte {
	w, i := start, start
	for i < len(dst) {
		switch {
		case n.drop > 0:
			k := min(n.drop, len(dst)-i)
			n.drop -= k
			i += k
			continue
		case n.dropLF:
			n.dropLF = false
			if dst[i] == '\n' {
				n.drop = len(dataField)
				i++
				continue
			}
		}
		j := bytes.IndexByte(dst[i:], '\n')
		if j < 0 {
			w += copy(dst[w:], dst[i:])
			break
		}
		w += copy(dst[w:], dst[i:i+j+1])
		i += j + 1
		n.dropLF = true
	}
	return dst[:w]
}
