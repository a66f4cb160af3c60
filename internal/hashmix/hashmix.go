// Package hashmix holds the 64-bit finalizer that mutate and scoring both
// use to spread hash bits: one definition, so the perturbation keys and the
// session-risk sketches cannot drift apart by a copy edited in one place.
package hashmix

// Mix64 is the splitmix64 finalizer (Steele, Lea, Flood, "Fast Splittable
// Pseudorandom Number Generators", OOPSLA 2014), with the shift/multiply
// constants of Stafford's "Mix13" (Better Bit Mixing, 2011) that Java's
// SplittableRandom and Vigna's reference splitmix64.c use
// (https://prng.di.unimi.it/splitmix64.c). It is a bijection on uint64 and
// every input bit affects every output bit.
func Mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
