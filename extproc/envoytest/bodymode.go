package envoytest

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// bodyReply sends sent as one body message (BUFFERED sends the whole body
// so, BUFFERED_PARTIAL what it has queued), awaits the reply and applies its
// header mutation. With done the caller returns ret at once: nil when the
// exchange ended (a local reply, or a header mutation Envoy rejects), body
// when Envoy continues without the processor. Otherwise the caller applies
// cr's body mutation.
func (r *run) bodyReply(request bool, h *headerList, body, sent []byte, eos bool) (cr *extprocv3.CommonResponse, ret []byte, done bool) {
	_, expB, _ := exps(request)
	if err := r.send(bodyMsg(request, sent, eos), request); err != nil {
		if r.streamFailed(err) == ended {
			return nil, nil, true
		}
		return nil, body, true
	}
	m, out := r.await(expB, true)
	if out != replied {
		return nil, body, true
	}
	cr = commonOf(m)
	if hm := cr.GetHeaderMutation(); hm != nil {
		if err := r.applyHeaderMutation(hm, h, r.shouldRemoveContentLength(request)); err != nil {
			r.mutationFailed(err)
			return nil, nil, true
		}
	}
	return cr, nil, false
}

func (r *run) buffered(request bool, h *headerList, body []byte, trl *headerList) []byte {
	if len(body) > r.cfg.BufferLimit {
		// StopIterationAndBuffer past the buffer limit: Envoy's own reply.
		if request {
			r.localReply(http.StatusRequestEntityTooLarge, []byte("Payload Too Large"), nil, "request_payload_too_large")
		} else {
			r.localReply(http.StatusInternalServerError, []byte("Internal Server Error"), nil, "response_payload_too_large")
		}
		return nil
	}
	cr, ret, done := r.bodyReply(request, h, body, body, trl == nil)
	if done {
		return ret
	}
	if !request {
		r.respStarted = true
	}
	if bm := cr.GetBodyMutation(); bm != nil {
		nb, ok := r.applyBody(bm, body)
		if !ok {
			r.spurious("streamed_response while the body mode is BUFFERED")
			return body
		}
		if cl, ok := h.get("content-length"); ok {
			if n, err := strconv.Atoi(cl); err == nil && n != len(bm.GetBody()) {
				r.mutationFailed(fmt.Errorf("mismatch between content length %d and the length of the mutated body %d", n, len(bm.GetBody())))
				return nil
			}
		}
		body = nb
	}
	return body
}

func (r *run) streamed(request bool, chunks [][]byte, trl *headerList) []byte {
	_, expB, _ := exps(request)
	var out []byte
	for i, c := range chunks {
		if r.complete {
			out = append(out, c...)
			continue
		}
		if err := r.send(bodyMsg(request, c, i == len(chunks)-1 && trl == nil), request); err != nil {
			if r.streamFailed(err) == ended {
				return nil
			}
			out = append(out, c...)
			continue
		}
		m, res := r.await(expB, true)
		switch res {
		case ended:
			return nil
		case bypassed:
			out = append(out, c...) // clearAsyncState injects the queued chunk
			continue
		}
		nb, ok := r.applyBody(commonOf(m).GetBodyMutation(), c)
		if !ok {
			if r.spurious("streamed_response while the body mode is STREAMED") == ended {
				return nil
			}
			nb = c
		}
		out = append(out, nb...)
	}
	return out
}

func (r *run) partial(request bool, h *headerList, body []byte, chunks [][]byte, trl *headerList) []byte {
	// Chunks queue up until end of stream or until the queue exceeds the
	// buffer limit, then everything queued goes in one message.
	n, i := 0, 0
	for i < len(chunks) {
		n += len(chunks[i])
		i++
		if n > r.cfg.BufferLimit {
			break
		}
	}
	sent, rest := body[:n], body[n:]
	eos := i == len(chunks) && trl == nil
	cr, ret, done := r.bodyReply(request, h, body, sent, eos)
	if done {
		return ret
	}
	if !request {
		r.respStarted = true
	}
	nb, ok := r.applyBody(cr.GetBodyMutation(), sent)
	if !ok {
		if r.spurious("streamed_response while the body mode is BUFFERED_PARTIAL") == ended {
			return nil
		}
		nb = sent
	}
	return append(append([]byte(nil), nb...), rest...)
}

