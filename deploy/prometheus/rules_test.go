package prometheus

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/distillguard/distillguard/deploy/internal/testtool"
)

const rulesFile = "distillguard-rules.yaml"

func promtool(t *testing.T, args ...string) string {
	t.Helper()
	bin := testtool.Need(t, "promtool")
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestPromtoolCheckRules(t *testing.T) {
	out := promtool(t, "check", "rules", rulesFile)
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool check rules:\n%s", out)
	}
}

// TestPromtoolUnitTests runs the alert unit tests; it also makes sure the
// test file covers every alert the rules define.
func TestPromtoolUnitTests(t *testing.T) {
	out := promtool(t, "test", "rules", "distillguard-rules_test.yaml")
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool test rules:\n%s", out)
	}
	tests, err := os.ReadFile("distillguard-rules_test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range loadRules(t).alerts {
		if !strings.Contains(string(tests), "alertname: "+a.name+"\n") {
			t.Errorf("alert %s has no unit test in distillguard-rules_test.yaml", a.name)
		}
	}
}

// TestPromtoolRejectsBrokenRules guards the two tests above: promtool really
// fails on a bad expression and on an alert that does not fire as expected.
func TestPromtoolRejectsBrokenRules(t *testing.T) {
	bin := testtool.Need(t, "promtool")
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("groups:\n- name: x\n  rules:\n  - alert: X\n    expr: sum(rate(foo[5m]) >\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "check", "rules", bad).CombinedOutput(); err == nil {
		t.Fatalf("promtool accepted a broken expression:\n%s", out)
	}
	rules, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	// Raise the block-share threshold out of reach: the spike test must fail.
	broken := strings.Replace(string(rules), "distillguard:block_share:rate10m > 0.05", "distillguard:block_share:rate10m > 0.5", 1)
	if broken == string(rules) {
		t.Fatal("threshold not found in the rules")
	}
	if err := os.WriteFile(filepath.Join(dir, rulesFile), []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile("distillguard-rules_test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "t.yaml"), tests, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "test", "rules", "t.yaml")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("promtool test rules passed against a broken alert:\n%s", out)
	}
}

// TestRunbookAnchors: every alert links to its section of the operations
// runbook, and the section exists.
func TestRunbookAnchors(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(testtool.Root(t), "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	heading := regexp.MustCompile(`(?m)^#{2,4} (.+)$`)
	anchors := map[string]bool{}
	for _, m := range heading.FindAllStringSubmatch(string(doc), -1) {
		anchors[githubAnchor(m[1])] = true
	}
	const prefix = "https://github.com/distillguard/distillguard/blob/main/docs/operations.md#"
	for _, a := range loadRules(t).alerts {
		u := a.annotations["runbook_url"]
		anchor, ok := strings.CutPrefix(u, prefix)
		if !ok {
			t.Errorf("%s: runbook_url %q does not point into docs/operations.md", a.name, u)
			continue
		}
		if !anchors[anchor] {
			t.Errorf("%s: docs/operations.md has no section #%s", a.name, anchor)
		}
		for _, k := range []string{"summary", "description"} {
			if a.annotations[k] == "" {
				t.Errorf("%s has no %s", a.name, k)
			}
		}
		if s := a.labels["severity"]; s != "warning" && s != "critical" {
			t.Errorf("%s severity %q", a.name, s)
		}
	}
}

// githubAnchor is the fragment GitHub gives a Markdown heading: lower case,
// punctuation other than - and _ dropped, spaces to -.
func githubAnchor(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(h)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			b.WriteRune(r)
		}
	}
	return b.String()
}
