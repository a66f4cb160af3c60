package prometheus

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

type rule struct {
	name, expr          string
	alert               bool
	labels, annotations map[string]string
}

type ruleSet struct {
	alerts, records []rule
}

// loadRules parses the rules file with Prometheus's own loader (strict YAML,
// every expression parsed, every template checked).
func loadRules(t *testing.T) ruleSet {
	t.Helper()
	rgs, errs := rulefmt.ParseFile(rulesFile, false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
	if len(errs) > 0 {
		t.Fatalf("%s: %v", rulesFile, errs)
	}
	var rs ruleSet
	for _, g := range rgs.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				rs.alerts = append(rs.alerts, rule{name: r.Alert, expr: r.Expr, alert: true, labels: r.Labels, annotations: r.Annotations})
			} else {
				rs.records = append(rs.records, rule{name: r.Record, expr: r.Expr})
			}
		}
	}
	if len(rs.alerts) < 10 {
		t.Fatalf("only %d alerts parsed", len(rs.alerts))
	}
	return rs
}

// targetLabels are attached by Prometheus's Kubernetes service discovery
// and prometheus-operator, not by the server.
var targetLabels = []string{"namespace", "pod", "job", "instance", "service", "container", "endpoint"}

// knownValues are label values the server emits only on rare paths the
// traffic below does not take, with the source that defines them.
var knownValues = map[string][]string{
	// extproc/metrics.go allReasons; scoring/metrics.go badReasons.
	// extproc/refuse.go and mutate/strict.go refusal reasons.
	"reason": {"invalid_json", "body_too_large", "gzip_error", "unknown_content_type",
		"unknown_content_encoding", "bad_request_json", "request_encoded", "clock_skew", "bad_request_time",
		"scorer_panic", "partial_body", "held_at_trailers", "held_at_end", "non_2xx", "no_decision",
		"sse_event_oversize", "over_budget", "sse_event_unreadable",
		"invalid_utf8", "binary", "truncated", "clock_backwards", "no_identity", "panic", "state_dropped",
		"encoding", "non_finite", "duplicate_member", "depth", "lone_surrogate", "field_type", "field_size",
		"too_large", "media_type", "content_encoding", "duplicate_credential", "unattributable", "overloaded",
		"body_not_sent", "response_too_large", "response_encoding", "response_invalid_json"},
	// extproc/metrics.go protocol kinds and message kinds.
	"kind": {"empty_request", "out_of_order", "after_end", "request_headers", "request_body", "request_trailers",
		"response_headers", "response_body", "response_trailers", "unknown"},
}

// exported indexes the scraped families: every series name a query may use
// (histograms also as _bucket, _sum, _count) with the label names and values
// seen on it.
type exported map[string]map[string]map[string]bool

func index(fams map[string]*dto.MetricFamily) exported {
	ex := exported{}
	add := func(name string, m *dto.Metric, extra ...string) {
		ls := ex[name]
		if ls == nil {
			ls = map[string]map[string]bool{}
			ex[name] = ls
		}
		for _, l := range m.GetLabel() {
			if ls[l.GetName()] == nil {
				ls[l.GetName()] = map[string]bool{}
			}
			ls[l.GetName()][l.GetValue()] = true
		}
		for _, e := range extra {
			if ls[e] == nil {
				ls[e] = map[string]bool{}
			}
		}
	}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			switch f.GetType() {
			case dto.MetricType_HISTOGRAM:
				add(name+"_bucket", m, "le")
				add(name+"_sum", m)
				add(name+"_count", m)
			case dto.MetricType_SUMMARY:
				add(name, m, "quantile")
				add(name+"_sum", m)
				add(name+"_count", m)
			default:
				add(name, m)
			}
		}
	}
	return ex
}

