package config

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/distillguard/distillguard/scoring"
	"github.com/distillguard/distillguard/watermark"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestWatermarkKeys(t *testing.T) {
	hexKey := writeFile(t, "hex.key", strings.Repeat("a1", 32)+"\n")
	rawKey := writeFile(t, "raw.key", strings.Repeat("r", 40))
	short := writeFile(t, "short.key", strings.Repeat("s", 31))
	shortHex := writeFile(t, "shorthex.key", strings.Repeat("a1", 15))
	set := writeFile(t, "set.key", watermark.KeySetHeader+"\nk2026 "+strings.Repeat("b2", 32)+" active\nk2025 "+strings.Repeat("c3", 32)+"\n")
	old := writeFile(t, "old.key", watermark.KeySetHeader+"\nk2024 "+strings.Repeat("d4", 32)+" active\n")
	dup := writeFile(t, "dup.key", watermark.KeySetHeader+"\nk2025 "+strings.Repeat("e5", 32)+" active\n")
	for _, c := range []struct {
		name, yaml string
		err        string // substring; "" for valid
		active     string
		keys       int
	}{
		{"hex", "watermark: {key_file: " + hexKey + "}", "", watermark.Fingerprint(mustHex(strings.Repeat("a1", 32))), 1},
		{"raw", "watermark: {key_file: " + rawKey + "}", "", watermark.Fingerprint([]byte(strings.Repeat("r", 40))), 1},
		{"key set and verify-only file", "watermark: {key_file: " + set + ", verify_key_files: [" + old + "]}", "", "k2026", 3},
		{"too short", "watermark: {key_file: " + short + "}", "watermark.key_file", "", 0},
		{"short hex is a short raw secret", "watermark: {key_file: " + shortHex + "}", "watermark.key_file", "", 0},
		{"missing file", "watermark: {key_file: /nonexistent/wm.key}", "watermark.key_file", "", 0},
		{"duplicate ids across files", "watermark: {key_file: " + set + ", verify_key_files: [" + dup + "]}", "watermark", "", 0},
		{"verify files without a marking key", "watermark: {verify_key_files: [" + old + "]}", "needs watermark.key_file", "", 0},
		{"amplitude out of range", "watermark: {key_file: " + hexKey + ", logprob_amplitude: 2}", "logprob_amplitude", "", 0},
		{"a tier the file marks needs a key", "policies:\n  default:\n    allow: {output: {watermark: true}}\n", "policies.default.allow: output.watermark is set but watermark.key_file is not", "", 0},
		{"and in a named set", "policies:\n  strict:\n    probation: {output: {watermark: true}}\n", "policies.strict.probation: output.watermark", "", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Parse([]byte(c.yaml))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err %v, want one containing %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			m := cfg.Marks()
			if m == nil || m.KeyID() != c.active || len(m.Keys.Keys()) != c.keys || m.Text == nil || m.Logprob == nil {
				t.Fatalf("marks %+v", m)
			}
			if m.Text.Marker().Key().ID() != c.active || m.Logprob.Key().ID() != c.active {
				t.Fatal("the marks do not use the active key")
			}
			if got := cfg.MarkedVerdicts(); len(got) != 1 || got[0] != "degrade" {
				t.Fatalf("marked verdicts %v", got)
			}
			if cfg.UnkeyedWatermarkTiers() != nil {
				t.Fatal("keyed configuration reports unkeyed tiers")
			}
		})
	}
}

func mustHex(s string) []byte {
	b := make([]byte, len(s)/2)
	for i := range b {
		var v byte
		for _, c := range s[2*i : 2*i+2] {
			v <<= 4
			switch {
			case c >= '0' && c <= '9':
				v |= byte(c - '0')
			default:
				v |= byte(c-'a') + 10
			}
		}
		b[i] = v
	}
	return b
}

