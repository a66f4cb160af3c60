package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/extproc/envoytest"
	"github.com/distillguard/distillguard/extproc/keys"
	"github.com/distillguard/distillguard/scoring"
	"github.com/distillguard/distillguard/server"
)

// The end-to-end rig: the whole server (server.New, scoring on, on the
// simulated clock) behind envoytest's Envoy emulation configured as
// envoy/envoy.yaml configures the filter, in front of an upstream that
// serves a simulated model and honours exactly the request that reaches it
// (after distillguard's request rewrite), whose response then goes back
// through distillguard's response rewrite to the client. The raw baseline
// is the same rig with a no-op processor in distillguard's place.

// rigConn is the in-memory gRPC transport between the emulated Envoy and the
// server: the same server and gRPC settings as over TCP, without the
// kernel's loopback (the lab runs hundreds of thousands of exchanges).
const rigConnBuffer = 1 << 20

type econRig struct {
	srv    *server.Server
	conn   *grpc.ClientConn
	client extprocv3.ExternalProcessorClient
	clock  atomic.Int64 // simulated time, Unix nanoseconds
	up     *econUpstream
	raw    bool
}

// startRig serves cfg through server.New (or, raw, a no-op processor with
// the same gRPC settings) on in-memory listeners, with the upstream model m.
func startRig(cfg *config.Config, raw bool, m Model, start time.Time) (*econRig, error) {
	r := &econRig{up: newEconUpstream(m), raw: raw}
	r.clock.Store(start.UnixNano())
	gl, al := bufconn.Listen(rigConnBuffer), bufconn.Listen(rigConnBuffer)
	opts := server.Options{
		Clock:         func() time.Time { return time.Unix(0, r.clock.Load()).UTC() },
		Seed:          []byte(labSeed),
		GRPCListener:  gl,
		AdminListener: al,
	}
	if raw {
		opts.Processor = noopProcessor{}
	}
	srv, err := server.New(cfg, opts)
	if err != nil {
		return nil, err
	}
	srv.Start()
	conn, err := grpc.NewClient("passthrough:///distillguard",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return gl.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		srv.Close()
		return nil, err
	}
	r.srv, r.conn, r.client = srv, conn, extprocv3.NewExternalProcessorClient(conn)
	return r, nil
}

func (r *econRig) close() {
	r.conn.Close()
	r.srv.Close()
}

// identity is what a client presents: its credential, address and
// user-agent.
type identity struct {
	token, addr, ua string
}

// exchange is one API call through the rig.
type exchange struct {
	at     time.Time
	id     identity
	body   []byte
	stream bool
	// path defaults to /v1/chat/completions; header, when set, replaces
	// the headers built from id (replayed traffic brings its own).
	path   string
	header http.Header
	// keepBody keeps the raw response body in the outcome.
	keepBody bool
}

// outcome of one exchange as the client and the operator see it.
type econOutcome struct {
	status    int // HTTP status the client got
	resp      Response
	answered  bool // a model answer came back (not refused)
	verdict   scoring.Verdict
	probation bool
	session   string
	// upstreamTop is the top_logprobs that reached the upstream (-1: none
	// asked), and upstreamBias whether logit_bias did.
	upstreamTop  int
	upstreamBias bool
	score        float64
	body         []byte // with exchange.keepBody
}

// envoyConfig is the filter configuration of envoy/envoy.yaml: BUFFERED
// request bodies, STREAMED responses with mode override, request.time and
// source.address attributes, metadata namespace distillguard, fail closed.
func envoyConfig(at time.Time, addr string) envoytest.Config {
	c := envoytest.ShippedConfig(addr)
	c.RequestTime = at
	return c
}

