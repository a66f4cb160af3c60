package watermark

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"os"
	"strings"
)

// MinSecretBytes is the shortest secret a key accepts: 256 bits, so the
// derived PRF keys are full-strength AES-256 and HMAC-SHA256 keys.
const MinSecretBytes = 32

// KeySetHeader is the first line of a key set file.
const KeySetHeader = "distillguard-watermark-keyset v1"

// hkdfSalt separates this package's derivations from any other use of the
// same secret (RFC 5869 section 3.1: a salt adds domain separation).
const hkdfSalt = "distillguard watermark v1"

// Key is one watermark key: the secret never leaves it; what it holds are
// the PRF keys derived from the secret with HKDF-SHA256 (RFC 5869), one per
// use, so the lexical and the logprob marks are independent even though
// they come from one secret. A Key is immutable and safe for concurrent use
// (cipher.Block from crypto/aes is stateless after key expansion).
type Key struct {
	id string
	// lexBlock / lexMAC key the lexical choice (block for inputs up to
	// 15 bytes, HMAC for longer ones); lpBlock / lpMAC key the logprob
	// mark's token groups and context projection.
	lexBlock cipher.Block
	lexMAC   []byte
	lpBlock  cipher.Block
	lpMAC    []byte
	// servedMAC keys the digests of served groups (Served): separate from
	// the lexical keys, so a served record says nothing of the mark.
	servedMAC []byte
}

// NewKey derives a key from secret (at least MinSecretBytes). An empty id
// is replaced by the key's fingerprint (see Fingerprint).
func NewKey(id string, secret []byte) (*Key, error) {
	if len(secret) < MinSecretBytes {
		return nil, fmt.Errorf("watermark: secret is %d bytes, want at least %d", len(secret), MinSecretBytes)
	}
	if id == "" {
		id = Fingerprint(secret)
	} else if err := checkID(id); err != nil {
		return nil, err
	}
	derive := func(info string, n int) []byte {
		b, err := hkdf.Key(sha256.New, secret, []byte(hkdfSalt), info, n)
		if err != nil {
			// hkdf.Key fails only for lengths beyond 255*32 bytes.
			panic(err)
		}
		return b
	}
	k := &Key{id: id, lexMAC: derive("lexical hmac", 32), lpMAC: derive("logprob hmac", 32), servedMAC: derive("served groups hmac", 32)}
	var err error
	if k.lexBlock, err = aes.NewCipher(derive("lexical aes", 32)); err != nil {
		return nil, err
	}
	if k.lpBlock, err = aes.NewCipher(derive("logprob aes", 32)); err != nil {
		return nil, err
	}
	return k, nil
}

// Fingerprint is the id a key gets when none is given: 8 hex digits derived
// from the secret with HKDF (not a plain hash, so it says nothing about the
// secret that the derived PRF keys would not).
func Fingerprint(secret []byte) string {
	b, err := hkdf.Key(sha256.New, secret, []byte(hkdfSalt), "key id", 4)
	if err != nil {
		panic(err)
	}
	return "k" + hex.EncodeToString(b)
}

// ID names the key in verification reports and key set files.
func (k *Key) ID() string { return k.id }

func checkID(id string) error {
	if len(id) > 64 {
		return fmt.Errorf("watermark: key id %q is longer than 64 bytes", id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("watermark: key id %q: only letters, digits, '-', '_' and '.' are allowed", id)
		}
	}
	return nil
}

// KeySet is the active key, which marks, and the older keys, which still
// verify: rotating keys keeps old evidence checkable.
type KeySet struct {
	active *Key
	keys   []*Key // active first
}

// NewKeySet returns a set marking with active and verifying with every key.
func NewKeySet(active *Key, older ...*Key) (*KeySet, error) {
	if active == nil {
		return nil, errors.New("watermark: no active key")
	}
	ks := &KeySet{active: active, keys: append([]*Key{active}, older...)}
	seen := map[string]bool{}
	for _, k := range ks.keys {
		if seen[k.id] {
			return nil, fmt.Errorf("watermark: key id %q appears twice", k.id)
		}
		seen[k.id] = true
	}
	return ks, nil
}

// Active is the key that marks.
func (ks *KeySet) Active() *Key { return ks.active }

// Keys returns every key, the active one first. The slice is shared; do
// not modify it.
func (ks *KeySet) Keys() []*Key { return ks.keys }

// Lookup returns the key with the given id.
func (ks *KeySet) Lookup(id string) (*Key, bool) {
	for _, k := range ks.keys {
		if k.id == id {
			return k, true
		}
	}
	return nil, false
}

// LoadKeyFile reads a key file (watermark.key_file) and parses it with
// ParseKeyFile.
func LoadKeyFile(path string) (*KeySet, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("watermark: key file: %w", err)
	}
	ks, err := ParseKeyFile(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ks, nil
}