func TestDefaultWatermarkTiers(t *testing.T) {
	c := Default()
	if a := c.Resolve("/v1/chat/completions", "", scoring.Allow); a.Output.Watermark {
		t.Fatal("allow marks by default")
	}
	if a := c.Resolve("/v1/chat/completions", "", scoring.Degrade); !a.Output.Watermark {
		t.Fatal("degrade does not ask for the watermark by default")
	}
	if c.Marks() != nil || c.MarkedVerdicts() != nil {
		t.Fatal("the default has a key")
	}
	if got := c.UnkeyedWatermarkTiers(); len(got) != 1 || got[0] != "policies.default.degrade" {
		t.Fatalf("unkeyed tiers %v", got)
	}
	// A file that leaves degrade as inherited starts without a key.
	if _, err := Parse([]byte("log: {level: warn}\n")); err != nil {
		t.Fatal(err)
	}
	// Probation takes the stricter of its own and allow's: either's mark.
	p, err := Parse([]byte("watermark: {key_file: " + writeFile(t, "k", strings.Repeat("k", 32)) + "}\npolicies:\n  default:\n    allow: {output: {watermark: true}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if a := p.ResolveStanding("/v1/chat/completions", "", scoring.Allow, true); !a.Output.Watermark || !a.Probation {
		t.Fatalf("probation over a marking allow: %+v", a.Output)
	}
}

func TestEvidenceKeyAndFingerprint(t *testing.T) {
	key := writeFile(t, "ev.key", strings.Repeat("5a", 32))
	c, err := Parse([]byte("evidence: {key_file: " + key + "}\nscoring: {secret: one-secret-one-secret-one-secret}\nadmin: {token: t1}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.EvidenceKey() == nil || len(c.EvidenceKey().ID()) != 16 {
		t.Fatal("no evidence key")
	}
	c2, err := Parse([]byte("evidence: {key_file: " + key + "}\nscoring: {secret: two-secret-two-secret-two-secret}\nadmin: {token: t2}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Fingerprint() == "" || c.Fingerprint() != c2.Fingerprint() {
		t.Fatalf("secrets change the fingerprint: %s %s", c.Fingerprint(), c2.Fingerprint())
	}
	c3, err := Parse([]byte("evidence: {key_file: " + key + "}\npolicies:\n  default:\n    allow: {output: {round_decimals: 4}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c3.Fingerprint() == c.Fingerprint() {
		t.Fatal("a policy change leaves the fingerprint")
	}
	if _, err := Parse([]byte("evidence: {key_file: " + writeFile(t, "short", "abc") + "}\n")); err == nil || !strings.Contains(err.Error(), "evidence.key_file") {
		t.Fatalf("short evidence key: %v", err)
	}
}

// TestWatermarkContextsFile: watermark.contexts_file gives the text mark
// the provider's own statistics (so it marks as a marker built on them
// does, not as the embedded ones do) and names them by digest; a file
// that does not parse, or one without a marking key, is refused naming
// the setting.
func TestWatermarkContextsFile(t *testing.T) {
	lex := watermark.DefaultLexicon()
	// Text in which every candidate follows a context the embedded
	// statistics never saw ("zo12ka"), in counts that make those contexts
	// rows of the provider's statistics.
	var texts [][]byte
	for i := 0; i < 400; i++ {
		texts = append(texts, []byte(fmt.Sprintf("zo%dka kids zo%dka big zo%dka maybe zo%dka children.", i%40, i%37, i%31, i%29)))
	}
	stats := watermark.BuildContextStats(lex, texts).Format(lex)
	ctxFile := writeFile(t, "contexts", string(stats))
	keyFile := writeFile(t, "wm.key", strings.Repeat("7e", 32))
	c, err := Parse([]byte("watermark: {key_file: " + keyFile + ", contexts_file: " + ctxFile + "}\n"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(stats)
	if got, want := c.Marks().Contexts, "sha256:"+hex.EncodeToString(sum[:]); got != want {
		t.Errorf("contexts %q, want %q", got, want)
	}
	cs, err := watermark.ParseContextStats(lex, stats)
	if err != nil {
		t.Fatal(err)
	}
	key := c.Marks().Keys.Active()
	own := watermark.NewMarker(lex.WithContextStats(cs), key)
	embedded := watermark.NewMarker(lex, key)
	differ := 0
	for _, tx := range texts {
		got, _ := c.Marks().Text.Marker().Mark(tx)
		want, _ := own.Mark(tx)
		if string(got) != string(want) {
			t.Fatalf("the configured mark of %q is %q, the provider statistics' is %q", tx, got, want)
		}
		if e, _ := embedded.Mark(tx); string(e) != string(got) {
			differ++
		}
	}
	if differ == 0 {
		t.Error("the configured mark is the embedded statistics' on every text: the file was not used")
	}
	if d, err := Parse([]byte("watermark: {key_file: " + keyFile + "}\n")); err != nil || d.Marks().Contexts != watermark.EmbeddedContexts {
		t.Errorf("without contexts_file: %v, %v", d.Marks(), err)
	}
	for _, bad := range []struct{ yaml, want string }{
		{"watermark: {key_file: " + keyFile + ", contexts_file: " + writeFile(t, "junk", "not statistics\n") + "}\n", "watermark.contexts_file"},
		{"watermark: {key_file: " + keyFile + ", contexts_file: /nonexistent/contexts}\n", "watermark.contexts_file"},
		{"watermark: {contexts_file: " + ctxFile + "}\n", "watermark.contexts_file needs watermark.key_file"},
	} {
		if _, err := Parse([]byte(bad.yaml)); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: err %v, want one containing %q", bad.yaml, err, bad.want)
		}
	}
}

// TestVerifierPromptCutIsTheDefault: the verifier's -max-prompt-bytes
// default is the server's processing.max_prompt_bytes default, so a
// logprob probe gets the context the server keyed its mark on.
func TestVerifierPromptCutIsTheDefault(t *testing.T) {
	if got := Default().Processing.MaxPromptBytes; got != watermark.DefaultMaxPromptBytes {
		t.Errorf("processing.max_prompt_bytes defaults to %d, the verifier's -max-prompt-bytes to %d", got, watermark.DefaultMaxPromptBytes)
	}
}
