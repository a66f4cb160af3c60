package config

import (
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"

	"github.com/distillguard/distillguard/scoring"
)

// PolicyRow is what one verdict does on one route, in words.
type PolicyRow struct {
	Route   string // "routes[0] path_prefix=/v1/embeddings model=*" or "default"
	Policy  string // the policy set
	Verdict string
	Request string // the request rewrite, or "-"
	Output  string // the response rewrite, or "-"
	Reject  string // the immediate answer, or "-"
	Notes   string // guarded, shadow, on_oversize, identity
}

// PolicyTable lists the effective action of every route (in order, then
// the default) for every verdict: what an operator reads to see what each
// tier does.
func (c *Config) PolicyTable() []PolicyRow {
	var rows []PolicyRow
	each := func(label string, r *resolvedRoute) {
		for slot := range len(r.set) {
			a := r.action(slot, c.Scoring.Shadow)
			name := scoring.Verdict(slot % probationSlot).String()
			if slot >= probationSlot {
				if !a.Probation {
					continue // a rejecting tier: the same in probation
				}
				name += " (probation)"
			}
			row := PolicyRow{Route: label, Policy: r.Policy, Verdict: name,
				Request: describeRequest(a), Output: describeOutput(a), Reject: "-"}
			if a.Reject != nil {
				row.Request, row.Output = "-", "-"
				row.Reject = fmt.Sprintf("%d %s", a.Reject.Status, a.Reject.Type)
				if a.Reject.Status == 429 && a.Reject.RetryAfter > 0 {
					row.Reject += fmt.Sprintf(", retry-after %ds", int64(math.Ceil(a.Reject.RetryAfter.Seconds())))
				}
			}
			var notes []string
			if a.Guarded {
				notes = append(notes, "guarded")
			} else {
				notes = append(notes, "unguarded")
			}
			if a.Shadow || c.Scoring.Shadow {
				notes = append(notes, "shadow (acts as allow)")
			}
			if a.OversizePass {
				notes = append(notes, "on_oversize: pass")
			}
			if a.Identity != nil {
				notes = append(notes, "identity: "+strings.Join(a.Identity, ","))
			}
			row.Notes = strings.Join(notes, "; ")
			rows = append(rows, row)
		}
	}
	for i := range c.routes {
		r := &c.routes[i]
		label := fmt.Sprintf("routes[%d]", i)
		if r.PathPrefix != "" {
			label += " path_prefix=" + r.PathPrefix
		}
		if r.Model != "" {
			label += " model=" + r.Model
		}
		if r.PathPrefix == "" && r.Model == "" {
			label += " (everything)"
		}
		each(label, r)
	}
	each("default (no route matched)", c.defaultRoute())
	return rows
}

func describeRequest(a Action) string {
	r := a.Request
	var parts []string
	if r.StripLogprobs {
		parts = append(parts, "logprobs requests removed")
	} else if r.MaxTopLogprobs >= 0 {
		parts = append(parts, fmt.Sprintf("top_logprobs <= %d", r.MaxTopLogprobs))
	}
	if r.MaxN > 0 {
		parts = append(parts, fmt.Sprintf("n <= %d", r.MaxN))
	}
	switch {
	case r.DropLogitBias:
		parts = append(parts, "logit_bias removed")
	case r.DropLogitBiasWithLogprobs:
		parts = append(parts, "logit_bias removed with logprobs")
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

func describeOutput(a Action) string {
	o := a.Output
	var parts []string
	if o.StripLogprobs {
		parts = append(parts, "logprobs stripped")
	}
	if o.Perturb > 0 {
		parts = append(parts, fmt.Sprintf("logprobs perturbed by %g", o.Perturb))
	}
	if o.RoundDecimals >= 0 {
		parts = append(parts, fmt.Sprintf("logprobs rounded to %d decimals", o.RoundDecimals))
	}
	if o.MaxAlternatives >= 0 {
		parts = append(parts, fmt.Sprintf("<= %d alternatives", o.MaxAlternatives))
	}
	if o.EmbeddingDecimals >= 0 {
		parts = append(parts, fmt.Sprintf("embeddings rounded to %d decimals", o.EmbeddingDecimals))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

// WritePolicyTable writes PolicyTable as aligned columns.
func (c *Config) WritePolicyTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ROUTE\tPOLICY\tVERDICT\tREQUEST\tRESPONSE\tREJECT\tNOTES")
	last := ""
	for _, r := range c.PolicyTable() {
		route, policy := r.Route, r.Policy
		if route == last {
			route, policy = "", ""
		}
		last = r.Route
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", route, policy, r.Verdict, r.Request, r.Output, r.Reject, r.Notes)
	}
	return tw.Flush()
}