// checkExpr parses a PromQL expression and checks that every selector names
// a scraped (or recorded) series, and every label matcher a label and value
// the server produces.
func checkExpr(ex exported, recorded map[string]bool, expr string) []error {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return []error{fmt.Errorf("parse %q: %w", expr, err)}
	}
	var errs []error
	n := 0
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		n++
		name := vs.Name
		if name == "" {
			errs = append(errs, fmt.Errorf("selector %s names no metric", vs))
			return nil
		}
		if recorded[name] {
			return nil // its own expression is checked
		}
		ls, ok := ex[name]
		if !ok {
			errs = append(errs, fmt.Errorf("%s is not exported by the server", name))
			return nil
		}
		for _, m := range vs.LabelMatchers {
			if m.Name == model.MetricNameLabel || slices.Contains(targetLabels, m.Name) {
				continue
			}
			vals, ok := ls[m.Name]
			if !ok {
				errs = append(errs, fmt.Errorf("%s has no label %q", name, m.Name))
				continue
			}
			if m.Type != labels.MatchEqual && m.Type != labels.MatchNotEqual && m.Type != labels.MatchRegexp {
				continue
			}
			for _, v := range literalAlternatives(m) {
				if !vals[v] && !slices.Contains(knownValues[m.Name], v) {
					errs = append(errs, fmt.Errorf("%s{%s=%q}: the server never emits that value (seen %v)", name, m.Name, v, keys(vals)))
				}
			}
		}
		return nil
	})
	if n == 0 {
		errs = append(errs, fmt.Errorf("%q selects no series", expr))
	}
	return errs
}

// literalAlternatives returns the values a matcher names: the value of =
// and !=, the alternatives of a regex made of literals joined by |.
func literalAlternatives(m *labels.Matcher) []string {
	if m.Type != labels.MatchRegexp {
		return []string{m.Value}
	}
	if !regexp.MustCompile(`^[A-Za-z0-9_+.]+(\|[A-Za-z0-9_+.]+)*$`).MatchString(m.Value) || strings.Contains(m.Value, ".*") {
		return nil
	}
	return strings.Split(m.Value, "|")
}

func keys(m map[string]bool) []string {
	var k []string
	for v := range m {
		k = append(k, v)
	}
	slices.Sort(k)
	return k
}

// grafanaVar replaces Grafana's template variables with values PromQL
// parses: durations for the interval variables, a literal elsewhere.
var grafanaVar = regexp.MustCompile(`\$\{?(\w+)\}?`)

func expandGrafana(q string) string {
	return grafanaVar.ReplaceAllStringFunc(q, func(v string) string {
		switch strings.Trim(v, "${}") {
		case "__rate_interval", "__interval", "__range":
			return "5m"
		}
		return "x"
	})
}

