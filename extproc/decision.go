package extproc

import (
	"encoding/json"
	"math"
	"slices"
	"sort"
	"strconv"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/extproc/keys"
	"github.com/distillguard/distillguard/mutate"
	"github.com/distillguard/distillguard/scoring"
)

func (st *stream) reqHeader(name string) string { return getHeader(st.rq.hdr, name) }

// scoringRequest is the scorer's view of the request from its headers and
// attributes (the body's fields are added by decide).
func (st *stream) scoringRequest() *scoring.Request {
	rq := &st.rq
	return &scoring.Request{
		Time:          st.reqTime,
		Header:        st.reqHeader,
		SourceAddress: st.srcAddr,
		Path:          rq.path,
		Endpoint:      endpointOf(rq.path),
		Identity:      st.identitySources(),
	}
}

// identitySources are the identity sources of this request (nil: the
// scorer's configured ones): the route's, or the Messages API's default.
func (st *stream) identitySources() []string {
	if st.decided && st.action.Identity != nil {
		return st.action.Identity
	}
	if v := st.rq.view.Identity; v != nil {
		return v
	}
	return defaultIdentityFor(endpointOf(st.rq.path), st.cfg.Scoring.Identity)
}

// defaultIdentityFor is the identity of an API whose upstream bills
// another credential than the configured default puts first: Anthropic's
// Messages API authenticates with x-api-key
// (https://docs.anthropic.com/en/api/overview#authentication), so a junk
// Authorization header must not be the session there. Only the built-in
// default list is reordered; a configured one is the operator's decision.
func defaultIdentityFor(endpoint string, configured []string) []string {
	if endpoint != "messages" || !slices.Equal(configured, scoring.DefaultConfig().Identity) {
		return nil
	}
	return []string{"header:x-api-key", "authorization", "client_ip"}
}

// decide scores the request once, from the headers and the body as read
// (b, nil when there is none or it could not be read; body is the bytes
// forwarded), and resolves its action. It returns the immediate response
// when the action rejects.
func (st *stream) decide(b *mutate.Body, body []byte) (reject *extprocv3.ProcessingResponse) {
	if st.decided {
		return nil
	}
	rq := &st.rq
	sr := st.scoringRequest()
	st.decided = true
	model := ""
	if b != nil {
		p := &b.Request
		model = p.Model
		sr.Model, sr.Prompt, sr.Messages = p.Model, p.Prompt, p.Messages
		sr.Stream, sr.N, sr.MaxTokens, sr.Temperature = p.Stream, p.N, p.MaxTokens, p.Temperature
		sr.Logprobs, sr.TopLogprobs, sr.LogitBiasSize = p.Logprobs, p.TopLogprobs, p.LogitBiasSize
		sr.Echo, sr.ShapeKeys = p.Echo, p.ShapeKeys
		sr.System, sr.Tools, sr.ToolCount, sr.FirstUser = p.System, p.Tools, p.ToolCount, p.FirstUser
		sr.UserTurns, sr.AssistantTurns, sr.ToolTurns, sr.AfterUser = p.UserTurns, p.AssistantTurns, p.ToolTurns, p.AfterUser
	}
	// Some APIs say in the path what others say in the body: Gemini's
	// model, and the endpoints that always stream.
	if m := pathModel(rq.format, rq.path); model == "" && m != "" {
		model, sr.Model = m, m
	}
	sr.Stream = sr.Stream || pathStreams(rq.format, rq.path)
	// The model picks the route; the route may name its own identity
	// (else the API's default, else the configured sources).
	sr.Identity = st.cfg.Resolve(rq.path, model, scoring.Allow).Identity
	if sr.Identity == nil {
		sr.Identity = defaultIdentityFor(endpointOf(rq.path), st.cfg.Scoring.Identity)
	}
	d := st.score(sr)
	shadow := d.Shadow || st.cfg.Scoring.Shadow || st.cfg.Resolve(rq.path, model, scoring.Allow).Shadow
	acted := d.Verdict
	if shadow {
		acted = scoring.Allow
	}
	st.verdict = d.Verdict
	st.shadow = shadow
	// An identity without standing gets the route's probation tier where
	// it would get allow (never in shadow mode, which only observes).
	st.action = st.cfg.ResolveStanding(rq.path, model, acted, d.Probation && !shadow)
	st.seed = mutate.PerturbSeed(d.Session, body)
	st.session = d.Session
	st.meta = decisionMetadata(d, st.action, shadow)
	st.watermarkDecision(b)
	st.srv.m.request(st.mctx, d.Verdict.String(), st.action.Policy, shadow)
	st.traceDecision(d, model)
	if st.action.Reject != nil {
		return st.reject(st.action.Reject)
	}
	return nil
}

