package mutate

import "bytes"

// StreamStats counts what an SSEStream saw.
type StreamStats struct {
	Events    int64 // events framed
	Rewritten int64 // events whose bytes changed
	Invalid   int64 // data events that were not JSON (passed through)
	// Oversize counts events longer than maxHeld: dropped (a comment in
	// their place), or released raw after PassOversize.
	Oversize int64
	// Unreadable counts events dropped because their data carries what
	// the policy changes but does not parse (also counted in Invalid).
	Unreadable int64
	// FailedOpen is never set: an oversized event no longer ends the
	// rewriting of its stream (see Oversize). Kept for callers that read
	// it.
	FailedOpen bool
	// MultiLineSkipped counts events with several data lines that could
	// not be split back into the same lines after the rewrite and passed
	// through untouched (a safeguard: the rewrite keeps line breaks).
	MultiLineSkipped int64
}

// DefaultMaxHeld is the bound NewSSEStream uses when given maxHeld <= 0.
const DefaultMaxHeld = 1 << 20

// SSEStream frames a text/event-stream body incrementally and rewrites each
// event's data with a Rewriter.
//
// Framing follows the WHATWG HTML "server-sent events" parsing rules
// (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
// lines end with CRLF, LF or CR; an empty line ends an event; lines starting
// with ':' are comments; "data:" is followed by an optional single space;
// several data lines are joined with LF. An event's output is its input
// bytes with only the data payload replaced: field names, spacing, comments,
// other fields (event, id, retry) and line endings are kept. "data: [DONE]"
// (the OpenAI end-of-stream marker) and payloads that are not JSON objects
// pass through untouched.
type SSEStream struct {
	rw      *Rewriter
	maxHeld int
	stats   StreamStats

	hold      []byte // unfinished event (offset 0 is its first byte)
	scan      int    // offset in hold up to which lines were split
	lineStart int    // offset in hold of the current, unterminated line
	lines     []sseLine
	data      []span
	joined    []byte
	out       []byte
	started   bool // the first event (which may carry a BOM) was seen

	// An event longer than maxHeld is skipped to its end in bounded
	// memory: skipping is set while its bytes go by, dropped (or, with
	// passOversize, released raw) as they arrive. lastTerm says the last
	// byte seen ended a line, lastCR that it was a CR (whose LF, if one
	// follows, belongs to the same line end).
	passOversize bool
	// comments: a dropped event leaves an SSE comment in its place (set
	// by NewSSEStream). A framer built as a struct literal by another
	// framer on top of this one (NDJSON) drops events without a trace,
	// which keeps the output positional: nothing but payloads changes.
	comments bool
	skipping bool
	lastTerm bool
	lastCR   bool
	// swallowLF: the skipped event ended with a CR at the end of a chunk;
	// an LF opening the next chunk completes that line end.
	swallowLF bool
}

// maxKeptHold bounds the capacity the unfinished-event buffer keeps once
// it is empty: a stream that once held a large event does not keep its
// peak for the rest of its life.
const maxKeptHold = 64 << 10

// oversizeComment takes the place of a dropped event: an SSE comment
// (ignored by clients) followed by a blank line, so the event boundary
// stays where it was.
const oversizeComment = ": distillguard dropped an event longer than the gateway's hold limit\n\n"

// sseLine is one line of the current event: s:ce its content, ce:e its
// terminator (empty for an unterminated last line at the end of stream).
// Offsets are relative to the event's first byte.
type sseLine struct{ s, ce, e int }

// NewSSEStream returns a framer that holds at most maxHeld bytes of an
// unfinished event: a longer event is dropped, a comment in its place
// (Stats().Oversize), and the events after it are rewritten as usual.
func NewSSEStream(rw *Rewriter, maxHeld int) *SSEStream {
	if maxHeld <= 0 {
		maxHeld = DefaultMaxHeld
	}
	return &SSEStream{rw: rw, maxHeld: maxHeld, comments: true}
}

