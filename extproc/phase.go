package extproc

// Each direction of a stream moves through a few phases, declared in the
// order they are passed through. A phase never moves back (to keeps the
// later one), so a late or repeated message cannot reopen what is settled.
// The handlers move a direction when its processing changes; handle moves
// it when the direction ends (end_of_stream, trailers). A headers message
// in any phase but the first is a protocol violation: it is answered and
// changes nothing.
//
// Request:
//
//	reqStart ──headers, body mode STREAMED / BUFFERED / BUFFERED_PARTIAL──▶ reqHolding
//	reqStart ──headers, FULL_DUPLEX_STREAMED─────────────────────────────▶ reqHoldingHeaders
//	reqStart ──body (request headers skipped)────────────────────────────▶ reqHolding
//	reqStart ──headers with end_of_stream, or body mode NONE / GRPC──────▶ reqPassing (decided)
//	reqHolding, reqHoldingHeaders ──body complete, too large or cut;
//	                                trailers (decided) ──────────────────▶ reqPassing
//	any ──end_of_stream──▶ reqEnded        any ──trailers──▶ reqTrailers
//
// Response:
//
//	respStart ──headers of a body to rewrite──────────────────────▶ respRewriting
//	respStart ──headers of a body left untouched; a body without
//	            headers (response headers skipped)────────────────▶ respPassing
//	respRewriting ──given up (cut, gzip failure while restorable,
//	                too large while restorable, trailers)─────────▶ respPassing
//	any ──end_of_stream or trailers──▶ respEnded
//
// Inside respRewriting the body has states of its own (respBody.kind).

// reqPhase is where the request direction of a stream is.
type reqPhase uint8

const (
	// reqStart: no request message yet.
	reqStart reqPhase = iota
	// reqHolding: the decision needs the body; its chunks are held back
	// until it is complete.
	reqHolding
	// reqHoldingHeaders: reqHolding in FULL_DUPLEX_STREAMED, where the
	// headers reply is held too until the body is known, which the mode
	// allows ("the server may also choose to buffer the entire message,
	// including the headers").
	reqHoldingHeaders
	// reqPassing: the decision no longer depends on the body; later chunks
	// pass untouched.
	reqPassing
	// reqEnded: end_of_stream seen; Envoy sends nothing more for the
	// request.
	reqEnded
	// reqTrailers: trailers seen, which end the request too, and show that
	// the filter sends request trailers (request_trailer_mode SEND).
	reqTrailers
)

func (p *reqPhase) to(next reqPhase) { *p = max(*p, next) }

// holding reports whether the body is still held for the decision.
func (p reqPhase) holding() bool { return p < reqPassing }

// ended reports whether the request direction is over.
func (p reqPhase) ended() bool { return p >= reqEnded }

// respPhase is where the response direction of a stream is.
type respPhase uint8

const (
	// respStart: no response message yet.
	respStart respPhase = iota
	// respRewriting: the body goes through the stream's respBody.
	respRewriting
	// respPassing: the body passes untouched: nothing to rewrite, or
	// rewriting was given up.
	respPassing
	// respEnded: end_of_stream or trailers seen.
	respEnded
)

func (p *respPhase) to(next respPhase) { *p = max(*p, next) }
