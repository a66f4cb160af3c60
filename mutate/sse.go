package mutate

import "bytes"

// StreamStats counts what an SSEStream saw.
type StreamStats struct {
	Events     int64 // events framed
	Rewritten  int64 // events whose bytes changed
	Invalid    int64 // data events that were not JSON (passed through)
	FailedOpen bool  // the held tail exceeded maxHeld; the rest passed through raw
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
	failed    bool
}

// sseLine is one line of the current event: s:ce its content, ce:e its
// terminator (empty for an unterminated last line at the end of stream).
// Offsets are relative to the event's first byte.
type sseLine struct{ s, ce, e int }

// NewSSEStream returns a framer that holds at most maxHeld bytes of an
// unfinished event before failing open.
func NewSSEStream(rw *Rewriter, maxHeld int) *SSEStream {
	if maxHeld <= 0 {
		maxHeld = DefaultMaxHeld
	}
	return &SSEStream{rw: rw, maxHeld: maxHeld}
}

// Held is the number of bytes currently held back.
func (s *SSEStream) Held() int { return len(s.hold) }

// Stats returns the counts so far.
func (s *SSEStream) Stats() StreamStats { return s.stats }

// Write consumes chunk and appends to dst every event it completes,
// rewritten; the unfinished tail is held. With eos the tail is flushed: a
// final event without its terminating blank line is rewritten when its data
// is a complete JSON object, else passed through.
//
// When the unfinished tail grows beyond maxHeld, everything held is
// emitted raw and the rest of the stream passes through raw (fail open,
// Stats().FailedOpen).
func (s *SSEStream) Write(dst, chunk []byte, eos bool) []byte {
	if s.failed {
		return append(dst, chunk...)
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
		dst = append(dst, tail...)
		s.failed = true
		s.stats.FailedOpen = true
		s.hold = nil
		s.lines = s.lines[:0]
	case len(s.hold) == 0:
		s.hold = append(s.hold, tail...)
	case ev > 0:
		// Move the tail to the front; when no event completed (ev == 0)
		// the hold is already the tail, and copying it onto itself would
		// make small chunks quadratic.
		n := copy(s.hold, tail)
		s.hold = s.hold[:n]
	}
	return dst
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
		if string(name) == "data" {
			s.data = append(s.data, span{vs, l.ce})
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
		dst = append(dst, ev[:d.s]...)
		var changed bool
		var err error
		dst, changed, err = s.rw.rewrite(dst, payload)
		s.count(changed, err)
		return append(dst, ev[d.e:]...)
	}
	return s.multiLine(dst, ev)
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
