package envoytest

import "math/rand/v2"

// Chunker splits a body into the pieces Envoy would see arrive (HTTP/1
// chunks, HTTP/2 DATA frames). The pieces must concatenate to the body;
// empty pieces are allowed (Envoy can deliver an empty data callback).
type Chunker func(body []byte) [][]byte

// Whole delivers the body in one piece.
func Whole() Chunker {
	return func(b []byte) [][]byte {
		if len(b) == 0 {
			return nil
		}
		return [][]byte{b}
	}
}

// Fixed delivers pieces of n bytes (the last may be shorter).
func Fixed(n int) Chunker {
	if n < 1 {
		n = 1
	}
	return func(b []byte) [][]byte {
		var out [][]byte
		for len(b) > 0 {
			k := min(n, len(b))
			out = append(out, b[:k])
			b = b[k:]
		}
		return out
	}
}

// Bytes delivers one byte per piece.
func Bytes() Chunker { return Fixed(1) }

// Random delivers pieces of 0..max bytes chosen by a generator seeded with
// seed; with empties false, pieces are at least one byte. The same seed and
// body always give the same split.
func Random(seed uint64, max int, empties bool) Chunker {
	if max < 1 {
		max = 1
	}
	return func(b []byte) [][]byte {
		r := rand.New(rand.NewPCG(seed, uint64(len(b))))
		var out [][]byte
		for len(b) > 0 {
			lo := 1
			if empties {
				lo = 0
			}
			k := lo + r.IntN(max-lo+1)
			k = min(k, len(b))
			out = append(out, b[:k])
			b = b[k:]
		}
		if empties && r.IntN(2) == 0 {
			out = append(out, b[:0]) // a trailing empty piece carrying end_of_stream
		}
		return out
	}
}

// At splits the body at the given offsets (out-of-range and repeated
// offsets give empty pieces, which is the point of using it).
func At(offsets ...int) Chunker {
	return func(b []byte) [][]byte {
		var out [][]byte
		prev := 0
		for _, o := range offsets {
			o = max(prev, min(o, len(b)))
			out = append(out, b[prev:o])
			prev = o
		}
		return append(out, b[prev:])
	}
}
