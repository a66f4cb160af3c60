// Package config loads, validates and resolves distillguard's configuration.
//
// The configuration is YAML decoded strictly: an unknown key is an error that
// names its line. Without a file the embedded default (default.yaml) applies.
// A loaded Config is immutable; the server swaps whole Configs atomically on
// SIGHUP.
package config

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/distillguard/distillguard/mutate"
	"github.com/distillguard/distillguard/scoring"
)

//go:embed default.yaml
var defaultYAML []byte

// DefaultYAML returns the embedded default configuration text.
func DefaultYAML() []byte { return bytes.Clone(defaultYAML) }

// Config is the whole configuration.
type Config struct {
	Server     Server               `yaml:"server"`
	Processing Processing           `yaml:"processing"`
	Policies   map[string]PolicySet `yaml:"policies"`
	Routes     []Route              `yaml:"routes"`
	Scoring    scoring.Config       `yaml:"scoring"`
	Admin      Admin                `yaml:"admin"`
	Log        Log                  `yaml:"log"`
	Watermark  Watermark            `yaml:"watermark"`
	Evidence   Evidence             `yaml:"evidence"`

	// resolved at load time
	policies map[string]*resolvedSet
	routes   []resolvedRoute
	marks    *Marks       // watermark.key_file's keys (watermark.go); nil: none
	evidence *EvidenceKey // evidence.key_file's key (evidence.go); nil: none
}

// Server holds listener settings. Command-line flags override the addresses.
type Server struct {
	GRPCAddr  string `yaml:"grpc_addr"`
	AdminAddr string `yaml:"admin_addr"`
	TLS       TLS    `yaml:"tls"`
	// DrainGrace is how long in-flight streams may run after SIGTERM.
	DrainGrace time.Duration `yaml:"drain_grace"`
	// MaxConcurrentStreams bounds gRPC streams per connection (0: gRPC default).
	MaxConcurrentStreams uint32 `yaml:"max_concurrent_streams"`
}

// TLS configures the gRPC port. Cert and key enable TLS; a client CA also
// requires and verifies client certificates (mTLS).
type TLS struct {
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	ClientCAFile string `yaml:"client_ca_file"`
}

// Enabled reports whether TLS is configured.
func (t TLS) Enabled() bool { return t.CertFile != "" || t.KeyFile != "" }

// Processing holds the ext_proc protocol settings.
type Processing struct {
	// RequestBodyMode and ResponseBodyMode are the body modes configured on
	// the Envoy filter, used when Envoy does not send protocol_config in the
	// first message (older Envoys). One of NONE, STREAMED, BUFFERED,
	// BUFFERED_PARTIAL, FULL_DUPLEX_STREAMED.
	RequestBodyMode  string `yaml:"request_body_mode"`
	ResponseBodyMode string `yaml:"response_body_mode"`
	// ModeOverride answers response headers with a mode_override (STREAMED for
	// text/event-stream, BUFFERED for JSON, NONE for a response the policy
	// cannot change, so no body message is sent) when Envoy allows it.
	ModeOverride bool `yaml:"mode_override"`
	// IdentityEncoding removes accept-encoding from rewritten requests so the
	// upstream answers uncompressed; Envoy's compressor re-compresses for
	// the client.
	IdentityEncoding bool `yaml:"identity_encoding"`
	// MaxHeldBytes bounds the unfinished SSE event held between chunks; an
	// event longer than this is dropped (a comment takes its place) or,
	// with routes[].on_oversize: pass, released raw; later events are
	// rewritten either way (sse_event_oversize).
	MaxHeldBytes int `yaml:"max_held_bytes"`
	// MaxBodyBytes bounds a body buffered for rewriting (BUFFERED,
	// BUFFERED_PARTIAL, or a non-streamed body in a streamed mode). A
	// larger request is answered 413 on a guarded route, a larger JSON
	// response that the policy would change is refused (502, or a reset
	// once its headers are gone), unless the route says on_oversize: pass.
	MaxBodyBytes int `yaml:"max_body_bytes"`
	// MaxMessageBytes is the largest ext_proc message the gRPC server
	// receives (grpc.MaxRecvMsgSize). It is above MaxBodyBytes so that an
	// oversized BUFFERED body reaches the server and gets its 413 instead
	// of a stream reset; keep Envoy's buffer limits below it.
	MaxMessageBytes int `yaml:"max_message_bytes"`
	// MaxHeldTotalBytes bounds the body bytes held across all streams
	// (request bodies, held SSE, JSON bodies, gzip output). A request past
	// it is answered 503 with retry-after; a response the policy would
	// change fails closed.
	MaxHeldTotalBytes int64 `yaml:"max_held_total_bytes"`
	// MaxDecompressedBytes bounds the output of one gzip-encoded body.
	MaxDecompressedBytes int64 `yaml:"max_decompressed_bytes"`
	// MaxDecodedChunkBytes bounds what one gzip chunk may decode to: a
	// chunk that would expand beyond it is a decoding failure.
	MaxDecodedChunkBytes int `yaml:"max_decoded_chunk_bytes"`
	// MaxLogitBiasEntries bounds the entries of logit_bias (and of the
	// fields that act like it); a larger one is refused with a 400.
	MaxLogitBiasEntries int `yaml:"max_logit_bias_entries"`
	// MaxPromptBytes caps the prompt text handed to scoring.
	MaxPromptBytes int `yaml:"max_prompt_bytes"`
	// MaxClockSkew bounds how far request.time may be in the future before
	// the server clock is used instead.
	MaxClockSkew time.Duration `yaml:"max_clock_skew"`
	// Formats maps more request paths onto inference API formats
	// (formats.go); the built-in paths need no entry.
	Formats []FormatPath `yaml:"formats"`

	paths *mutate.PathTable // the built-in endpoints, built at load
}