// score calls the scorer and fails open: a panic inside Score allows the
// request, counted.
func (st *stream) score(r *scoring.Request) (d scoring.Decision) {
	defer func() {
		if p := recover(); p != nil {
			st.pass(reasonScorerPanic)
			st.srv.log.Warn("scorer panicked; request allowed", "stream", st.id, "panic", p)
			d = scoring.Decision{Verdict: scoring.Allow}
		}
	}()
	d = st.srv.scorer.Score(r)
	if d.Verdict < scoring.Allow || d.Verdict > scoring.Block {
		d.Verdict = scoring.Block // config.Resolve treats unknown verdicts the same way
	}
	return d
}

type apiError struct {
	Error apiErrorBody `json:"error"`
}

type apiErrorBody struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// reject builds the immediate response: an OpenAI-style error body
// (https://platform.openai.com/docs/guides/error-codes), JSON content type,
// retry-after on 429, and details "distillguard_<verdict>" for Envoy's
// %RESPONSE_CODE_DETAILS%.
func (st *stream) reject(rj *config.Reject) *extprocv3.ProcessingResponse {
	e := apiError{Error: apiErrorBody{Message: rj.Message, Type: rj.Type}}
	if rj.Code != "" {
		code := rj.Code
		e.Error.Code = &code
	}
	body, _ := json.Marshal(e) // plain strings: cannot fail
	var m mutation
	// ImmediateResponse.body is sent "using the text/plain content type"
	// unless the header mutation overrides it.
	m.setHeader("content-type", "application/json")
	if rj.Status == 429 && rj.RetryAfter > 0 {
		m.setHeader("retry-after", strconv.FormatInt(int64(math.Ceil(rj.RetryAfter.Seconds())), 10))
	}
	ir := &extprocv3.ImmediateResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode(rj.Status)},
		Headers: m.proto(),
		Body:    body,
		Details: "distillguard_" + st.action.Verdict.String(),
	}
	r := &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: ir}}
	st.attachMeta(r)
	st.rejected = true
	st.rq.buf = nil
	if !st.observe { // in observability mode nothing reaches Envoy
		st.srv.m.immediateResponse(st.mctx, rj.Status)
	}
	return r
}

// maxSignals bounds the signals exported in metadata (access logs).
const maxSignals = 5

// decisionMetadata is the dynamic metadata of a decision, under the
// keys.MetadataNamespace namespace (ProcessingResponse.dynamic_metadata:
// "placed in the namespace(s) specified by the top-level field name(s) of
// the struct"). verdict is what the scorer said, action what was enforced
// (Allow in shadow mode).
func decisionMetadata(d scoring.Decision, a config.Action, shadow bool) *structpb.Struct {
	sigs := make([]scoring.Signal, len(d.Signals))
	copy(sigs, d.Signals)
	sort.SliceStable(sigs, func(i, j int) bool { return sigs[i].Contribution > sigs[j].Contribution })
	if len(sigs) > maxSignals {
		sigs = sigs[:maxSignals]
	}
	sf := make(map[string]*structpb.Value, len(sigs))
	for _, s := range sigs {
		sf[s.Name] = structpb.NewNumberValue(finite(math.Round(s.Contribution*1000) / 1000))
	}
	inner := &structpb.Struct{Fields: map[string]*structpb.Value{
		keys.Verdict: structpb.NewStringValue(d.Verdict.String()),
		keys.Action:  structpb.NewStringValue(a.Verdict.String()),
		keys.Score:   structpb.NewNumberValue(finite(d.Score)),
		keys.Session: structpb.NewStringValue(d.Session),
		keys.Signals: structpb.NewStructValue(&structpb.Struct{Fields: sf}),
		keys.Policy:  structpb.NewStringValue(a.Policy),
		keys.Shadow:  structpb.NewBoolValue(shadow),
	}}
	if a.Probation {
		inner.Fields[keys.Probation] = structpb.NewBoolValue(true)
	}
	return &structpb.Struct{Fields: map[string]*structpb.Value{keys.MetadataNamespace: structpb.NewStructValue(inner)}}
}

// finite maps NaN and infinities to 0: they have no JSON form in access logs.
func finite(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}
