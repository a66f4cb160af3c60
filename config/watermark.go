package config

import (
	"errors"
	"fmt"
	"os"
	"sort"

	"github.com/distillguard/distillguard/mutate"
	"github.com/distillguard/distillguard/watermark"
)

// Watermark configures the keys of the output watermark that tiers with
// output.watermark apply (package watermark: a lexical mark on generated
// text, a logprob mark on returned alternatives).
type Watermark struct {
	// KeyFile holds the marking key: a hex or raw secret of at least 32
	// bytes, or a key set (`distillguard watermark keygen` writes one)
	// whose active key marks and whose other keys still verify.
	KeyFile string `yaml:"key_file"`
	// VerifyKeyFiles are older key files kept for verification only:
	// their keys never mark, but the verifier and the evidence export
	// know them, so marks made before a rotation still verify.
	VerifyKeyFiles []string `yaml:"verify_key_files"`
	// LogprobAmplitude is the logprob mark's amplitude in nats (watermark.
	// NewLogprobMark): each returned alternative but the first is lowered
	// by up to this much. Keep it within the tier's perturbation budget.
	LogprobAmplitude float64 `yaml:"logprob_amplitude"`
	// ContextsFile holds the context statistics the lexical mark's
	// frequency-preserving assignment works from, counted in the
	// provider's own unmarked output by `distillguard watermark contexts`
	// (empty: the embedded statistics, counted in the prompt corpora).
	// The mark keeps every synonym's share of the text only as far as the
	// statistics match the text marked: output of another kind (technical
	// prose, another language register) marked with the embedded ones
	// shows in a word-frequency comparison. verify -contexts takes the
	// same file.
	ContextsFile string `yaml:"contexts_file"`
	// LogServed writes a served record of every response the lexical mark
	// rewrote (the "watermark served" log line: session, key id and the
	// keyed digests of the response's synonym-set groups; watermark.Served):
	// what `watermark verify -served` needs to weigh a suspect model's text
	// by what the session was served, without keeping the text. About 17
	// bytes per distinct group, a few dozen groups per response.
	LogServed bool `yaml:"log_served"`
}

// Marks is the watermark the configuration's key file gives: built once
// per load (the lexical assignment takes milliseconds per key), shared by
// every stream. Nil when no key file is configured.
type Marks struct {
	Keys    *watermark.KeySet // the active key first, then every verify-only key
	Text    *mutate.TextMark
	Logprob *watermark.LogprobMark
	// Contexts names the context statistics the lexical mark uses:
	// watermark.EmbeddedContexts, or "sha256:" and the hex SHA-256 of
	// watermark.contexts_file, so that an export says which file verify
	// needs (verify's report names them the same way).
	Contexts string
	// LogServed is watermark.log_served.
	LogServed bool
}

// loadContexts is the lexicon the lexical mark uses and its statistics'
// name: the embedded one, or its table with watermark.contexts_file's
// statistics.
func loadContexts(path string) (*watermark.Lexicon, string, error) {
	if path == "" {
		return watermark.DefaultLexicon(), watermark.EmbeddedContexts, nil
	}
	lex, name, err := watermark.LoadContextStats(watermark.DefaultLexicon(), path)
	if err != nil {
		return nil, "", fmt.Errorf("watermark.contexts_file: %w", err)
	}
	return lex, name, nil
}

// KeyID is the id of the key that marks.
func (m *Marks) KeyID() string { return m.Keys.Active().ID() }

// Marks returns the configured watermark (nil: watermark.key_file unset).
func (c *Config) Marks() *Marks { return c.marks }