// Admin configures the admin HTTP API.
type Admin struct {
	// Token is the bearer token mutating admin calls need. Empty disables
	// mutating calls.
	Token string `yaml:"token"`
	// TokenFile reads Token from a file instead (a mounted Kubernetes
	// Secret; surrounding whitespace dropped), again on every reload.
	TokenFile string `yaml:"token_file"`
	// tokenFromFile is what TokenFile read, so a resolved Config validates
	// again.
	tokenFromFile string
}

// resolveFile reads the token file into Token.
func (a *Admin) resolveFile() error {
	if a.TokenFile == "" {
		return nil
	}
	if a.Token != "" && a.Token != a.tokenFromFile {
		return errors.New("admin: set token or token_file, not both")
	}
	b, err := os.ReadFile(a.TokenFile)
	if err != nil {
		return fmt.Errorf("admin.token_file: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return fmt.Errorf("admin.token_file: %s is empty", a.TokenFile)
	}
	a.Token, a.tokenFromFile = t, t
	return nil
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // json or text
}

// PolicySet says what each verdict does.
type PolicySet struct {
	Allow    Tier `yaml:"allow"`
	Degrade  Tier `yaml:"degrade"`
	Throttle Tier `yaml:"throttle"`
	Block    Tier `yaml:"block"`
	// Probation is what allow becomes for an identity that has not earned
	// standing yet (scoring.standing). It only tightens allow: every
	// setting takes the stricter of the two (probation.go). Absent, the
	// set's identities in probation get allow.
	Probation *Tier `yaml:"probation"`
}

// Tier is one verdict's action: rewrite (output and request) or reject.
type Tier struct {
	Output  OutputPolicy  `yaml:"output"`
	Request RequestPolicy `yaml:"request"`
	Reject  *Reject       `yaml:"reject"`
}

// OutputPolicy is the YAML form of mutate.OutputPolicy; an absent field
// leaves that aspect untouched.
type OutputPolicy struct {
	StripLogprobs     bool    `yaml:"strip_logprobs"`
	RoundDecimals     *int    `yaml:"round_decimals"`
	MaxAlternatives   *int    `yaml:"max_alternatives"`
	Perturb           float64 `yaml:"perturb"`
	EmbeddingDecimals *int    `yaml:"embedding_decimals"`
	// Watermark marks the tier's generated text and, where logprobs are
	// kept, its alternatives with the key of watermark.key_file.
	Watermark bool `yaml:"watermark"`
}

// RequestPolicy is the YAML form of mutate.RequestPolicy.
type RequestPolicy struct {
	MaxTopLogprobs            *int `yaml:"max_top_logprobs"`
	MaxN                      int  `yaml:"max_n"`
	DropLogitBiasWithLogprobs bool `yaml:"drop_logit_bias_with_logprobs"`
	DropLogitBias             bool `yaml:"drop_logit_bias"`
	StripLogprobs             bool `yaml:"strip_logprobs"`
}

// Reject answers the request immediately with an OpenAI-style error.
type Reject struct {
	Status     int           `yaml:"status"`
	RetryAfter time.Duration `yaml:"retry_after"`
	Message    string        `yaml:"message"`
	Type       string        `yaml:"type"`
	Code       string        `yaml:"code"`
}

// Route picks a named policy set by path prefix and/or model. Routes are
// tried in order; the first whose every given matcher matches wins. A route
// with no matcher matches everything.
type Route struct {
	PathPrefix string `yaml:"path_prefix"`
	// Model matches the request's model exactly, or by prefix when it ends
	// in '*'.
	Model  string `yaml:"model"`
	Policy string `yaml:"policy"`
	// Shadow scores and tags the route's requests (metadata, metrics,
	// audit) but acts as for allow, whatever scoring.shadow says: a route
	// can be observed before it is enforced.
	Shadow bool `yaml:"shadow"`
	// OnOversize is what happens to a body beyond the processing bounds
	// (max_body_bytes, max_held_bytes): fail_closed (the default) refuses
	// it (413 for a request; a dropped SSE event; a refused JSON
	// response), pass lets it through unrewritten (counted).
	OnOversize string `yaml:"on_oversize"`
	// Identity overrides scoring.identity for the route's requests: the
	// credential its upstream bills (e.g. ["header:x-api-key",
	// "client_ip"] in front of an API that authenticates with x-api-key).
	Identity []string `yaml:"identity"`
}

// On-oversize choices (Route.OnOversize).
const (
	OversizeFailClosed = "fail_closed"
	OversizePass       = "pass"
)

// Action is the resolved answer for one (route, model, verdict).
type Action struct {
	Verdict scoring.Verdict
	Policy  string // name of the policy set
	Output  mutate.OutputPolicy
	Request mutate.RequestPolicy
	Reject  *Reject // non-nil: answer immediately, do not forward
	// Shadow: the route is in shadow mode (the caller resolves the allow
	// tier instead of enforcing the verdict).
	Shadow bool
	// Probation: the set's probation tier, resolved in place of allow for
	// an identity without standing (ResolveStanding).
	Probation bool
	// Guarded: the route's tiers act on requests (a request policy, a
	// reject, or outputs that differ by verdict), so its request bodies
	// must be understood completely or refused.
	Guarded bool
	// OversizePass: the route lets oversized bodies through (on_oversize:
	// pass).
	OversizePass bool
	// Identity is the route's identity sources (nil: scoring.identity).
	Identity []string
}

// resolvedSet holds a set's four verdict tiers, then the same four for an
// identity in probation (probationSlot + verdict): each rewriting tier
// tightened by the probation tier, each rejecting tier as it is.
type resolvedSet [8]Action

type resolvedRoute struct {
	Route
	set *resolvedSet
}

// action is the route's action in slot (a verdict, or probationSlot plus
// a verdict).
func (r *resolvedRoute) action(slot int, globalShadow bool) Action {
	a := r.set[slot]
	a.Shadow = r.Shadow
	a.Guarded = r.set.guarded(r.Shadow || globalShadow)
	a.OversizePass = r.OnOversize == OversizePass
	a.Identity = r.Identity
	return a
}

// Resolve returns the action for a request on path for model under verdict.
// It never fails: a Config that loaded has a "default" policy set.
func (c *Config) Resolve(path, model string, v scoring.Verdict) Action {
	if v < scoring.Allow || v > scoring.Block {
		v = scoring.Block
	}
	return c.resolveSlot(path, model, int(v))
}

// resolveSlot returns the action in slot of the set the route resolves to.
func (c *Config) resolveSlot(path, model string, slot int) Action {
	for i := range c.routes {
		r := &c.routes[i]
		if r.PathPrefix != "" && !strings.HasPrefix(path, r.PathPrefix) {
			continue
		}
		if r.Model != "" && !matchModel(r.Model, model) {
			continue
		}
		return r.action(slot, c.Scoring.Shadow)
	}
	return c.defaultRoute().action(slot, c.Scoring.Shadow)
}

// defaultRoute is what a request no route matches resolves to.
func (c *Config) defaultRoute() *resolvedRoute {
	return &resolvedRoute{Route: Route{Policy: "default"}, set: c.policies["default"]}
}

func matchModel(pattern, model string) bool {
	if p, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(model, p)
	}
	return pattern == model
}

