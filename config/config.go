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

	// resolved at load time
	policies map[string]*resolvedSet
	routes   []resolvedRoute
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
	// text/event-stream, BUFFERED for JSON) when Envoy allows it.
	ModeOverride bool `yaml:"mode_override"`
	// IdentityEncoding removes accept-encoding from rewritten requests so the
	// upstream answers uncompressed; Envoy's compressor re-compresses for
	// the client.
	IdentityEncoding bool `yaml:"identity_encoding"`
	// MaxHeldBytes bounds the unfinished SSE event held between chunks; past
	// it the stream fails open (passes through raw) and is counted.
	MaxHeldBytes int `yaml:"max_held_bytes"`
	// MaxBodyBytes bounds a body buffered for rewriting (BUFFERED,
	// BUFFERED_PARTIAL, or a non-streamed body in a streamed mode); larger
	// bodies pass through untouched and are counted.
	MaxBodyBytes int `yaml:"max_body_bytes"`
	// MaxDecompressedBytes bounds the output of one gzip-encoded response.
	MaxDecompressedBytes int64 `yaml:"max_decompressed_bytes"`
	// MaxPromptBytes caps the prompt text handed to scoring.
	MaxPromptBytes int `yaml:"max_prompt_bytes"`
	// MaxClockSkew bounds how far request.time may be in the future before
	// the server clock is used instead.
	MaxClockSkew time.Duration `yaml:"max_clock_skew"`
}

// Admin configures the admin HTTP API.
type Admin struct {
	// Token is the bearer token mutating admin calls need. Empty disables
	// mutating calls.
	Token string `yaml:"token"`
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
}

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
}

// resolvedSet holds a set's four verdict tiers, then its probation tier
// (probationSlot).
type resolvedSet [5]Action

type resolvedRoute struct {
	Route
	set *resolvedSet
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
		a := r.set[slot]
		a.Shadow = r.Shadow
		return a
	}
	return c.policies["default"][slot]
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
func Parse(b []byte) (*Config, error) {
	c := &Config{}
	if err := decodeStrict(defaultYAML, c); err != nil {
		return nil, fmt.Errorf("embedded default: %w", err)
	}
	// A file that defines policies replaces the default sets it names and
	// keeps the others; routes replace the default routes wholesale.
	defaults := c.Policies
	c.Policies = nil
	if err := decodeStrict(b, c); err != nil {
		return nil, err
	}
	if c.Policies == nil {
		c.Policies = map[string]PolicySet{}
	}
	for name, set := range defaults {
		if _, ok := c.Policies[name]; !ok {
			c.Policies[name] = set
		}
	}
	if err := c.resolve(); err != nil {
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
	if p.MaxHeldBytes <= 0 {
		errs = append(errs, errors.New("processing.max_held_bytes must be positive"))
	}
	if p.MaxBodyBytes <= 0 {
		errs = append(errs, errors.New("processing.max_body_bytes must be positive"))
	}
	if p.MaxDecompressedBytes <= 0 {
		errs = append(errs, errors.New("processing.max_decompressed_bytes must be positive"))
	}
	if p.MaxPromptBytes <= 0 {
		errs = append(errs, errors.New("processing.max_prompt_bytes must be positive"))
	}
	if p.MaxClockSkew < 0 {
		errs = append(errs, errors.New("processing.max_clock_skew must not be negative"))
	}
	if c.Server.DrainGrace < 0 {
		errs = append(errs, errors.New("server.drain_grace must not be negative"))
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
	if err := c.Scoring.Validate(); err != nil {
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
		p, err := resolveProbation(set.Probation, rs[scoring.Allow], name)
		if err != nil {
			errs = append(errs, fmt.Errorf("policies.%s.probation: %w", name, err))
		}
		rs[probationSlot] = p
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
	if a.Output.RoundDecimals > 12 {
		errs = append(errs, fmt.Errorf("output.round_decimals %d is above 12", a.Output.RoundDecimals))
	}
	if a.Output.EmbeddingDecimals > 12 {
		errs = append(errs, fmt.Errorf("output.embedding_decimals %d is above 12", a.Output.EmbeddingDecimals))
	}
	if o.Perturb < 0 || o.Perturb > 10 {
		errs = append(errs, fmt.Errorf("output.perturb %g must be in [0, 10]", o.Perturb))
	}
	if r.MaxN < 0 {
		errs = append(errs, errors.New("request.max_n must not be negative"))
	}
	if t.Reject != nil {
		rj := *t.Reject
		if rj.Status < 400 || rj.Status > 599 {
			errs = append(errs, fmt.Errorf("reject.status %d must be a 4xx or 5xx code", rj.Status))
		}
		if rj.RetryAfter < 0 {
			errs = append(errs, errors.New("reject.retry_after must not be negative"))
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