// duplex runs a FULL_DUPLEX_STREAMED body: chunks (and trailers) are sent
// without waiting while replies are collected; the headers reply must come
// first, then streamed_response chunks until end_of_stream (or the trailers
// reply when trailers were sent).
func (r *run) duplex(request bool, h *headerList, chunks [][]byte, trl *headerList, awaitHeaders bool) []byte {
	expH, expB, expT := exps(request)
	sendTrl := trl != nil
	if err := r.open(); err != nil {
		if r.streamFailed(err) == ended {
			return nil
		}
		return join(chunks)
	}
	var wg sync.WaitGroup
	finished := false
	defer func() {
		if !finished {
			r.cancel() // unblock the sender: this side stream is over
		}
		wg.Wait()
	}()
	sendErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i, c := range chunks {
			if err := r.send(bodyMsg(request, c, i == len(chunks)-1 && !sendTrl), request); err != nil {
				sendErr <- err
				return
			}
		}
		if sendTrl {
			if err := r.send(trailersMsg(request, trl), request); err != nil {
				sendErr <- err
			}
		}
	}()
	var out []byte
	if awaitHeaders {
		m, res := r.await(expH, false)
		switch res {
		case ended:
			return nil
		case bypassed:
			return r.duplexLost()
		}
		if err := r.applyHeaderMutation(commonOf(m).GetHeaderMutation(), h, r.shouldRemoveContentLength(request)); err != nil {
			r.mutationFailed(err)
			return nil
		}
		if !request {
			r.respStarted = true
		}
	}
	bodyDone, trlDone := false, !sendTrl
	for !trlDone || !(bodyDone || sendTrl) {
		m, err := r.recv(false)
		if err != nil {
			if r.streamFailed(err) == ended {
				return nil
			}
			return r.duplexLost()
		}
		if m.GetModeOverride() != nil {
			r.modeOverride(m.GetModeOverride(), false)
		}
		kind := ReplyKind(m)
		r.acceptMetadata(m, kind)
		if ir := m.GetImmediateResponse(); ir != nil {
			r.immediate(ir)
			return nil
		}
		switch kind {
		case expNames[expB]:
			sr := commonOf(m).GetBodyMutation().GetStreamedResponse()
			if sr == nil {
				if r.spurious("normal body mutation while the body mode is FULL_DUPLEX_STREAMED") == ended {
					return nil
				}
				return r.duplexLost()
			}
			if bodyDone {
				r.violate("streamed_response after end_of_stream")
			}
			out = append(out, sr.GetBody()...)
			if sr.GetEndOfStream() {
				bodyDone = true
			}
		case expNames[expT]:
			if !sendTrl {
				if r.spurious("trailers reply without trailers") == ended {
					return nil
				}
				return r.duplexLost()
			}
			if err := r.applyHeaderMutation(trailerMutationOf(m), trl, false); err != nil {
				r.mutationFailed(err)
				return nil
			}
			trlDone = true
			bodyDone = true
		default:
			if r.spurious("%s reply during a FULL_DUPLEX_STREAMED body", kind) == ended {
				return nil
			}
			return r.duplexLost()
		}
	}
	finished = true
	wg.Wait()
	select {
	case err := <-sendErr:
		r.violate("sending the body failed: %v", err)
	default:
	}
	return out
}

// duplexLost handles a side stream that failed open in the middle of a
// FULL_DUPLEX_STREAMED body. Envoy drains each chunk once it is sent to the
// processor, so there is nothing left to continue with: it cannot fail open
// (Filter::failureModeAllow is false once a duplex body was received) and
// answers status_on_error.
func (r *run) duplexLost() []byte {
	r.violate("side stream ended during a FULL_DUPLEX_STREAMED body")
	r.localReply(r.cfg.StatusOnError, nil, nil, "ext_proc_error_full_duplex_stream_lost")
	return nil
}