// Default returns the embedded default configuration.
func Default() *Config {
	c, err := Parse(defaultYAML)
	if err != nil {
		// The embedded default is tested; failing here is a build defect.
		panic("config: embedded default is invalid: " + err.Error())
	}
	return c
}

// Load reads and validates a configuration file. The file is layered over
// the embedded default: sections it omits keep their default values.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse decodes YAML over the embedded default, strictly, and validates it.
//
// Sections a file leaves out keep their defaults, and so do policy sets,
// tier by tier and field by field: the file's policies.default is layered
// over the embedded default set, and every other set over that effective
// default (see mergePolicies). Routes replace the default routes
// wholesale.
func Parse(b []byte) (*Config, error) {
	c := &Config{}
	if err := decodeStrict(defaultYAML, c); err != nil {
		return nil, fmt.Errorf("embedded default: %w", err)
	}
	c.Policies = nil
	// Strict decoding first: unknown keys anywhere, policies included, are
	// errors that name their line.
	if err := decodeStrict(b, c); err != nil {
		return nil, err
	}
	sets, err := mergePolicies(defaultYAML, b)
	if err != nil {
		return nil, err
	}
	c.Policies = sets
	// The tiers the file itself asks to watermark (resolveWatermark).
	var asked []string
	if !bytes.Equal(b, defaultYAML) {
		var own Config
		if err := decodeStrict(b, &own); err != nil {
			return nil, err
		}
		asked = watermarkTiers(own.Policies)
	}
	if err := errors.Join(c.resolve(), c.resolveWatermark(asked), c.resolveEvidence()); err != nil {
		return nil, err
	}
	return c, nil
}

