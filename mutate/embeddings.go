package mutate

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"math"
)

// Embeddings: data[].embedding as a float array or as base64 float32
// (encoding_format "base64",
// https://platform.openai.com/docs/api-reference/embeddings/object),
// rounded to EmbeddingDecimals.

// embData walks the data array of an embeddings response.
func (r *Rewriter) embData(depth int) error {
	s := &r.s
	return s.eachElem(func(int) error {
		if s.peek() == '{' {
			return r.embObject(depth + 1)
		}
		return s.skipValue(depth + 1)
	})
}

// embObject walks one embedding object.
func (r *Rewriter) embObject(depth int) error {
	s := &r.s
	return s.eachMember(func(ks, ke int) error {
		if string(s.b[ks:ke]) == "embedding" {
			switch s.peek() {
			case '[':
				return r.embFloats(depth + 1)
			case '"':
				vs := s.i
				if err := s.skipString(); err != nil {
					return err
				}
				r.embBase64(vs+1, s.i-1)
				return nil
			}
		}
		return s.skipValue(depth + 1)
	})
}

// embFloats rounds the numbers of a float array embedding on their text.
func (r *Rewriter) embFloats(depth int) error {
	s := &r.s
	k := r.embRound
	return s.eachElem(func(int) error {
		vs := s.i
		if c := s.peek(); c == '-' || isDigit(c) {
			if err := s.skipNumber(); err != nil {
				return err
			}
			r.roundNum(vs, s.i, k)
			return nil
		}
		return s.skipValue(depth + 1)
	})
}

// embBase64 rounds a base64 embedding (little-endian float32, the OpenAI
// encoding_format "base64") in place: same length, so a client's decoder
// sees the same dimension. Strings with escapes or that are not canonical
// padded base64 of whole float32s are left alone.
func (r *Rewriter) embBase64(s, e int) {
	src := r.s.b[s:e]
	if bytes.IndexByte(src, '\\') >= 0 {
		return
	}
	enc := base64.StdEncoding
	need := enc.DecodedLen(len(src))
	if cap(r.b64) < need {
		r.b64 = make([]byte, need)
	}
	buf := r.b64[:need]
	n, err := enc.Decode(buf, src)
	if err != nil || n%4 != 0 || enc.EncodedLen(n) != len(src) {
		return
	}
	buf = buf[:n]
	p := pow10[r.embRound]
	for i := 0; i < n; i += 4 {
		f := math.Float32frombits(binary.LittleEndian.Uint32(buf[i:]))
		x := float64(f) * p
		if math.IsNaN(x) || math.Abs(x) >= 1<<52 {
			continue
		}
		g := float32(math.Round(x) / p)
		if g == 0 {
			g = 0
		}
		binary.LittleEndian.PutUint32(buf[i:], math.Float32bits(g))
	}
	r.replaceLit(s, e, enc.AppendEncode(r.litBuf(), buf))
}
