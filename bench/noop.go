package bench

import (
	"errors"
	"fmt"
	"io"

	procmodev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Noop is the baseline ext_proc processor: it answers every message with an
// empty reply of the matching kind, which tells Envoy to continue unchanged
// (envoy.service.ext_proc.v3.ProcessingResponse: "the server must respond to
// this message by ... sending back a matching ProcessingResponse"). In
// FULL_DUPLEX_STREAMED mode a body reply must carry the body on as a
// streamed_response (envoy.extensions.filters.http.ext_proc.v3.ProcessingMode
// FULL_DUPLEX_STREAMED: "The server needs to send StreamedBodyResponse"), so
// there it echoes each chunk. It does no other work: the latency it shows is
// gRPC and the network stack, the floor any processor pays.
type Noop struct {
	extprocv3.UnimplementedExternalProcessorServer

	// Replies are shared by every stream: gRPC marshals a message before
	// Send returns and these are never modified, so concurrent sends are
	// safe.
	reqHeaders, respHeaders, reqBody, respBody, reqTrailers, respTrailers *extprocv3.ProcessingResponse
	// echo: response bodies come back as a body mutation carrying the
	// same bytes (NewEcho).
	echo bool
	// read, when set (NewReadFloor), starts a session read once the
	// request headers are answered; what it returns waits for it, and is
	// called before the request body is answered.
	read func(*extprocv3.HttpHeaders) func() error
	// refuse, when set (NewReadFloor), answers every request body.
	refuse *extprocv3.ProcessingResponse
}

// NewEcho returns the echo processor: the no-op one, except that every
// response body chunk is answered with a body mutation that replaces it
// with itself (CommonResponse.body_mutation.body), in every body mode. It
// is the floor of a processor that rewrites every chunk: the cost of
// carrying the bytes back and of Envoy replacing its buffer, with no
// parsing at all.
func NewEcho() *Noop {
	n := NewNoop()
	n.echo = true
	return n
}

// NewNoop returns the no-op processor.
func NewNoop() *Noop {
	return &Noop{
		reqHeaders:   &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{}}},
		respHeaders:  &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}}},
		reqBody:      &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{}}},
		respBody:     &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{}}},
		reqTrailers:  &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{RequestTrailers: &extprocv3.TrailersResponse{}}},
		respTrailers: &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{ResponseTrailers: &extprocv3.TrailersResponse{}}},
	}
}

// Process serves one HTTP exchange.
func (n *Noop) Process(stream extprocv3.ExternalProcessor_ProcessServer) error {
	var reqMode, respMode procmodev3.ProcessingMode_BodySendMode
	// One echo message per stream, reused: Send has marshalled it by the
	// time it returns.
	echoBody := &extprocv3.StreamedBodyResponse{}
	echo := &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{
		Response: &extprocv3.CommonResponse{BodyMutation: &extprocv3.BodyMutation{
			Mutation: &extprocv3.BodyMutation_StreamedResponse{StreamedResponse: echoBody},
		}},
	}}}
	reqEcho := &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{
		Response: &extprocv3.CommonResponse{BodyMutation: &extprocv3.BodyMutation{
			Mutation: &extprocv3.BodyMutation_StreamedResponse{StreamedResponse: echoBody},
		}},
	}}}
	bodyEcho := &extprocv3.BodyMutation_Body{}
	replaced := &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{
		Response: &extprocv3.CommonResponse{BodyMutation: &extprocv3.BodyMutation{Mutation: bodyEcho}},
	}}}
	req := &extprocv3.ProcessingRequest{}
	var pending func() error
	for first := true; ; first = false {
		if err := stream.RecvMsg(req); err != nil {
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
				return nil
			}
			return err
		}
		// protocol_config comes only with the first message of a stream.
		if pc := req.GetProtocolConfig(); first && pc != nil {
			reqMode, respMode = pc.GetRequestBodyMode(), pc.GetResponseBodyMode()
		}
		if req.GetObservabilityMode() {
			continue // replies would be ignored
		}
		var resp *extprocv3.ProcessingResponse
		switch r := req.Request.(type) {
		case *extprocv3.ProcessingRequest_RequestHeaders:
			resp = n.reqHeaders
		case *extprocv3.ProcessingRequest_ResponseHeaders:
			resp = n.respHeaders
		case *extprocv3.ProcessingRequest_RequestBody:
			resp = n.reqBody
			if pending != nil {
				err := pending()
				if pending = nil; err != nil {
					return fmt.Errorf("read floor: %w", err)
				}
			}
			if reqMode == procmodev3.ProcessingMode_FULL_DUPLEX_STREAMED {
				echoBody.Body, echoBody.EndOfStream = r.RequestBody.GetBody(), r.RequestBody.GetEndOfStream()
				resp = reqEcho
			}
			if n.refuse != nil { // an immediate response ends the exchange in any body mode
				resp = n.refuse
			}
		case *extprocv3.ProcessingRequest_ResponseBody:
			resp = n.respBody
			if n.echo {
				bodyEcho.Body = r.ResponseBody.GetBody()
				resp = replaced
			}
			if respMode == procmodev3.ProcessingMode_FULL_DUPLEX_STREAMED {
				echoBody.Body, echoBody.EndOfStream = r.ResponseBody.GetBody(), r.ResponseBody.GetEndOfStream()
				resp = echo
			}
		case *extprocv3.ProcessingRequest_RequestTrailers:
			resp = n.reqTrailers
		case *extprocv3.ProcessingRequest_ResponseTrailers:
			resp = n.respTrailers
		default:
			continue // e.g. a flow-control-only message: nothing to answer
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
		if h := req.GetRequestHeaders(); h != nil && n.read != nil && !h.GetEndOfStream() {
			pending = n.read(h)
		}
	}
}