// do sends one exchange at its simulated time.
func (r *econRig) do(ctx context.Context, ex exchange) (econOutcome, error) {
	if t := ex.at.UnixNano(); t > r.clock.Load() {
		r.clock.Store(t)
	}
	h := ex.header
	if h == nil {
		h = http.Header{"Content-Type": {"application/json"}, "User-Agent": {ex.id.ua}}
		if ex.id.token != "" {
			h.Set("Authorization", "Bearer "+ex.id.token)
		}
	}
	res, err := envoytest.New(r.client, envoyConfig(ex.at, ex.id.addr)).Do(ctx, &envoytest.Exchange{
		Path: ex.path, Header: h, Body: ex.body, Upstream: r.up,
	})
	if err != nil {
		return econOutcome{}, err
	}
	if len(res.Violations) > 0 {
		return econOutcome{}, fmt.Errorf("envoy: protocol violations: %q", res.Violations)
	}
	out := econOutcome{status: res.Status, upstreamTop: -1}
	d := res.Decision()
	if d.Rejected {
		out.status = d.Status
	}
	if v, err := scoring.ParseVerdict(d.Verdict); err == nil {
		out.verdict = v
	}
	out.session = d.Session
	out.score = d.Score
	if md := res.Metadata[keys.MetadataNamespace]; md != nil {
		out.probation = md.GetFields()[keys.Probation].GetBoolValue()
	}
	if res.Upstream != nil {
		out.upstreamTop, out.upstreamBias = upstreamAsks(res.Upstream.Body)
	}
	if d.Rejected || res.Status != http.StatusOK {
		return out, nil
	}
	if ex.keepBody {
		// The caller reads the body itself (replayed traffic of every
		// endpoint and shape).
		out.body, out.answered = res.Body, true
		return out, nil
	}
	if ex.stream {
		out.resp, err = parseSSE(res.Body)
	} else {
		out.resp, err = parseCompletion(res.Body)
	}
	if err != nil {
		return out, err
	}
	out.answered = true
	return out, nil
}

// upstreamAsks reads what the forwarded request asked for.
func upstreamAsks(body []byte) (top int, bias bool) {
	var w wireRequest
	if json.Unmarshal(body, &w) != nil {
		return -1, false
	}
	top = -1
	if w.Logprobs {
		top = 0
		if w.TopLogprobs != nil {
			top = *w.TopLogprobs
		}
	}
	return top, len(w.LogitBias) > 0
}

// econUpstream is the inference server: it answers what reaches it with
// the simulated model (API.serve: logit_bias added before the softmax,
// top_logprobs as asked, streamed or not). Safe for concurrent use.
type econUpstream struct {
	mu  sync.Mutex
	api *API
	out []byte
	// other, when set, answers what the model cannot (other endpoints,
	// message shapes the simulated server does not read).
	other http.Handler
}

func newEconUpstream(m Model) *econUpstream {
	return &econUpstream{api: NewAPI(m, Policy{}, APIOptions{})}
}

func (u *econUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if u.other != nil && r.URL.Path != "/v1/chat/completions" {
		r.Body = io.NopCloser(bytes.NewReader(body))
		u.other.ServeHTTP(w, r)
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	var req wireRequest
	stream := json.Unmarshal(body, &req) == nil && req.Stream
	u.out, err = u.api.serve(u.out[:0], body)
	if err != nil && u.other != nil {
		r.Body = io.NopCloser(bytes.NewReader(body))
		u.other.ServeHTTP(w, r)
		return
	}
	if err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"error":{"message":%q,"type":"invalid_request_error"}}`, err.Error())
		return
	}
	if stream {
		w.Header().Set("Content-Type", "text/event-stream")
	} else {
		w.Header().Set("Content-Type", "application/json")
	}
	w.Write(u.out)
}

// noopProcessor is the raw baseline: it answers every ext_proc message
// with an empty reply of the matching kind, which tells Envoy to continue
// unchanged (envoy.service.ext_proc.v3.ProcessingResponse).
type noopProcessor struct {
	extprocv3.UnimplementedExternalProcessorServer
}

func (noopProcessor) Process(st extprocv3.ExternalProcessor_ProcessServer) error {
	for {
		req, err := st.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
				return nil
			}
			return err
		}
		var resp *extprocv3.ProcessingResponse
		switch req.Request.(type) {
		case *extprocv3.ProcessingRequest_RequestHeaders:
			resp = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{}}}
		case *extprocv3.ProcessingRequest_ResponseHeaders:
			resp = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}}}
		case *extprocv3.ProcessingRequest_RequestBody:
			resp = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{}}}
		case *extprocv3.ProcessingRequest_ResponseBody:
			resp = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{}}}
		case *extprocv3.ProcessingRequest_RequestTrailers:
			resp = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{RequestTrailers: &extprocv3.TrailersResponse{}}}
		case *extprocv3.ProcessingRequest_ResponseTrailers:
			resp = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{ResponseTrailers: &extprocv3.TrailersResponse{}}}
		default:
			continue
		}
		if err := st.Send(resp); err != nil {
			return err
		}
	}
}
