package scoring

import (
	"fmt"
	"hash/maphash"
	"math/bits"
	"math/rand/v2"
	"testing"
)

func keyFor(label string) hashKey {
	return newHashKey(keyMaterial{root: []byte("keys-test-root")}.derive(label))
}

// TestHashKeyEveryBitCounts flips every input bit at every length from 0 to
// 130 bytes (all branches of sum, including several 48-byte rounds) and
// requires a different hash each time, the same hash for the same key and
// input, and a different hash under another key.
func TestHashKeyEveryBitCounts(t *testing.T) {
	k1, k2 := keyFor("a"), keyFor("b")
	rng := rand.New(rand.NewPCG(1, 2))
	for n := 0; n <= 130; n++ {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		base := k1.sum(0, p)
		if again := k1.sum(0, append([]byte(nil), p...)); again != base {
			t.Fatalf("len %d: same key and input hash to %x and %x", n, base, again)
		}
		if got := k1.sumString(0, string(p)); got != base {
			t.Fatalf("len %d: sumString %x != sum %x", n, got, base)
		}
		if k2.sum(0, p) == base {
			t.Errorf("len %d: two keys give the same hash %x", n, base)
		}
		if k1.sum(1, p) == base {
			t.Errorf("len %d: the seed does not change the hash", n)
		}
		for i := range p {
			for b := 0; b < 8; b++ {
				p[i] ^= 1 << b
				if k1.sum(0, p) == base {
					t.Errorf("len %d: flipping bit %d of byte %d leaves the hash unchanged", n, b, i)
				}
				p[i] ^= 1 << b
			}
		}
	}
}

// TestHashKeyBoundaries: lengths and field boundaries are part of the hash.
func TestHashKeyBoundaries(t *testing.T) {
	k := keyFor("boundaries")
	chain := func(parts ...string) uint64 {
		var h uint64
		for _, s := range parts {
			h = k.sumString(h, s)
		}
		return h
	}
	for _, tc := range []struct{ a, b []string }{
		{[]string{""}, []string{"\x00"}},
		{[]string{"\x00"}, []string{"\x00\x00"}},
		{[]string{"abc"}, []string{"abc\x00"}},
		{[]string{"ab", "c"}, []string{"a", "bc"}},
		{[]string{"client", "", "x"}, []string{"client", "x", ""}},
	} {
		if chain(tc.a...) == chain(tc.b...) {
			t.Errorf("%q and %q hash alike", tc.a, tc.b)
		}
	}
}

// TestHashKeyDistribution: no collisions among 200,000 similar tokens, and
// every output bit set about half the time (shingle sampling counts
// trailing zero bits; bloom positions use all of them).
func TestHashKeyDistribution(t *testing.T) {
	k := keyFor("distribution")
	const n = 200_000
	seen := make(map[uint64]int, n)
	var ones [64]int
	for i := 0; i < n; i++ {
		h := k.sumString(0, fmt.Sprintf("tok%d", i))
		if j, dup := seen[h]; dup {
			t.Fatalf("tokens %d and %d collide", j, i)
		}
		seen[h] = i
		for b := 0; b < 64; b++ {
			ones[b] += int(h >> b & 1)
		}
	}
	for b, c := range ones {
		if share := float64(c) / n; share < 0.49 || share > 0.51 {
			t.Errorf("bit %d set in %.3f of hashes", b, share)
		}
	}
	// Trailing zeros drive shingle sampling: about n/2^(z+1) at level z.
	var levels [8]int
	for h := range seen {
		if z := bits.TrailingZeros64(h); z < len(levels) {
			levels[z]++
		}
	}
	for z, c := range levels {
		want := float64(n) / float64(uint64(2)<<z)
		if f := float64(c) / want; f < 0.85 || f > 1.15 {
			t.Errorf("%d hashes with %d trailing zeros, want about %.0f", c, z, want)
		}
	}
}

// BenchmarkTokenHash compares the keyed token hash with hash/maphash on
// the short inputs it mostly sees.
func BenchmarkTokenHash(b *testing.B) {
	toks := [][]byte{[]byte("below"), []byte("is"), []byte("an"), []byte("instruction"), []byte("that"),
		[]byte("describes"), []byte("task"), []byte("0"), []byte("appropriately"), []byte("the")}
	var sink uint64
	b.Run("hashKey", func(b *testing.B) {
		k := keyFor("bench")
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			sink += k.sum(0, toks[i%len(toks)])
		}
	})
	b.Run("maphash", func(b *testing.B) {
		s := maphash.MakeSeed()
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			sink += maphash.Bytes(s, toks[i%len(toks)])
		}
	})
	_ = sink
}
