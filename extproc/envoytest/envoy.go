// Package envoytest plays Envoy's side of the ext_proc protocol against an
// ExternalProcessorClient, and provides a mock OpenAI-compatible upstream and
// generators for its bodies.
//
// The emulation follows the proto contract (go-control-plane envoy@v1.40.0:
// service/ext_proc/v3/external_processor.pb.go,
// extensions/filters/http/ext_proc/v3/{ext_proc,processing_mode}.pb.go) and
// the behaviour of Envoy's filter (source/extensions/filters/http/ext_proc:
// processor_state.cc, mutation_utils.cc, ext_proc.cc): one message per step,
// replies matched to the callback state (anything else is "spurious"),
// header mutations read from raw_value, content-length removed for streamed
// bodies and checked against a replaced BUFFERED body, streamed_response only
// in FULL_DUPLEX_STREAMED, mode_override honoured only in header state when
// allowed, dynamic metadata accepted only for receiving namespaces.
//
// It is a test double: timing, flow control and watermarks are not modelled;
// every STREAMED chunk waits for its reply before the next is sent.
package envoytest

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	procv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// Envoy is an emulated Envoy ext_proc filter.
type Envoy struct {
	client extprocv3.ExternalProcessorClient
	cfg    Config
}

// New returns an emulated filter talking to client.
func New(client extprocv3.ExternalProcessorClient, cfg Config) *Envoy {
	if cfg.ProcessingMode == nil {
		cfg.ProcessingMode = &procv3.ProcessingMode{}
	} else {
		cfg.ProcessingMode = proto.Clone(cfg.ProcessingMode).(*procv3.ProcessingMode)
	}
	if cfg.BufferLimit <= 0 {
		cfg.BufferLimit = 1 << 20
	}
	if cfg.StatusOnError == 0 {
		cfg.StatusOnError = http.StatusInternalServerError
	}
	return &Envoy{client: client, cfg: cfg}
}

// Do drives one exchange. The error reports bad input or an unreachable
// upstream; every side-stream problem shows in the Result the way Envoy
// would surface it (a local reply, or processing continuing unprocessed).
func (e *Envoy) Do(ctx context.Context, ex *Exchange) (*Result, error) {
	if ex.Upstream == nil && ex.UpstreamURL == "" {
		return nil, errors.New("envoytest: Exchange needs Upstream or UpstreamURL")
	}
	m := e.cfg.ProcessingMode
	for _, bm := range []procv3.ProcessingMode_BodySendMode{m.GetRequestBodyMode(), m.GetResponseBodyMode()} {
		if bm == procv3.ProcessingMode_GRPC {
			return nil, errors.New("envoytest: GRPC body mode is not emulated")
		}
	}
	if m.GetRequestBodyMode() == procv3.ProcessingMode_FULL_DUPLEX_STREAMED && m.GetRequestTrailerMode() != procv3.ProcessingMode_SEND ||
		m.GetResponseBodyMode() == procv3.ProcessingMode_FULL_DUPLEX_STREAMED && m.GetResponseTrailerMode() != procv3.ProcessingMode_SEND {
		// processing_mode.proto: "The corresponding trailer mode has to be
		// set to SEND"; Envoy refuses the configuration otherwise.
		return nil, errors.New("envoytest: FULL_DUPLEX_STREAMED needs the trailer mode of its direction set to SEND")
	}
	sctx, cancel := context.WithCancel(ctx)
	r := &run{cfg: &e.cfg, client: e.client, ctx: ctx, sctx: sctx, cancel: cancel,
		res: &Result{Metadata: map[string]*structpb.Struct{}}, mode: proto.Clone(m).(*procv3.ProcessingMode)}
	defer r.close()

	hdr := &headerList{}
	method := cmp(ex.Method, http.MethodPost)
	path := cmp(ex.Path, "/v1/chat/completions")
	hdr.add(":authority", cmp(ex.Authority, "upstream.test"))
	hdr.add(":path", path)
	hdr.add(":method", method)
	hdr.add(":scheme", "http")
	for _, p := range fromHTTP(ex.Header).kv {
		hdr.add(p[0], p[1])
	}
	if _, ok := hdr.get("content-length"); !ok && len(ex.Body) > 0 && !ex.OmitContentLength {
		hdr.add("content-length", strconv.Itoa(len(ex.Body)))
	}
	var trl *headerList
	if len(ex.Trailers) > 0 {
		trl = fromHTTP(ex.Trailers)
	}
	body := r.path(true, hdr, ex.Body, chunker(ex.RequestChunker)(ex.Body), trl)
	if r.local {
		return r.finish(), nil
	}

	status, rh, rbody, rtrl, err := r.forward(ex, hdr, body, trl)
	if err != nil {
		return nil, err
	}
	rh.kv = append([][2]string{{":status", strconv.Itoa(status)}}, rh.kv...)
	rbody = r.path(false, rh, rbody, chunker(ex.ResponseChunker)(rbody), rtrl)
	if r.local {
		if r.res.Reset {
			// The client had the status line already.
			st, _ := rh.get(":status")
			r.res.Status, _ = strconv.Atoi(st)
			r.res.Header = rh.http()
		}
		return r.finish(), nil
	}
	st, _ := rh.get(":status")
	r.res.Status, _ = strconv.Atoi(st)
	r.res.Header = rh.http()
	r.res.Body = rbody
	if rtrl != nil {
		r.res.Trailers = rtrl.http()
	}
	if cl, ok := rh.get("content-length"); ok {
		if n, err := strconv.Atoi(cl); err != nil || n != len(rbody) {
			r.violate("response content-length %q does not match the %d-byte body the client receives", cl, len(rbody))
		}
	}
	return r.finish(), nil
}

func join(chunks [][]byte) []byte {
	var out []byte
	for _, c := range chunks {
		out = append(out, c...)
	}
	return out
}

func cmp(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func chunker(c Chunker) Chunker {
	if c == nil {
		return Whole()
	}
	return c
}

func (r *run) finish() *Result {
	r.res.RequestMode = r.mode.GetRequestBodyMode()
	r.res.ResponseMode = r.mode.GetResponseBodyMode()
	return r.res
}
