package lab

import "math/rand/v2"

// newRand returns the generator for one named stream of a run: every
// experiment draws from its own stream, so results depend on the seed only,
// never on which experiments run or in what order.
func newRand(seed, stream uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, stream))
}