// PassOversize makes events longer than maxHeld pass through raw instead
// of being dropped (still in bounded memory, still counted): the
// documented fail-open choice (routes[].on_oversize: pass).
func (s *SSEStream) PassOversize() { s.passOversize = true }

// Discard drops the unfinished event held back (after a failure that ends
// the stream's rewriting: it is never released).
func (s *SSEStream) Discard() {
	s.hold = nil
	s.resetFrame()
	s.skipping = false
}

// Held is the number of bytes currently held back: the unfinished event
// and the text the rewriter's text rewriter holds across events (the
// unfinished word of a watermarked delta stream).
func (s *SSEStream) Held() int { return len(s.hold) + s.rw.TextHeld() }

// Stats returns the counts so far.
func (s *SSEStream) Stats() StreamStats { return s.stats }

// Write consumes chunk and appends to dst every event it completes,
// rewritten; the unfinished tail is held. With eos the tail is flushed: a
// final event without its terminating blank line is rewritten when its data
// is a complete JSON object, else passed through.
//
// When the unfinished tail grows beyond maxHeld, the event is given up:
// dropped, with a comment in its place (released raw after PassOversize),
// and its remaining bytes are skipped as they arrive, in bounded memory,
// until the blank line that ends it; framing resumes after it.
func (s *SSEStream) Write(dst, chunk []byte, eos bool) []byte {
	// The rewriter's last document is a slice of chunk: let it go with
	// the call, so that a stream waiting for its next chunk keeps none.
	defer s.rw.Release()
	if s.swallowLF {
		s.swallowLF = false
		if len(chunk) > 0 && chunk[0] == '\n' {
			if s.passOversize {
				dst = append(dst, '\n')
			}
			chunk = chunk[1:]
		}
	}
	if s.skipping {
		var rest []byte
		dst, rest = s.skip(dst, chunk)
		if s.skipping {
			return dst
		}
		chunk = rest
	}
	var buf []byte
	if len(s.hold) == 0 {
		buf = chunk // common case: no copy until the tail
	} else {
		s.hold = append(s.hold, chunk...)
		buf = s.hold
	}
	dst, ev := s.frame(dst, buf, eos)
	tail := buf[ev:]
	switch {
	case eos:
		if len(tail) > 0 {
			dst = s.flushFinal(dst, tail)
		}
		s.resetFrame()
		s.hold = s.hold[:0]
	case len(tail) > s.maxHeld:
		s.stats.Oversize++
		s.stats.Events++
		s.resetFrame()
		s.skipping, s.lastTerm, s.lastCR = true, false, false
		if !s.passOversize && s.comments {
			dst = append(dst, oversizeComment...)
		}
		// The tail is skipped like the bytes that follow it (its end of
		// event may be a CR at its very end).
		var rest []byte
		dst, rest = s.skip(dst, tail)
		rest = append([]byte(nil), rest...)
		s.hold = s.hold[:0]
		if cap(s.hold) > maxKeptHold {
			s.hold = nil
		}
		if !s.skipping && len(rest) > 0 {
			return s.Write(dst, rest, false)
		}
		return dst
	case len(s.hold) == 0:
		s.hold = append(s.hold, tail...)
	case ev > 0:
		// Move the tail to the front; when no event completed (ev == 0)
		// the hold is already the tail, and copying it onto itself would
		// make small chunks quadratic.
		n := copy(s.hold, tail)
		s.hold = s.hold[:n]
	}
	if len(s.hold) == 0 && cap(s.hold) > maxKeptHold {
		s.hold = nil
	}
	return dst
}