func decodeStrict(b []byte, out *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(out); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // empty document: nothing to layer
		}
		return err
	}
	return nil
}

// validBodyMode reports whether m names an ext_proc body send mode
// (envoy.extensions.filters.http.ext_proc.v3.ProcessingMode.BodySendMode).
func validBodyMode(m string) bool {
	switch m {
	case "NONE", "STREAMED", "BUFFERED", "BUFFERED_PARTIAL", "FULL_DUPLEX_STREAMED":
		return true
	}
	return false
}

func (c *Config) resolve() error {
	var errs []error
	p := &c.Processing
	if !validBodyMode(p.RequestBodyMode) {
		errs = append(errs, fmt.Errorf("processing.request_body_mode: %q is not one of NONE, STREAMED, BUFFERED, BUFFERED_PARTIAL, FULL_DUPLEX_STREAMED", p.RequestBodyMode))
	}
	if !validBodyMode(p.ResponseBodyMode) {
		errs = append(errs, fmt.Errorf("processing.response_body_mode: %q is not one of NONE, STREAMED, BUFFERED, BUFFERED_PARTIAL, FULL_DUPLEX_STREAMED", p.ResponseBodyMode))
	}
	inRange := func(key string, v, lo, hi int64) {
		if v < lo || v > hi {
			errs = append(errs, fmt.Errorf("%s: %d is not in [%d, %d]", key, v, lo, hi))
		}
	}
	durRange := func(key string, d, hi time.Duration) {
		if d < 0 || d > hi {
			errs = append(errs, fmt.Errorf("%s: %v is not in [0, %v]", key, d, hi))
		}
	}
	inRange("processing.max_body_bytes", int64(p.MaxBodyBytes), 1, maxBodyLimit)
	inRange("processing.max_held_bytes", int64(p.MaxHeldBytes), 1, int64(max(p.MaxBodyBytes, 1)))
	inRange("processing.max_message_bytes", int64(p.MaxMessageBytes), int64(p.MaxBodyBytes)+messageSlack, maxMessageLimit)
	inRange("processing.max_held_total_bytes", p.MaxHeldTotalBytes, int64(p.MaxBodyBytes), 1<<40)
	inRange("processing.max_decompressed_bytes", p.MaxDecompressedBytes, 1, 4<<30)
	inRange("processing.max_decoded_chunk_bytes", int64(p.MaxDecodedChunkBytes), 64<<10, max(p.MaxDecompressedBytes, 64<<10))
	inRange("processing.max_logit_bias_entries", int64(p.MaxLogitBiasEntries), 1, 1<<20)
	inRange("processing.max_prompt_bytes", int64(p.MaxPromptBytes), 1, 1<<20)
	durRange("processing.max_clock_skew", p.MaxClockSkew, 24*time.Hour)
	errs = append(errs, p.resolveFormats()...)
	durRange("server.drain_grace", c.Server.DrainGrace, time.Hour)
	if err := checkListenAddr(c.Server.GRPCAddr); err != nil {
		errs = append(errs, fmt.Errorf("server.grpc_addr: %w", err))
	}
	t := c.Server.TLS
	if (t.CertFile == "") != (t.KeyFile == "") {
		errs = append(errs, errors.New("server.tls: cert_file and key_file go together"))
	}
	if t.ClientCAFile != "" && t.CertFile == "" {
		errs = append(errs, errors.New("server.tls.client_ca_file needs cert_file and key_file"))
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level: %q is not one of debug, info, warn, error", c.Log.Level))
	}
	switch c.Log.Format {
	case "json", "text":
	default:
		errs = append(errs, fmt.Errorf("log.format: %q is not json or text", c.Log.Format))
	}
	// Secrets kept in files (mounted Kubernetes Secrets) are read here,
	// once per load: a SIGHUP reload reads them again, and a changed
	// secret shows in RestartRequired as scoring.secret.
	if err := c.Admin.resolveFile(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Scoring.ResolveFiles(); err != nil {
		errs = append(errs, fmt.Errorf("scoring: %w", err))
	} else if err := c.Scoring.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("scoring: %w", err))
	}

	if _, ok := c.Policies["default"]; !ok {
		errs = append(errs, errors.New(`policies: a policy set named "default" is required`))
	}
	names := make([]string, 0, len(c.Policies))
	for n := range c.Policies {
		names = append(names, n)
	}
	sort.Strings(names)
	c.policies = make(map[string]*resolvedSet, len(names))
	for _, name := range names {
		set := c.Policies[name]
		rs := &resolvedSet{}
		for v, tier := range []Tier{set.Allow, set.Degrade, set.Throttle, set.Block} {
			a, err := tier.resolve(scoring.Verdict(v), name)
			if err != nil {
				errs = append(errs, fmt.Errorf("policies.%s.%s: %w", name, scoring.Verdict(v), err))
			}
			rs[v] = a
		}
		for v := scoring.Allow; v <= scoring.Block; v++ {
			p, err := resolveProbation(set.Probation, rs[v], name)
			if err != nil && v == scoring.Allow {
				errs = append(errs, fmt.Errorf("policies.%s.probation: %w", name, err))
			}
			rs[probationSlot+int(v)] = p
		}
		c.policies[name] = rs
	}
	c.routes = c.routes[:0]
	for i, r := range c.Routes {
		set, ok := c.policies[r.Policy]
		if !ok {
			errs = append(errs, fmt.Errorf("routes[%d]: policy %q is not defined under policies", i, r.Policy))
			continue
		}
		if r.PathPrefix != "" && !strings.HasPrefix(r.PathPrefix, "/") {
			errs = append(errs, fmt.Errorf("routes[%d].path_prefix: %q must start with /", i, r.PathPrefix))
		}
		switch r.OnOversize {
		case "", OversizeFailClosed, OversizePass:
		default:
			errs = append(errs, fmt.Errorf("routes[%d].on_oversize: %q is not fail_closed or pass", i, r.OnOversize))
		}
		if r.Identity != nil {
			if err := scoring.CheckIdentitySources(r.Identity); err != nil {
				errs = append(errs, fmt.Errorf("routes[%d].identity: %w", i, err))
			}
		}
		c.routes = append(c.routes, resolvedRoute{Route: r, set: set})
	}
	return errors.Join(errs...)
}

