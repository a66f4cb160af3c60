package envoytest

import (
	procv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// path runs one direction (request or response) through the filter and
// returns the body that continues downstream of it.
func (r *run) path(request bool, h *headerList, body []byte, chunks [][]byte, trl *headerList) []byte {
	if r.complete {
		return body
	}
	if r.cfg.ObservabilityMode {
		return r.observe(request, h, body, chunks, trl)
	}
	expH, _, _ := exps(request)
	eos := len(body) == 0 && trl == nil
	mode := r.bodyMode(request)
	duplex := mode == procv3.ProcessingMode_FULL_DUPLEX_STREAMED && !eos
	replaced := false
	if r.sendHeaders(request) {
		if err := r.send(headersMsg(request, h, eos), request); err != nil {
			if r.streamFailed(err) == ended {
				return nil
			}
			return body
		}
		// decodeHeaders/encodeHeaders strip content-length right after
		// sending headers, before any reply, by the mode in force then.
		if r.shouldRemoveContentLength(request) {
			h.remove("content-length")
		}
		if duplex {
			return r.duplex(request, h, chunks, trl, true)
		}
		m, out := r.await(expH, true)
		switch out {
		case ended:
			return nil
		case replied:
			cr := commonOf(m)
			if err := r.applyHeaderMutation(cr.GetHeaderMutation(), h, r.shouldRemoveContentLength(request)); err != nil {
				r.mutationFailed(err)
				return nil
			}
			if !request && !eos {
				switch r.bodyMode(false) {
				case procv3.ProcessingMode_BUFFERED, procv3.ProcessingMode_BUFFERED_PARTIAL:
					// Held until the body reply.
				default:
					r.respStarted = true
				}
			}
			if cr.GetStatus() == extprocv3.CommonResponse_CONTINUE_AND_REPLACE {
				// Replace the whole message; nothing more is sent.
				if bm := cr.GetBodyMutation(); bm != nil {
					h.remove("content-length")
					nb, ok := r.applyBody(bm, nil)
					if !ok {
						r.spurious("streamed_response in a headers reply")
						return nil
					}
					body, replaced = nb, true
				}
				return body
			}
		}
	} else if r.shouldRemoveContentLength(request) {
		h.remove("content-length")
	}
	if !request {
		defer func() { r.respStarted = true }()
	}
	if eos || r.complete || replaced {
		return body
	}
	mode = r.bodyMode(request) // a mode_override may have changed it
	var out []byte
	switch mode {
	case procv3.ProcessingMode_NONE:
		out = body
	case procv3.ProcessingMode_BUFFERED:
		out = r.buffered(request, h, body, trl)
	case procv3.ProcessingMode_STREAMED:
		out = r.streamed(request, chunks, trl)
	case procv3.ProcessingMode_BUFFERED_PARTIAL:
		out = r.partial(request, h, body, chunks, trl)
	case procv3.ProcessingMode_FULL_DUPLEX_STREAMED:
		return r.duplex(request, h, chunks, trl, false)
	}
	if r.local {
		return nil
	}
	r.trailers(request, trl)
	return out
}

func (r *run) trailers(request bool, trl *headerList) {
	if trl == nil || r.complete || !r.sendTrailers(request) {
		return
	}
	_, _, expT := exps(request)
	if err := r.send(trailersMsg(request, trl), request); err != nil {
		r.streamFailed(err)
		return
	}
	m, out := r.await(expT, true)
	if out != replied {
		return
	}
	if err := r.applyHeaderMutation(trailerMutationOf(m), trl, false); err != nil {
		r.mutationFailed(err)
	}
}

// observe sends one direction in observability mode: headers, the body
// only in STREAMED mode, trailers when configured; nothing is awaited.
func (r *run) observe(request bool, h *headerList, body []byte, chunks [][]byte, trl *headerList) []byte {
	eos := len(body) == 0 && trl == nil
	if r.sendHeaders(request) {
		if err := r.send(headersMsg(request, h, eos), request); err != nil {
			r.streamFailed(err)
			return body
		}
	}
	if !eos && r.bodyMode(request) == procv3.ProcessingMode_STREAMED {
		for i, c := range chunks {
			if err := r.send(bodyMsg(request, c, i == len(chunks)-1 && trl == nil), request); err != nil {
				r.streamFailed(err)
				return body
			}
		}
	}
	if trl != nil && r.sendTrailers(request) {
		if err := r.send(trailersMsg(request, trl), request); err != nil {
			r.streamFailed(err)
		}
	}
	return body
}

func (r *run) bodyMode(request bool) procv3.ProcessingMode_BodySendMode {
	if request {
		return r.mode.GetRequestBodyMode()
	}
	return r.mode.GetResponseBodyMode()
}

func (r *run) sendHeaders(request bool) bool {
	if request {
		return r.mode.GetRequestHeaderMode() != procv3.ProcessingMode_SKIP
	}
	return r.mode.GetResponseHeaderMode() != procv3.ProcessingMode_SKIP
}

func (r *run) sendTrailers(request bool) bool {
	if request {
		return r.mode.GetRequestTrailerMode() == procv3.ProcessingMode_SEND
	}
	return r.mode.GetResponseTrailerMode() == procv3.ProcessingMode_SEND
}

// shouldRemoveContentLength is ProcessorState::shouldRemoveContentLength:
// in these modes Envoy strips content-length after sending the headers and
// skips content-length in set_headers, unless allow_content_length_header
// makes the processor responsible for it.
func (r *run) shouldRemoveContentLength(request bool) bool {
	if r.cfg.AllowContentLengthHeader {
		return false
	}
	switch r.bodyMode(request) {
	case procv3.ProcessingMode_STREAMED, procv3.ProcessingMode_BUFFERED_PARTIAL, procv3.ProcessingMode_FULL_DUPLEX_STREAMED:
		return true
	case procv3.ProcessingMode_BUFFERED:
		return !r.sendHeaders(request)
	}
	return false
}

func exps(request bool) (h, b, t expect) {
	if request {
		return expReqHeaders, expReqBody, expReqTrailers
	}
	return expRespHeaders, expRespBody, expRespTrailers
}

func headersMsg(request bool, h *headerList, eos bool) *extprocv3.ProcessingRequest {
	if request {
		return RequestHeaders(h.proto(), eos)
	}
	return ResponseHeaders(h.proto(), eos)
}

func bodyMsg(request bool, b []byte, eos bool) *extprocv3.ProcessingRequest {
	if request {
		return RequestBody(b, eos)
	}
	return ResponseBody(b, eos)
}

func trailersMsg(request bool, t *headerList) *extprocv3.ProcessingRequest {
	if request {
		return RequestTrailers(t.proto())
	}
	return ResponseTrailers(t.proto())
}