// skip consumes the bytes of an event being skipped, up to and including
// the blank line that ends it (the line end right after a line end), and
// returns the rest of b when the event ended there (s.skipping cleared).
// With passOversize the skipped bytes are appended to dst.
func (s *SSEStream) skip(dst, b []byte) ([]byte, []byte) {
	i := 0
	for i < len(b) {
		c := b[i]
		switch {
		case c == '\n' && s.lastCR:
			// The LF of a CRLF: the same line end.
			s.lastCR = false
			i++
		case c == '\n' || c == '\r':
			if s.lastTerm {
				// A blank line: the event ends with this line end.
				end := i + 1
				if c == '\r' {
					if end < len(b) && b[end] == '\n' {
						end++
					} else if end == len(b) {
						s.swallowLF = true
					}
				}
				if s.passOversize {
					dst = append(dst, b[:end]...)
				}
				s.skipping = false
				return dst, b[end:]
			}
			s.lastTerm, s.lastCR = true, c == '\r'
			i++
		default:
			s.lastTerm, s.lastCR = false, false
			// Jump to the next line end.
			k := bytes.IndexAny(b[i:], "\r\n")
			if k < 0 {
				i = len(b)
			} else {
				i += k
			}
		}
	}
	if s.passOversize {
		dst = append(dst, b...)
	}
	return dst, nil
}

func (s *SSEStream) resetFrame() {
	s.scan, s.lineStart = 0, 0
	s.lines = s.lines[:0]
}

// frame splits buf into lines from the saved scan state, dispatches every
// event that an empty line completes, and returns the offset of the first
// byte of the unfinished event. The state left behind is relative to it.
func (s *SSEStream) frame(dst, buf []byte, eos bool) ([]byte, int) {
	i, ls, ev := s.scan, s.lineStart, 0
	cr := -1 // offset of the next '\r' at or after i (len(buf) if none); -1 unknown
	for i < len(buf) {
		if cr < i {
			if k := bytes.IndexByte(buf[i:], '\r'); k >= 0 {
				cr = i + k
			} else {
				cr = len(buf)
			}
		}
		j := cr
		if k := bytes.IndexByte(buf[i:cr], '\n'); k >= 0 {
			j = i + k
		}
		if j == len(buf) {
			i = j // unterminated line: wait for more
			break
		}
		end := j + 1
		if buf[j] == '\r' {
			if j+1 == len(buf) {
				if !eos {
					// A CR at the end of the chunk may be the first half of
					// CRLF: keep it unconsumed until the next byte is known.
					i = j
					break
				}
			} else if buf[j+1] == '\n' {
				end = j + 2
			}
		}
		s.lines = append(s.lines, sseLine{ls - ev, j - ev, end - ev})
		blank := j == ls
		i, ls = end, end
		if blank {
			dst = s.event(dst, buf[ev:end])
			ev = end
			s.lines = s.lines[:0]
		}
	}
	s.scan, s.lineStart = i-ev, ls-ev
	return dst, ev
}

// flushFinal dispatches the event left unterminated at end of stream.
func (s *SSEStream) flushFinal(dst, ev []byte) []byte {
	if s.lineStart < len(ev) {
		s.lines = append(s.lines, sseLine{s.lineStart, len(ev), len(ev)})
	}
	return s.event(dst, ev)
}

// bom is the UTF-8 byte order mark, which the SSE parsing rules skip at
// the start of a stream.
const bom = "\xef\xbb\xbf"

// event appends one complete event (its lines in s.lines), rewritten.
func (s *SSEStream) event(dst, ev []byte) []byte {
	s.stats.Events++
	s.data = s.data[:0]
	named := false
	for li, l := range s.lines {
		ls := l.s
		if li == 0 && !s.started && bytes.HasPrefix(ev[ls:l.ce], []byte(bom)) {
			ls += len(bom) // a leading BOM is not part of the field name
		}
		line := ev[ls:l.ce]
		if len(line) == 0 || line[0] == ':' {
			continue
		}
		vs := l.ce
		name := line
		if c := bytes.IndexByte(line, ':'); c >= 0 {
			name = line[:c]
			vs = ls + c + 1
			if vs < l.ce && ev[vs] == ' ' {
				vs++
			}
		}
		switch string(name) {
		case "data":
			s.data = append(s.data, span{vs, l.ce})
		case "event":
			named = true
		}
	}
	s.started = true
	switch len(s.data) {
	case 0:
		return append(dst, ev...)
	case 1:
		d := s.data[0]
		payload := ev[d.s:d.e]
		if len(payload) == 0 || string(payload) == "[DONE]" {
			return append(dst, ev...)
		}
		mark := len(dst)
		dst = append(dst, ev[:d.s]...)
		var changed bool
		var err error
		dst, changed, err = s.rw.rewrite(dst, payload)
		s.count(changed, err)
		if err != nil && s.unreadable(payload) {
			return s.dropped(dst[:mark])
		}
		return s.preEvent(append(dst, ev[d.e:]...), mark, named)
	}
	mark := len(dst)
	return s.preEvent(s.multiLine(dst, ev), mark, named)
}

