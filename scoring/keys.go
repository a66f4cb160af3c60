package scoring

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/bits"
	"unsafe"
)

// Every secret or random choice the engine makes is derived from one root
// key: the session-id MAC key, the key of the token, shingle, template,
// cohort and link hashes, and the seeds of the samplers that pick eviction
// victims. The root is extracted from Config.Secret when it is set
// (HMAC-SHA256 keyed with a fixed label, the extract step of HKDF, RFC 5869
// section 2.2), else taken from Options.Seed, else drawn at random per
// process. Each purpose then gets its own key by HMAC(root, label), the
// expand step. Verdicts are therefore a deterministic function of the
// traffic and the secret: two replicas or two restarts with the same secret
// hash alike.
type keyMaterial struct {
	root []byte
}

// rootLabel is the HKDF salt of the root extraction.
const rootLabel = "distillguard/scoring/root/v2"

func newKeyMaterial(secret string, seed []byte) (keyMaterial, error) {
	if secret != "" {
		m := hmac.New(sha256.New, []byte(rootLabel))
		m.Write([]byte(secret))
		return keyMaterial{root: m.Sum(nil)}, nil
	}
	if len(seed) > 0 {
		return keyMaterial{root: append([]byte(nil), seed...)}, nil
	}
	root := make([]byte, 32)
	if _, err := rand.Read(root); err != nil {
		return keyMaterial{}, fmt.Errorf("random key: %w", err)
	}
	return keyMaterial{root: root}, nil
}

// derive returns HMAC-SHA256(root, label): independent 32-byte keys per
// purpose, none of which reveals the root or another.
func (k keyMaterial) derive(label string) []byte {
	m := hmac.New(sha256.New, k.root)
	m.Write([]byte("distillguard/scoring/"))
	m.Write([]byte(label))
	return m.Sum(nil)
}

// seeds returns two 64-bit words derived for label (for math/rand/v2 PCG).
func (k keyMaterial) seeds(label string) (uint64, uint64) {
	b := k.derive(label)
	return binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[8:])
}

// hashKey keys the 64-bit hashes of tokens and links. The function is the
// keyed wyhash construction the Go runtime uses for map hashing where AES
// instructions are missing (runtime/hash64.go, memhashFallback): with the
// four key words secret, hash values, and so bloom-filter positions and
// shingle sampling, cannot be predicted or collided offline. Unlike
// hash/maphash it can be keyed from bytes, which replays need; it is as
// fast as maphash on short tokens and does not allocate.
type hashKey struct {
	k [4]uint64
}

func newHashKey(b []byte) hashKey {
	var h hashKey
	for i := range h.k {
		// Odd key words, as the runtime makes its hashkey: a multiplier
		// that is even would drop a bit.
		h.k[i] = binary.LittleEndian.Uint64(b[8*i:]) | 1
	}
	return h
}

// m5 is the runtime's length-mixing constant.
const m5 = 0x1d8e4e27c47d124f

func mum(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

func r4(p []byte) uint64 { return uint64(binary.LittleEndian.Uint32(p)) }
func r8(p []byte) uint64 { return binary.LittleEndian.Uint64(p) }

// sum hashes p under the key, continuing from seed (0 to start; pass a
// previous result to hash a sequence of fields without copying them into
// one buffer).
func (h *hashKey) sum(seed uint64, p []byte) uint64 {
	var a, b uint64
	seed ^= h.k[0]
	s := len(p)
	switch {
	case s == 0:
	case s < 4:
		a = uint64(p[0]) | uint64(p[s>>1])<<8 | uint64(p[s-1])<<16
	case s == 4:
		a = r4(p)
		b = a
	case s < 8:
		a = r4(p)
		b = r4(p[s-4:])
	case s == 8:
		a = r8(p)
		b = a
	case s <= 16:
		a = r8(p)
		b = r8(p[s-8:])
	default:
		i, l := 0, s
		if l > 48 {
			seed1, seed2 := seed, seed
			for ; l > 48; l -= 48 {
				seed = mum(r8(p[i:])^h.k[1], r8(p[i+8:])^seed)
				seed1 = mum(r8(p[i+16:])^h.k[2], r8(p[i+24:])^seed1)
				seed2 = mum(r8(p[i+32:])^h.k[3], r8(p[i+40:])^seed2)
				i += 48
			}
			seed ^= seed1 ^ seed2
		}
		for ; l > 16; l -= 16 {
			seed = mum(r8(p[i:])^h.k[1], r8(p[i+8:])^seed)
			i += 16
		}
		// The last 16 bytes, overlapping what was already mixed when
		// fewer remain.
		a = r8(p[s-16:])
		b = r8(p[s-8:])
	}
	return mum(m5^uint64(s), mum(a^h.k[1], b^seed))
}

// sumString is sum over the bytes of s (read in place, not copied).
func (h *hashKey) sumString(seed uint64, s string) uint64 {
	return h.sum(seed, unsafe.Slice(unsafe.StringData(s), len(s)))
}
