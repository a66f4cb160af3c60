package extproc

import "sync"

// maxPooledOut bounds the output buffers kept in the server's pool: a
// token event needs about 1 KiB, a buffered JSON body with logprobs some
// 100 KiB. Reusing the latter saves an allocation of the body's size (and
// the collection that pays for it) per response; what the pool holds and
// nobody borrows is freed within two collections (sync.Pool), and the
// buffer of a body beyond 1 MiB is left to the garbage collector.
const maxPooledOut = 1 << 20

// outBuf is the scratch a stream's rewritten output is appended to. It is
// borrowed from the server's pool for one message at most: the replies of
// the message point into it until Process has sent them, then giveBack
// returns it, so a stream waiting for its next chunk holds none.
type outBuf struct {
	pool *sync.Pool // of *[]byte
	box  *[]byte    // the pool's box for buf, reused to give it back
	buf  []byte     // nil: not borrowed
}

// borrow returns the buffer, empty, taking one from the pool when none is
// held. What is appended to it stays valid until giveBack.
func (o *outBuf) borrow() []byte {
	if o.buf == nil {
		o.take()
	}
	return o.buf[:0]
}

// take is borrow's slow path, kept out of line so that borrow inlines.
//
//go:noinline
func (o *outBuf) take() {
	if p, ok := o.pool.Get().(*[]byte); ok {
		o.box, o.buf = p, *p
	}
}

// keep takes b, what was appended to the borrowed buffer, as the buffer
// from now on (appending may have moved and grown it), and returns it.
func (o *outBuf) keep(b []byte) []byte {
	o.buf = b[:0]
	return b
}

// giveBack returns the buffer to the pool. Nothing may point into it
// afterwards: Process calls it once the replies are sent.
func (o *outBuf) giveBack() {
	if o.buf == nil {
		return
	}
	if cap(o.buf) <= maxPooledOut {
		p := o.box
		if p == nil {
			p = new([]byte)
		}
		*p = o.buf[:0]
		o.pool.Put(p)
	}
	o.buf, o.box = nil, nil
}
