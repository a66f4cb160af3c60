package extproc

import (
	procv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// maxStreamedChunk bounds one streamed_response body: ProcessingMode
// FULL_DUPLEX_STREAMED recommends "no greater than 64K bytes".
const maxStreamedChunk = 64 << 10

// attachMeta puts the decision's dynamic metadata on r, once per stream.
func (st *stream) attachMeta(r *extprocv3.ProcessingResponse) {
	if st.meta == nil {
		return
	}
	r.DynamicMetadata = st.meta
	st.meta = nil // the reply holds it until sent; the stream no longer needs it
}

func headersReply(request bool, m *mutation) *extprocv3.ProcessingResponse {
	hr := &extprocv3.HeadersResponse{}
	if m != nil && !m.empty() {
		hr.Response = &extprocv3.CommonResponse{HeaderMutation: m.proto()}
	}
	if request {
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: hr}}
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: hr}}
}

func trailersReply(request bool) *extprocv3.ProcessingResponse {
	if request {
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{RequestTrailers: &extprocv3.TrailersResponse{}}}
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{ResponseTrailers: &extprocv3.TrailersResponse{}}}
}

// replyBuf is the reply tree of one body message (ProcessingResponse ->
// BodyResponse -> CommonResponse -> BodyMutation), kept by the stream and
// reused for every body message instead of building six objects per
// message. Reuse is safe because grpc-go's serverStream.SendMsg marshals
// the message (prepareMsg -> encode) before it returns and keeps only the
// encoded bytes, and Process sends a message's replies before it handles
// the next message. The same holds for the body bytes a reply points at.
type replyBuf struct {
	resp     extprocv3.ProcessingResponse
	reqBody  extprocv3.ProcessingResponse_RequestBody
	respBody extprocv3.ProcessingResponse_ResponseBody
	br       extprocv3.BodyResponse
	cr       extprocv3.CommonResponse
	bm       extprocv3.BodyMutation
	body     extprocv3.BodyMutation_Body
	clear    extprocv3.BodyMutation_ClearBody
	streamed extprocv3.BodyMutation_StreamedResponse
	sbr      extprocv3.StreamedBodyResponse
}

// maxKeptReplies bounds the reply trees a stream keeps. A message gets one
// body reply, except a large FULL_DUPLEX_STREAMED release cut into 64 KiB
// chunks: replies beyond this many are allocated and not kept.
const maxKeptReplies = 2

// nextReply returns an empty reply tree for the current message. Its
// replies stay valid until the next call to handle.
func (st *stream) nextReply() *replyBuf {
	i := st.nreplies
	st.nreplies++
	if i < len(st.replies) {
		b := st.replies[i]
		*b = replyBuf{}
		return b
	}
	b := new(replyBuf)
	if i < maxKeptReplies {
		st.replies = append(st.replies, b)
	}
	return b
}

// common returns the tree's (empty) CommonResponse.
func (b *replyBuf) common() *extprocv3.CommonResponse { return &b.cr }

// bodyReply wires the tree as a request or response body reply carrying cr
// (nil: no common response, the chunk goes on unchanged).
func (b *replyBuf) bodyReply(request bool, cr *extprocv3.CommonResponse) *extprocv3.ProcessingResponse {
	b.br.Response = cr
	if request {
		b.reqBody.RequestBody = &b.br
		b.resp.Response = &b.reqBody
	} else {
		b.respBody.ResponseBody = &b.br
		b.resp.Response = &b.respBody
	}
	return &b.resp
}

// replaceBody is a non-streamed body mutation that replaces the chunk Envoy
// sent with data (CommonResponse.body_mutation: "simply replace or clear the
// body chunk that was sent with that request").
func (b *replyBuf) replaceBody(data []byte) *extprocv3.BodyMutation {
	if len(data) == 0 {
		b.clear.ClearBody = true
		b.bm.Mutation = &b.clear
	} else {
		b.body.Body = data
		b.bm.Mutation = &b.body
	}
	return &b.bm
}

// streamedBody is a FULL_DUPLEX_STREAMED body mutation
// (BodyMutation.streamed_response).
func (b *replyBuf) streamedBody(chunk []byte, eos bool) *extprocv3.BodyMutation {
	b.sbr.Body, b.sbr.EndOfStream = chunk, eos
	b.streamed.StreamedResponse = &b.sbr
	b.bm.Mutation = &b.streamed
	return &b.bm
}

// passBody is a body reply that lets the chunk go on unchanged.
func (st *stream) passBody(request bool) *extprocv3.ProcessingResponse {
	return st.nextReply().bodyReply(request, nil)
}

// emitStreamed sends b as streamed_response chunks of at most 64 KiB; the
// last carries eos. Nothing is sent for an empty, non-final b. With meta the
// decision's metadata rides on the first chunk.
func (st *stream) emitStreamed(request bool, b []byte, eos, meta bool) {
	if len(b) == 0 && !eos {
		return
	}
	st.countOut(len(b))
	for first := true; first || len(b) > 0; first = false {
		n := min(len(b), maxStreamedChunk)
		chunk := b[:n]
		b = b[n:]
		rb := st.nextReply()
		cr := rb.common()
		cr.BodyMutation = rb.streamedBody(chunk, eos && len(b) == 0)
		r := rb.bodyReply(request, cr)
		if meta {
			st.attachMeta(r)
		}
		st.emit(r)
	}
}

// overrideMode builds a mode_override that changes only the response body
// mode. Envoy applies an override to both directions and takes its body
// modes literally (older versions take every field literally), so the
// request body mode in force is copied; header and trailer modes are
// DEFAULT ("no change") except where the mode in force is known.
func (st *stream) overrideMode(want bodyMode) *procv3.ProcessingMode {
	m := &procv3.ProcessingMode{
		RequestHeaderMode:  procv3.ProcessingMode_DEFAULT, // ignored in overrides
		ResponseHeaderMode: procv3.ProcessingMode_SEND,    // we are processing them
		RequestBodyMode:    st.reqMode,
		ResponseBodyMode:   want,
	}
	if st.rq.phase == reqTrailers {
		m.RequestTrailerMode = procv3.ProcessingMode_SEND
	}
	return m
}