func (t Tier) resolve(v scoring.Verdict, name string) (Action, error) {
	a := Action{Verdict: v, Policy: name}
	o := t.Output
	a.Output = mutate.OutputPolicy{
		StripLogprobs:     o.StripLogprobs,
		RoundDecimals:     intOr(o.RoundDecimals, -1),
		MaxAlternatives:   intOr(o.MaxAlternatives, -1),
		Perturb:           o.Perturb,
		EmbeddingDecimals: intOr(o.EmbeddingDecimals, -1),
		Watermark:         o.Watermark,
	}
	r := t.Request
	a.Request = mutate.RequestPolicy{
		MaxTopLogprobs:            intOr(r.MaxTopLogprobs, -1),
		MaxN:                      r.MaxN,
		DropLogitBiasWithLogprobs: r.DropLogitBiasWithLogprobs,
		DropLogitBias:             r.DropLogitBias,
		StripLogprobs:             r.StripLogprobs,
	}
	var errs []error
	// A negative count or decimals would read as "leave untouched" in
	// mutate and switch the rewrite off: every set value is range-checked.
	optRange := func(key string, p *int, lo, hi int) {
		if p != nil && (*p < lo || *p > hi) {
			errs = append(errs, fmt.Errorf("%s: %d is not in [%d, %d]", key, *p, lo, hi))
		}
	}
	optRange("output.round_decimals", o.RoundDecimals, 0, 12)
	optRange("output.embedding_decimals", o.EmbeddingDecimals, 0, 12)
	optRange("output.max_alternatives", o.MaxAlternatives, 0, 1000)
	optRange("request.max_top_logprobs", r.MaxTopLogprobs, 0, 1000)
	maxN := r.MaxN
	optRange("request.max_n", &maxN, 0, 1000)
	if !(o.Perturb >= 0 && o.Perturb <= 10) { // also NaN
		errs = append(errs, fmt.Errorf("output.perturb: %g is not in [0, 10]", o.Perturb))
	}
	if t.Reject != nil {
		rj := *t.Reject
		if rj.Status < 400 || rj.Status > 599 {
			errs = append(errs, fmt.Errorf("reject.status %d must be a 4xx or 5xx code", rj.Status))
		}
		if rj.RetryAfter < 0 || rj.RetryAfter > 24*time.Hour {
			errs = append(errs, fmt.Errorf("reject.retry_after: %v is not in [0, 24h]", rj.RetryAfter))
		}
		if rj.Message == "" {
			rj.Message = defaultMessage(rj.Status)
		}
		if rj.Type == "" {
			rj.Type = defaultType(rj.Status)
		}
		a.Reject = &rj
	}
	return a, errors.Join(errs...)
}

// Bounds of the processing sizes: a body above 1 GiB is not one an
// inference API sends, and gRPC messages are bounded by int32 framing.
const (
	maxBodyLimit    = 1 << 30
	maxMessageLimit = 2<<30 - 1
	// messageSlack is the room above max_body_bytes a BUFFERED body
	// message needs for its headers and framing.
	messageSlack = 64 << 10
)

// checkListenAddr accepts host:port and unix:PATH (unix:///abs/path).
func checkListenAddr(a string) error {
	if a == "" {
		return nil // filled in from the flag
	}
	if p, ok := strings.CutPrefix(a, "unix:"); ok {
		p = strings.TrimPrefix(p, "//")
		if p == "" {
			return errors.New("unix: needs a socket path")
		}
		return nil
	}
	if _, _, err := net.SplitHostPort(a); err != nil {
		return err
	}
	return nil
}

func defaultMessage(status int) string {
	if status == 429 {
		return "Too many requests from this client; retry later."
	}
	return "This request was refused by the gateway's abuse policy."
}

func defaultType(status int) string {
	if status == 429 {
		return "rate_limit_error"
	}
	return "permission_error"
}

func intOr(p *int, d int) int {
	if p == nil {
		return d
	}
	return *p
}
