package config

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"gopkg.in/yaml.v3"

	"github.com/distillguard/distillguard/evidence"
)

// Evidence configures the signed per-session evidence export (package
// evidence; GET /v1/sessions/{id}/evidence).
type Evidence struct {
	// KeyFile holds the signing secret: hex or raw, at least 32 bytes.
	// Unset, exports are refused (an unsigned export proves nothing).
	KeyFile string `yaml:"key_file"`
	// IncludePrompts puts the session's retained prompt texts into
	// exports. Off by default: an export names sessions by their keyed
	// id and prompts by their keyed hash, so it can be handed to a ToS or
	// legal team without handing them users' text; an operator whose
	// process allows it turns this on.
	IncludePrompts bool `yaml:"include_prompts"`
}

// EvidenceKey is the loaded signing key (nil: evidence.key_file unset).
type EvidenceKey = evidence.Key

// EvidenceKey returns the key exports are signed with (nil: none).
func (c *Config) EvidenceKey() *evidence.Key { return c.evidence }

func (c *Config) resolveEvidence() error {
	if c.Evidence.KeyFile == "" {
		return nil
	}
	k, err := evidence.LoadKey(c.Evidence.KeyFile)
	if err != nil {
		return fmt.Errorf("evidence.key_file: %w", err)
	}
	c.evidence = k
	return nil
}

// Fingerprint identifies the configuration an export was made under: the
// SHA-256 (hex, first 16 bytes) of the configuration as YAML with every
// secret and secret path blanked (scoring.secret, admin.token, the Redis
// password, key files), so that two servers running the same policy show
// the same fingerprint and the fingerprint reveals no secret.
func (c *Config) Fingerprint() string {
	cp := *c
	cp.Admin.Token = ""
	cp.Scoring.Secret, cp.Scoring.SecretFile = "", ""
	cp.Scoring.Redis.Password, cp.Scoring.Redis.PasswordFile = "", ""
	cp.Watermark.KeyFile, cp.Watermark.VerifyKeyFiles = "", nil
	cp.Evidence.KeyFile = ""
	b, err := yaml.Marshal(&cp)
	if err != nil {
		return ""
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:16])
}
