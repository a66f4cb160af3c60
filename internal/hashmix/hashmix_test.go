package hashmix

import (
	"math/bits"
	"testing"
)

// TestSplitmix64Reference: the generator splitmix64.c builds from Mix64
// (state += golden gamma, output Mix64(state)) reproduces the reference
// output for seed 0.
func TestSplitmix64Reference(t *testing.T) {
	want := []uint64{0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4, 0x06c45d188009454f}
	var state uint64
	for i, w := range want {
		state += 0x9e3779b97f4a7c15
		if got := Mix64(state); got != w {
			t.Errorf("output %d = %#x, reference %#x", i, got, w)
		}
	}
	if Mix64(0) != 0 {
		t.Errorf("Mix64(0) = %#x, the finalizer fixes 0", Mix64(0))
	}
}

// TestAvalanche: flipping one input bit flips about half of the output
// bits, for every bit position.
func TestAvalanche(t *testing.T) {
	for bit := 0; bit < 64; bit++ {
		flips := 0
		x := uint64(0x0123456789abcdef)
		const n = 256
		for i := 0; i < n; i++ {
			x = Mix64(x + uint64(i))
			flips += bits.OnesCount64(Mix64(x) ^ Mix64(x^1<<bit))
		}
		if avg := float64(flips) / n; avg < 28 || avg > 36 {
			t.Errorf("bit %d: %.1f output bits flip on average, want about 32", bit, avg)
		}
	}
}
