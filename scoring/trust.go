package scoring

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Trusted is an identity or tenant the operator vouches for: its own
// thresholds, or allow-always. A request matches when any of the given
// matchers does; the first matching entry wins.
type Trusted struct {
	// Name labels the entry in decisions, audit lines and the admin API.
	Name string `yaml:"name"`
	// Sessions are session ids as the admin API and audit trail show them
	// (32 hex digits; they follow Config.Secret).
	Sessions []string `yaml:"sessions"`
	// Header and Values match a request header's exact value (for example
	// a tenant header that the gateway sets after authentication; never
	// one a client can set freely).
	Header string   `yaml:"header"`
	Values []string `yaml:"values"`
	// Claim and ClaimValues match a claim of the JWT payload that Envoy's
	// jwt_authn filter verified and forwards in Config.JWTPayloadHeader
	// (forward_payload_header,
	// https://www.envoyproxy.io/docs/envoy/latest/api-v3/extensions/filters/http/jwt_authn/v3/config.proto).
	// The payload is read, not verified: distillguard relies on jwt_authn
	// having verified the token, and on Envoy replacing any such header a
	// client sent. A dotted name reads a nested claim ("org.id"); an array
	// claim matches when any element does.
	Claim       string   `yaml:"claim"`
	ClaimValues []string `yaml:"claim_values"`
	// AllowAlways answers Allow whatever the score (the session is still
	// scored, shown in the admin API and never spreads a flag to its
	// clusters).
	AllowAlways bool `yaml:"allow_always"`
	// Thresholds replace Config.Thresholds for this identity.
	Thresholds *Thresholds `yaml:"thresholds"`
}

// trusted is a resolved entry.
type trusted struct {
	name        string
	sessions    map[[16]byte]bool
	header      string
	values      map[string]bool
	claim       []string
	claimValues map[string]bool
	allowAlways bool
	thresholds  *Thresholds
}

type trustTable struct {
	entries       []trusted
	payloadHeader string
	claims        bool // some entry matches on a claim
}

func validThresholds(t Thresholds) error {
	if !(0 < t.Degrade && t.Degrade < t.Throttle && t.Throttle < t.Block && t.Block <= 1) {
		return fmt.Errorf("thresholds must satisfy 0 < degrade < throttle < block <= 1 (got %g, %g, %g)", t.Degrade, t.Throttle, t.Block)
	}
	if t.Hysteresis < 0 || t.Hysteresis >= t.Degrade {
		return fmt.Errorf("thresholds.hysteresis %g must be in [0, degrade)", t.Hysteresis)
	}
	return nil
}

func set(xs []string) map[string]bool {
	m := make(map[string]bool, len(xs))
	for _, x := range xs {
		m[x] = true
	}
	return m
}

func newTrustTable(cfg []Trusted, payloadHeader string) (*trustTable, error) {
	t := &trustTable{payloadHeader: strings.ToLower(payloadHeader)}
	var errs []error
	for i, c := range cfg {
		e := trusted{name: c.Name, header: strings.ToLower(c.Header), values: set(c.Values), claimValues: set(c.ClaimValues),
			allowAlways: c.AllowAlways}
		if c.Name == "" {
			errs = append(errs, fmt.Errorf("trusted[%d]: name is required", i))
		}
		if len(c.Sessions) == 0 && c.Header == "" && c.Claim == "" {
			errs = append(errs, fmt.Errorf("trusted[%d] (%s): give sessions, header and values, or claim and claim_values", i, c.Name))
		}
		if (c.Header == "") != (len(c.Values) == 0) {
			errs = append(errs, fmt.Errorf("trusted[%d] (%s): header and values go together", i, c.Name))
		}
		if (c.Claim == "") != (len(c.ClaimValues) == 0) {
			errs = append(errs, fmt.Errorf("trusted[%d] (%s): claim and claim_values go together", i, c.Name))
		}
		if c.Claim != "" {
			if payloadHeader == "" {
				errs = append(errs, fmt.Errorf("trusted[%d] (%s): a claim matcher needs jwt_payload_header", i, c.Name))
			}
			e.claim = strings.Split(c.Claim, ".")
			t.claims = true
		}
		if len(c.Sessions) > 0 {
			e.sessions = make(map[[16]byte]bool, len(c.Sessions))
			for _, s := range c.Sessions {
				id, err := parseSessionID(strings.ToLower(strings.TrimSpace(s)))
				if err != nil {
					errs = append(errs, fmt.Errorf("trusted[%d] (%s): session %q: %v", i, c.Name, s, err))
					continue
				}
				e.sessions[id] = true
			}
		}
		if c.Thresholds != nil {
			if err := validThresholds(*c.Thresholds); err != nil {
				errs = append(errs, fmt.Errorf("trusted[%d] (%s): %v", i, c.Name, err))
			}
			th := *c.Thresholds
			e.thresholds = &th
		}
		t.entries = append(t.entries, e)
	}
	return t, errors.Join(errs...)
}

// match returns the first entry r or its session id matches, or nil.
func (t *trustTable) match(r *Request, id [16]byte) *trusted {
	if len(t.entries) == 0 {
		return nil
	}
	var claims map[string]any
	if t.claims {
		claims = jwtPayload(header(r, t.payloadHeader))
	}
	for i := range t.entries {
		e := &t.entries[i]
		if e.sessions[id] {
			return e
		}
		if e.header != "" {
			if v := header(r, e.header); v != "" && e.values[v] {
				return e
			}
		}
		if e.claim != nil && claims != nil && claimMatches(claims, e.claim, e.claimValues) {
			return e
		}
	}
	return nil
}

// jwtPayload decodes the JSON object of a forwarded JWT payload: base64url
// without padding (RFC 7515 section 2), padding tolerated; a whole
// header.payload.signature token is accepted too. Anything else is nil.
func jwtPayload(v string) map[string]any {
	if v == "" || len(v) > 16<<10 {
		return nil
	}
	if parts := strings.Split(v, "."); len(parts) == 3 {
		v = parts[1]
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(v, "="))
	if err != nil {
		return nil
	}
	var m map[string]any
	if json.Unmarshal(b, &m) != nil {
		return nil
	}
	return m
}

func claimMatches(claims map[string]any, path []string, want map[string]bool) bool {
	var cur any = claims
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return false
		}
		cur = m[p]
	}
	switch x := cur.(type) {
	case string:
		return want[x]
	case float64:
		return want[strconv.FormatFloat(x, 'f', -1, 64)]
	case bool:
		return want[strconv.FormatBool(x)]
	case []any:
		for _, el := range x {
			if s, ok := el.(string); ok && want[s] {
				return true
			}
		}
	}
	return false
}