// dashboardQueries returns every PromQL query in a Grafana dashboard: panel
// targets (rows included) and the metric selectors of label_values()
// variables.
func dashboardQueries(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	type panel struct {
		Panels  []json.RawMessage `json:"panels"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	}
	var out []string
	var walk func([]json.RawMessage)
	walk = func(ps []json.RawMessage) {
		for _, raw := range ps {
			var p panel
			if err := json.Unmarshal(raw, &p); err != nil {
				t.Fatal(err)
			}
			for _, tg := range p.Targets {
				out = append(out, tg.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	lv := regexp.MustCompile(`^label_values\((.+),\s*\w+\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(string)
		if m, ok := v.Query.(map[string]any); ok {
			q, _ = m["query"].(string)
		}
		sm := lv.FindStringSubmatch(q)
		if sm == nil {
			t.Errorf("variable query %q is not label_values(selector, label)", q)
			continue
		}
		out = append(out, sm[1])
	}
	return out
}

// TestAlertsAndDashboardUseExportedMetrics is the contract between the
// server and its monitoring: the real binary serves traffic through the
// Envoy emulation (every verdict, rewrites, pass-throughs, a protocol error,
// both reload results), /metrics is scraped, and every metric, label and
// label value named in the rules and the dashboard must be among what it
// exported.
func TestAlertsAndDashboardUseExportedMetrics(t *testing.T) {
	sc := driveServer(t)
	for _, v := range []string{"allow", "degrade", "throttle", "block"} {
		if sc.verdicts[v] == 0 {
			t.Errorf("traffic produced no %s verdict (got %v): the scrape would not show its series", v, sc.verdicts)
		}
	}
	ex := index(sc.families)
	// The traffic must have reached the paths whose series the rules use.
	for _, want := range [][3]string{
		{"distillguard_requests_total", "verdict", "block"},
		{"distillguard_immediate_responses_total", "status", "429"},
		{"distillguard_immediate_responses_total", "status", "403"},
		{"distillguard_config_reloads_total", "result", "ok"},
		{"distillguard_config_reloads_total", "result", "error"},
		{"distillguard_protocol_errors_total", "kind", "empty_request"},
		{"distillguard_refusals_total", "reason", "invalid_json"},
		{"distillguard_passthroughs_total", "reason", "unknown_content_type"},
		{"distillguard_refusals_total", "reason", "unattributable"},
		{"distillguard_scoring_standing_total", "standing", "probation"},
		{"distillguard_scoring_standing_total", "standing", "earned"},
		{"distillguard_scoring_bad_input_total", "reason", "binary"},
	} {
		if !ex[want[0]][want[1]][want[2]] {
			t.Errorf("scrape lacks %s{%s=%q}", want[0], want[1], want[2])
		}
	}
	if len(ex["distillguard_events_rewritten_total"]) == 0 && sc.families["distillguard_events_rewritten_total"] == nil {
		t.Error("no rewrites happened")
	}

	rs := loadRules(t)
	recorded := map[string]bool{}
	for _, r := range rs.records {
		recorded[r.name] = true
	}
	for _, r := range append(rs.records, rs.alerts...) {
		for _, err := range checkExpr(ex, recorded, r.expr) {
			t.Errorf("rule %s: %v", r.name, err)
		}
	}

	dashboards, err := filepath.Glob("../grafana/*.json")
	if err != nil || len(dashboards) == 0 {
		t.Fatalf("no dashboards found (%v)", err)
	}
	for _, path := range dashboards {
		qs := dashboardQueries(t, path)
		if len(qs) < 20 {
			t.Errorf("%s: only %d queries found", path, len(qs))
		}
		for _, q := range qs {
			for _, err := range checkExpr(ex, nil, expandGrafana(q)) {
				t.Errorf("%s: %v", filepath.Base(path), err)
			}
		}
	}
}

// TestCheckExprCatches proves the checker fails on what it is there to
// catch.
func TestCheckExprCatches(t *testing.T) {
	fams := map[string]*dto.MetricFamily{
		"distillguard_requests_total": {Type: dto.MetricType_COUNTER.Enum(), Metric: []*dto.Metric{{
			Label: []*dto.LabelPair{{Name: ptr("verdict"), Value: ptr("block")}}, Counter: &dto.Counter{Value: ptr(1.0)}}}},
		"distillguard_message_duration_seconds": {Type: dto.MetricType_HISTOGRAM.Enum(), Metric: []*dto.Metric{{Histogram: &dto.Histogram{}}}},
	}
	ex := index(fams)
	for _, tc := range []struct {
		expr string
		ok   bool
	}{
		{`sum(rate(distillguard_requests_total{verdict="block", namespace="x"}[5m]))`, true},
		{`histogram_quantile(0.99, sum by (le) (rate(distillguard_message_duration_seconds_bucket[5m])))`, true},
		{`rate(distillguard_message_duration_seconds_count[5m])`, true},
		{`rate(distillguard_request_total[5m])`, false},                         // misspelt metric
		{`rate(distillguard_requests_total{verdic="block"}[5m])`, false},        // misspelt label
		{`rate(distillguard_requests_total{verdict="blocked"}[5m])`, false},     // value never emitted
		{`rate(distillguard_requests_total{verdict=~"block|deny"}[5m])`, false}, // one alternative never emitted
		{`distillguard_message_duration_seconds`, false},                        // histogram base name is no series
		{`sum(rate(distillguard_requests_total[5m]) > `, false},                 // does not parse
		{`vector(1)`, false}, // selects nothing
	} {
		errs := checkExpr(ex, nil, tc.expr)
		if (len(errs) == 0) != tc.ok {
			t.Errorf("%s: errors %v, want ok=%v", tc.expr, errs, tc.ok)
		}
	}
}

func ptr[T any](v T) *T { return &v }