// resolveWatermark loads the watermark keys, and checks that a tier the
// configuration file itself sets output.watermark on has one (asked: those
// tiers, "policies.SET.TIER"). The embedded default's degrade tier asks for
// the watermark too, but a configuration that leaves it as inherited and
// configures no key starts unmarked: the default is a template, and a key
// made up per process would leave marks nobody can verify after a restart.
// The server warns about it at start (UnkeyedWatermarkTiers).
func (c *Config) resolveWatermark(asked []string) error {
	w := &c.Watermark
	var errs []error
	if !(w.LogprobAmplitude > 0 && w.LogprobAmplitude <= watermark.MaxAmplitude) {
		errs = append(errs, fmt.Errorf("watermark.logprob_amplitude: %g is not in (0, %g]", w.LogprobAmplitude, watermark.MaxAmplitude))
	}
	if w.KeyFile == "" {
		if len(w.VerifyKeyFiles) > 0 {
			errs = append(errs, errors.New("watermark.verify_key_files needs watermark.key_file (the key that marks)"))
		}
		if w.ContextsFile != "" {
			errs = append(errs, errors.New("watermark.contexts_file needs watermark.key_file (the key that marks)"))
		}
		for _, name := range asked {
			errs = append(errs, fmt.Errorf("%s: output.watermark is set but watermark.key_file is not: configure a key file with a hex or raw secret of at least %d bytes (`distillguard watermark keygen -key-file FILE` writes one)", name, watermark.MinSecretBytes))
		}
		return errors.Join(errs...)
	}
	ks, err := loadKeys(w.KeyFile)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("watermark.key_file: %w", err))...)
	}
	older := append([]*watermark.Key(nil), ks.Keys()[1:]...)
	for i, f := range w.VerifyKeyFiles {
		vs, err := loadKeys(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("watermark.verify_key_files[%d]: %w", i, err))
			continue
		}
		older = append(older, vs.Keys()...)
	}
	all, err := watermark.NewKeySet(ks.Active(), older...)
	if err != nil {
		errs = append(errs, fmt.Errorf("watermark: %w", err))
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	lex, contexts, err := loadContexts(w.ContextsFile)
	if err != nil {
		return err
	}
	lm, err := watermark.NewLogprobMark(all.Active(), w.LogprobAmplitude)
	if err != nil {
		return fmt.Errorf("watermark: %w", err)
	}
	c.marks = &Marks{
		Keys:      all,
		Text:      mutate.NewTextMark(watermark.NewMarker(lex, all.Active())),
		Logprob:   lm,
		Contexts:  contexts,
		LogServed: w.LogServed,
	}
	return nil
}

// loadKeys reads a key file strictly: it must exist and parse
// (watermark.ParseKeyFile: at least MinSecretBytes, hex or raw, or a key
// set with ids).
func loadKeys(path string) (*watermark.KeySet, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	return watermark.LoadKeyFile(path)
}

// UnkeyedWatermarkTiers names the tiers that ask for the watermark while
// no key is configured (they mark nothing), as "policies.SET.TIER".
func (c *Config) UnkeyedWatermarkTiers() []string {
	if c.marks != nil {
		return nil
	}
	return watermarkTiers(c.Policies)
}

// watermarkTiers names the tiers of sets that set output.watermark, as
// "policies.SET.TIER".
func watermarkTiers(sets map[string]PolicySet) []string {
	var out []string
	names := make([]string, 0, len(sets))
	for n := range sets {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		set := sets[name]
		for i, t := range []*Tier{&set.Allow, &set.Degrade, &set.Throttle, &set.Block, set.Probation} {
			if t != nil && t.Output.Watermark {
				out = append(out, fmt.Sprintf("policies.%s.%s", name, tierNames[i]))
			}
		}
	}
	return out
}

// MarkedVerdicts names the verdicts whose tier in the default policy set
// marks responses (output.watermark), when a key is configured.
func (c *Config) MarkedVerdicts() []string {
	rs := c.policies["default"]
	if c.marks == nil || rs == nil {
		return nil
	}
	var out []string
	for _, a := range rs[:probationSlot] {
		if a.Output.Watermark && a.Reject == nil {
			out = append(out, a.Verdict.String())
		}
	}
	return out
}