// ParseKeyFile accepts three forms:
//
//   - a key set: the line KeySetHeader, then one key per line as
//     "ID HEX-SECRET", exactly one of them followed by the word "active";
//     blank lines and lines starting with '#' are ignored;
//   - a hex secret: the whole file, surrounding white space trimmed, is
//     hex of at least MinSecretBytes bytes;
//   - a raw secret: anything else, used byte for byte (at least
//     MinSecretBytes).
//
// A single secret gets its fingerprint as id.
func ParseKeyFile(b []byte) (*KeySet, error) {
	if rest, ok := bytes.CutPrefix(b, []byte(KeySetHeader)); ok && (len(rest) == 0 || rest[0] == '\n' || rest[0] == '\r') {
		return parseKeySet(string(rest))
	}
	secret := b
	if t := bytes.TrimSpace(b); len(t) >= 2*MinSecretBytes && isHex(t) {
		secret = make([]byte, hex.DecodedLen(len(t)))
		if _, err := hex.Decode(secret, t); err != nil {
			return nil, fmt.Errorf("watermark: hex key: %w", err)
		}
	}
	k, err := NewKey("", secret)
	if err != nil {
		return nil, err
	}
	return NewKeySet(k)
}

func isHex(b []byte) bool {
	if len(b)%2 != 0 {
		return false
	}
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

func parseKeySet(s string) (*KeySet, error) {
	var active *Key
	var older []*Key
	for i, line := range strings.Split(s, "\n") {
		n := i + 1 // the header is line 1; the rest starts on its line
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 || len(f) > 3 || (len(f) == 3 && f[2] != "active") {
			return nil, fmt.Errorf("watermark: key set line %d: want \"ID HEX-SECRET [active]\"", n)
		}
		if !isHex([]byte(f[1])) {
			return nil, fmt.Errorf("watermark: key set line %d: secret is not hex", n)
		}
		secret, _ := hex.DecodeString(f[1])
		k, err := NewKey(f[0], secret)
		if err != nil {
			return nil, fmt.Errorf("key set line %d: %w", n, err)
		}
		if len(f) == 3 {
			if active != nil {
				return nil, fmt.Errorf("watermark: key set line %d: a second active key", n)
			}
			active = k
			continue
		}
		older = append(older, k)
	}
	if active == nil {
		return nil, errors.New("watermark: key set has no key marked active")
	}
	return NewKeySet(active, older...)
}

// prf is a keyed pseudo-random function to 64 bits: AES-256 of one block
// (length byte, message, zero padding; an injective encoding, so distinct
// messages are distinct blocks of a pseudo-random permutation) for messages
// up to 15 bytes, which covers nearly every call, and HMAC-SHA256 under an
// independent key for longer ones. Both keys come from the key's HKDF, so
// nothing an attacker can compute without the secret predicts an output.
// One prf per goroutine: the HMAC state is reused.
type prf struct {
	block  cipher.Block
	macKey []byte
	mac    hash.Hash // created on first long message
	in     [16]byte
	out    [sha256.Size]byte
	long   []byte // scratch for long string messages
}

// sum64s is sum64 of a string's bytes, without converting it.
func (p *prf) sum64s(msg string) uint64 {
	if len(msg) <= 15 {
		p.in = [16]byte{}
		p.in[0] = byte(len(msg))
		copy(p.in[1:], msg)
		p.block.Encrypt(p.out[:16], p.in[:])
		return binary.BigEndian.Uint64(p.out[:8])
	}
	p.long = append(p.long[:0], msg...)
	return p.sum64(p.long)
}

func (p *prf) sum64(msg []byte) uint64 {
	if len(msg) <= 15 {
		p.in = [16]byte{}
		p.in[0] = byte(len(msg))
		copy(p.in[1:], msg)
		p.block.Encrypt(p.out[:16], p.in[:])
		return binary.BigEndian.Uint64(p.out[:8])
	}
	if p.mac == nil {
		p.mac = hmac.New(sha256.New, p.macKey)
	}
	p.mac.Reset()
	p.mac.Write(msg)
	p.mac.Sum(p.out[:0])
	return binary.BigEndian.Uint64(p.out[:8])
}

// tiltTag is the first byte of a tilt message. Every other message puts
// its length (at most 15) there, so a tilt block is never another block.
const tiltTag = 0xf0

// tilt is the keyed PRF of (unit, seen context row, history): one AES
// block, tagged apart from every sum64 message.
func (p *prf) tilt(u uint32, row int32, h uint64) uint64 {
	p.in[0] = tiltTag
	binary.BigEndian.PutUint16(p.in[1:], uint16(u/numSlots))
	p.in[3] = byte(u % numSlots)
	binary.BigEndian.PutUint32(p.in[4:], uint32(row))
	binary.BigEndian.PutUint64(p.in[8:], h)
	p.block.Encrypt(p.out[:16], p.in[:])
	return binary.BigEndian.Uint64(p.out[:8])
}

// tilt2 is tilt and the other half of its block (an independent 64-bit
// output of the same input).
func (p *prf) tilt2(u uint32, row int32, h uint64) (uint64, uint64) {
	a := p.tilt(u, row, h)
	return a, binary.BigEndian.Uint64(p.out[8:16])
}