// preEvent puts the event the rewriter asked for before the one at
// dst[mark:] (Rewriter.pre: a Responses API text block's held tail), with
// an event field when the stream names its events.
func (s *SSEStream) preEvent(dst []byte, mark int, named bool) []byte {
	rw := s.rw
	if len(rw.pre) == 0 {
		return dst
	}
	s.joined = append(s.joined[:0], dst[mark:]...)
	dst = dst[:mark]
	if named && rw.preEvent != "" {
		dst = append(dst, "event: "...)
		dst = append(dst, rw.preEvent...)
		dst = append(dst, '\n')
	}
	dst = append(dst, "data: "...)
	dst = append(dst, rw.pre...)
	dst = append(dst, "\n\n"...)
	rw.pre = rw.pre[:0]
	return append(dst, s.joined...)
}

// unreadableComment takes the place of an event dropped because its data
// carries what the policy changes but is not JSON distillguard can read.
const unreadableComment = ": distillguard dropped an event it could not read\n\n"

// dropped appends what takes the place of a dropped event.
func (s *SSEStream) dropped(dst []byte) []byte {
	if s.comments {
		return append(dst, unreadableComment...)
	}
	return dst
}

// unreadable reports whether a payload that failed to parse must be
// dropped: it holds something the policy would change (a logprobs or
// embedding member), which a lenient client might still read (Python's
// json.loads takes NaN and -Infinity), so passing it raw would pass it
// unrewritten. With PassOversize (on_oversize: pass) it passes, counted.
func (s *SSEStream) unreadable(payload []byte) bool {
	if s.passOversize || !s.rw.mayTouch(payload) {
		return false
	}
	s.stats.Unreadable++
	return true
}

func (s *SSEStream) count(changed bool, err error) {
	if err != nil {
		s.stats.Invalid++
	}
	if changed {
		s.stats.Rewritten++
	}
}

// multiLine rewrites an event with several data lines: the payload is the
// lines joined with LF, and the result is split back at its LFs into the
// same data lines. The Rewriter runs with keepLF, so a replacement that
// spans line breaks (alternatives cut from a pretty-printed document)
// keeps them as whitespace and the line count does not change. Should the
// counts still differ, the event passes through untouched and is counted.
func (s *SSEStream) multiLine(dst, ev []byte) []byte {
	s.joined = s.joined[:0]
	for k, d := range s.data {
		if k > 0 {
			s.joined = append(s.joined, '\n')
		}
		s.joined = append(s.joined, ev[d.s:d.e]...)
	}
	var changed bool
	var err error
	s.rw.keepLF = true
	s.out, changed, err = s.rw.rewrite(s.out[:0], s.joined)
	s.rw.keepLF = false
	s.count(changed, err)
	if err != nil && s.unreadable(s.joined) {
		return s.dropped(dst)
	}
	if err != nil || !changed {
		return append(dst, ev...)
	}
	if bytes.Count(s.out, []byte{'\n'}) != len(s.data)-1 {
		s.stats.Rewritten--
		s.stats.MultiLineSkipped++
		return append(dst, ev...)
	}
	rest := s.out
	last := 0
	for k, d := range s.data {
		piece := rest
		if k < len(s.data)-1 {
			n := bytes.IndexByte(rest, '\n')
			piece, rest = rest[:n], rest[n+1:]
		}
		dst = append(dst, ev[last:d.s]...)
		dst = append(dst, piece...)
		last = d.e
	}
	return append(dst, ev[last:]...)
}
