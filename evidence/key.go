package evidence

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
)

// MinSecretBytes is the shortest evidence secret accepted: 256 bits.
const MinSecretBytes = 32

// seedLabel separates the signing seed derived from an evidence secret
// from any other use of the same bytes.
const seedLabel = "distillguard evidence ed25519 v1\x00"

// Key signs evidence exports: an Ed25519 key (RFC 8032) derived from the
// secret of evidence.key_file. Ed25519 rather than an HMAC, so that the
// party who checks an export later (a court, a counterparty) needs only
// the public key, which the export carries and whose id the operator
// publishes; checking never needs the secret.
type Key struct {
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
	id   string
}

// NewKey derives the key of secret (at least MinSecretBytes): the Ed25519
// seed is SHA-256(seedLabel || secret).
func NewKey(secret []byte) (*Key, error) {
	if len(secret) < MinSecretBytes {
		return nil, fmt.Errorf("evidence: secret of %d bytes, need at least %d", len(secret), MinSecretBytes)
	}
	h := sha256.New()
	h.Write([]byte(seedLabel))
	h.Write(secret)
	priv := ed25519.NewKeyFromSeed(h.Sum(nil))
	pub := priv.Public().(ed25519.PublicKey)
	return &Key{priv: priv, pub: pub, id: KeyID(pub)}, nil
}

// KeyID names a public key: the first 8 bytes of its SHA-256, in hex.
func KeyID(pub ed25519.PublicKey) string {
	s := sha256.Sum256(pub)
	return hex.EncodeToString(s[:8])
}

// ID is the key's id (KeyID of its public key).
func (k *Key) ID() string { return k.id }

// Public is the key's public half.
func (k *Key) Public() ed25519.PublicKey { return k.pub }

// ParseSecret reads a key file's content: hex of at least MinSecretBytes
// bytes (the whole file, surrounding white space trimmed), else the raw
// bytes as they are (at least MinSecretBytes).
func ParseSecret(b []byte) ([]byte, error) {
	t := bytes.TrimSpace(b)
	if len(t) >= 2*MinSecretBytes && len(t)%2 == 0 {
		if d, err := hex.DecodeString(string(t)); err == nil {
			return d, nil
		}
	}
	if len(b) < MinSecretBytes {
		return nil, fmt.Errorf("evidence: key file holds %d bytes, need a hex or raw secret of at least %d", len(b), MinSecretBytes)
	}
	return b, nil
}

// LoadKey reads evidence.key_file.
func LoadKey(path string) (*Key, error) {
	if path == "" {
		return nil, errors.New("evidence: no key file")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("evidence: key file: %w", err)
	}
	s, err := ParseSecret(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return NewKey(s)
}
