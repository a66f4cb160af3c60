package config

import (
	"slices"
	"strings"
)

// guarded reports whether a set acts on requests: a tier that can be
// enforced (only allow in shadow mode) has a request policy or a reject,
// or the enforceable tiers rewrite outputs differently, so that the
// verdict, and with it everything the scorer reads in the body, decides
// what the client gets. On such a route a request body is understood
// completely or refused: a body the scorer cannot read but the upstream
// can would otherwise choose its own tier.
func (s *resolvedSet) guarded(shadow bool) bool {
	tiers := s[:]
	if shadow {
		tiers = s[:1]
	}
	for _, a := range tiers {
		if a.Reject != nil || !a.Request.IsNoop() || a.Output != tiers[0].Output {
			return true
		}
	}
	return false
}

// RouteView is what is known of a request's route from its path alone,
// before the body names the model (routes may match on the model).
type RouteView struct {
	// Guarded: some route the request may resolve to is guarded.
	Guarded bool
	// OversizePass: every route it may resolve to says on_oversize: pass.
	OversizePass bool
	// Identity are the identity sources of the routes it may resolve to
	// that set their own, in route order, without repeats.
	Identity []string
	// Rewrites: some tier of some route it may resolve to rewrites
	// responses.
	Rewrites bool
}

// View returns the RouteView of path (normalized as for Resolve).
func (c *Config) View(path string) RouteView {
	v := RouteView{OversizePass: true}
	add := func(r *resolvedRoute) {
		v.Guarded = v.Guarded || r.set.guarded(r.Shadow || c.Scoring.Shadow)
		v.OversizePass = v.OversizePass && r.OnOversize == OversizePass
		for _, s := range r.Identity {
			if !slices.Contains(v.Identity, s) {
				v.Identity = append(v.Identity, s)
			}
		}
		for _, a := range r.set {
			if a.Reject == nil && !a.Output.IsNoop() {
				v.Rewrites = true
			}
		}
	}
	for i := range c.routes {
		r := &c.routes[i]
		if r.PathPrefix != "" && !strings.HasPrefix(path, r.PathPrefix) {
			continue
		}
		add(r)
		if r.Model == "" {
			return v // matches whatever the model: the routes after it never apply
		}
	}
	add(c.defaultRoute())
	return v
}
