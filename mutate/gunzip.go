package mutate

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
)

// ErrTooLarge reports a decompressed body beyond the Gunzip's bound (a
// gzip bomb, or simply a body larger than the proxy is willing to hold).
var ErrTooLarge = errors.New("mutate: decompressed body exceeds the limit")

// ErrChunkTooLarge reports one input chunk that decodes to more than the
// per-chunk bound (LimitChunk): what one message produces is what one
// reply carries, so it must stay bounded whatever the body's total.
var ErrChunkTooLarge = errors.New("mutate: one gzip chunk decodes beyond the per-chunk limit")

// Gunzip decodes a gzip stream incrementally: each byte of input is
// decompressed once, whatever the chunking.
//
// compress/gzip pulls its input from an io.Reader and cannot resume after
// a short read, so the decoder runs in a goroutine owned by the Gunzip. The
// two sides hand control back and forth over unbuffered channels and never
// run at the same time: Write gives the goroutine a chunk and waits; the
// goroutine decodes until its reader runs out of input, then hands back
// what it produced. Close ends the input and waits for the goroutine to
// exit, so no goroutine outlives Close. Concatenated gzip members (RFC 1952
// section 2.2) are decoded as one stream. Output that the deflate decoder
// holds inside an unfinished block comes out with a later Write; servers
// that flush per event (Z_SYNC_FLUSH) end a block at every flush.
type Gunzip struct {
	maxOut   int64
	maxChunk int // per Write; 0: no bound beyond maxOut
	base     int // len(out) when the current Write started

	started bool
	done    bool
	err     error

	in  chan []byte    // Write -> decoder: next chunk; closed at Close
	ev  chan struct{}  // decoder -> Write: needs input, or finished (done set)
	out []byte         // owned by whichever side runs; decoder appends
	n   int64          // bytes produced so far
	cur []byte         // decoder: unread part of the current chunk
	had bool           // decoder: a chunk was handed over (and is used up once cur is empty)
	eof bool           // decoder: the input channel was closed
	buf [16 << 10]byte // decoder: read buffer
	fin error          // decoder: final result
}

// NewGunzip returns a decoder that fails once more than maxOut bytes have
// been produced (gzip bomb guard).
func NewGunzip(maxOut int64) *Gunzip { return &Gunzip{maxOut: maxOut} }

// LimitChunk bounds what one Write may produce to n bytes: beyond it the
// Write fails with ErrChunkTooLarge.
func (g *Gunzip) LimitChunk(n int) { g.maxChunk = n }

// Write feeds chunk and appends all output decodable so far to dst.
func (g *Gunzip) Write(dst, chunk []byte) ([]byte, error) {
	if g.err != nil {
		return dst, g.err
	}
	if g.done {
		if len(chunk) > 0 {
			g.err = errors.New("mutate: gzip: data after the end of the stream")
		}
		return dst, g.err
	}
	if len(chunk) == 0 {
		return dst, nil
	}
	if !g.started {
		g.started = true
		g.in = make(chan []byte)
		g.ev = make(chan struct{})
		go g.decode()
	}
	g.out, g.base = dst, len(dst)
	g.in <- chunk
	<-g.ev
	dst, g.out = g.out, nil
	if g.done && g.fin != nil {
		g.err = g.fin
	}
	return dst, g.err
}

// Close ends the input, appends the remaining output and releases resources.
// It is safe to call more than once and after an error.
func (g *Gunzip) Close(dst []byte) ([]byte, error) {
	if g.started && !g.done {
		g.out, g.base = dst, len(dst)
		close(g.in)
		<-g.ev
		dst, g.out = g.out, nil
		if g.fin != nil && g.err == nil {
			g.err = g.fin
		}
	}
	if !g.started && g.err == nil {
		g.started, g.done = true, true
	}
	return dst, g.err
}

// decode runs the gzip reader; it exits after signalling done.
func (g *Gunzip) decode() {
	defer func() {
		g.done = true
		g.ev <- struct{}{}
	}()
	src := (*gzipSource)(g)
	zr, err := gzip.NewReader(src)
	if err != nil {
		g.fin = gzipErr(err)
		return
	}
	for {
		n, err := zr.Read(g.buf[:])
		if n > 0 {
			if g.n+int64(n) > g.maxOut {
				g.fin = fmt.Errorf("%w (%d bytes)", ErrTooLarge, g.maxOut)
				return
			}
			if g.maxChunk > 0 && len(g.out)-g.base+n > g.maxChunk {
				g.fin = fmt.Errorf("%w (%d bytes)", ErrChunkTooLarge, g.maxChunk)
				return
			}
			g.n += int64(n)
			g.out = append(g.out, g.buf[:n]...)
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			g.fin = gzipErr(err)
			return
		}
	}
}

func gzipErr(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return errors.New("mutate: gzip: truncated stream")
	}
	return fmt.Errorf("mutate: gzip: %w", err)
}

// gzipSource is the decoder's view of the Gunzip: an io.ByteReader so that
// compress/flate reads it directly, without a bufio layer reading ahead.
type gzipSource Gunzip

// fill makes cur non-empty, handing control back to Write when the current
// chunk is used up. It reports false at the end of input.
func (s *gzipSource) fill() bool {
	for len(s.cur) == 0 {
		if s.eof {
			return false
		}
		if s.had {
			// The previous chunk is used up: let Write return its output,
			// and keep no reference to it (it is the message Envoy sent)
			// while waiting for the next one.
			s.cur = nil
			s.ev <- struct{}{}
		}
		c, ok := <-s.in
		if !ok {
			s.eof = true
			return false
		}
		s.cur, s.had = c, true
	}
	return true
}

func (s *gzipSource) Read(p []byte) (int, error) {
	if !s.fill() {
		return 0, io.EOF
	}
	n := copy(p, s.cur)
	s.cur = s.cur[n:]
	return n, nil
}

func (s *gzipSource) ReadByte() (byte, error) {
	if !s.fill() {
		return 0, io.EOF
	}
	c := s.cur[0]
	s.cur = s.cur[1:]
	return c, nil
}
