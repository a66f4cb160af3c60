package mutate

import (
	"math"
	"strconv"
	"unsafe"
)

// Numbers: parsing the JSON numbers the scanner validated, and printing
// rounded ones in the shortest plain decimal form, on the text where that
// is exact (roundText) and without strconv's cost on the common paths.

// parseNumber parses a JSON number already validated by the scanner.
func parseNumber(b []byte) (float64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	// Fast path: up to 15 significant digits with a plain fraction is exact
	// as integer / 10^k, the same trick strconv uses before Eisel-Lemire.
	neg := false
	i := 0
	if b[0] == '-' {
		neg = true
		i = 1
	}
	var m uint64
	digits, frac := 0, -1
	for ; i < len(b); i++ {
		c := b[i]
		if isDigit(c) {
			if digits >= 15 {
				return parseNumberSlow(b)
			}
			m = m*10 + uint64(c-'0')
			if m != 0 || frac >= 0 {
				digits++
			}
			if frac >= 0 {
				frac++
			}
			continue
		}
		if c == '.' && frac < 0 {
			frac = 0
			continue
		}
		return parseNumberSlow(b)
	}
	if frac < 0 {
		frac = 0
	}
	if frac > 22 {
		return parseNumberSlow(b)
	}
	v := float64(m) / pow10[frac]
	if neg {
		v = -v
	}
	return v, true
}

func parseNumberSlow(b []byte) (float64, bool) {
	v, err := strconv.ParseFloat(unsafe.String(unsafe.SliceData(b), len(b)), 64)
	if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, false
	}
	return v, true
}

// pow10 holds the powers of ten that float64 represents exactly.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
	1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// roundTo rounds x to k decimals (k in [0, 22]) and returns the scaled
// integer m with x ~= m / 10^k; ok is false when x*10^k is too large to be
// rounded exactly (then x is left as it is).
func roundTo(x float64, k int) (m int64, ok bool) {
	y := x * pow10[k]
	if math.Abs(y) >= 1<<52 || math.IsNaN(y) {
		return 0, false
	}
	return int64(math.Round(y)), true
}

// appendScaled appends m / 10^k in the shortest plain decimal form:
// trailing fractional zeros dropped, never "-0". For |m| < 10^15 this is
// exactly what strconv.AppendFloat(float64(m)/10^k, 'f', -1, 64) prints,
// without its cost.
func appendScaled(dst []byte, m int64, k int) []byte {
	if m == 0 {
		return append(dst, '0')
	}
	if m >= 1e15 || m <= -1e15 {
		return strconv.AppendFloat(dst, float64(m)/pow10[k], 'f', -1, 64)
	}
	if m < 0 {
		dst = append(dst, '-')
		m = -m
	}
	u := uint64(m)
	for k > 0 && u%10 == 0 {
		u /= 10
		k--
	}
	var buf [24]byte
	n := len(buf)
	for i := 0; i < k; i++ {
		n--
		buf[n] = byte('0' + u%10)
		u /= 10
	}
	if k > 0 {
		n--
		buf[n] = '.'
	}
	if u == 0 {
		n--
		buf[n] = '0'
	}
	for u > 0 {
		n--
		buf[n] = byte('0' + u%10)
		u /= 10
	}
	return append(dst, buf[n:]...)
}

// appendRounded appends x rounded to k decimals (k < 0: unrounded,
// shortest form). Never prints "-0".
func appendRounded(dst []byte, x float64, k int) []byte {
	if k >= 0 {
		if m, ok := roundTo(x, k); ok {
			return appendScaled(dst, m, k)
		}
	}
	if x == 0 {
		x = 0 // drop the sign of -0
	}
	return strconv.AppendFloat(dst, x, 'f', -1, 64)
}

// parseUint parses a JSON number that is a non-negative integer (possibly
// written with a zero fraction or an exponent, e.g. 2.0 or 1e1).
func parseUint(b []byte) (uint64, bool) {
	v, ok := parseNumber(b)
	if !ok || v < 0 || v != math.Trunc(v) || v > 1<<53 {
		return 0, false
	}
	return uint64(v), true
}

// roundText rounds the plain decimal number b (no exponent) to k decimals
// on its digits, half away from zero, and returns the scaled integer m
// (value ~= m / 10^k) and whether rounding changed the value. Working on
// the text is exact (no binary representation error at the midpoints) and
// avoids parsing. ok is false for exponent forms or more than 18 digits;
// the caller then goes through float64.
func roundText(b []byte, k int) (m int64, changed, ok bool) {
	i := 0
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		i = 1
	}
	var u uint64
	nd := 0 // significant digits in u; at most 18 fit
	for ; i < len(b) && isDigit(b[i]); i++ {
		u = u*10 + uint64(b[i]-'0')
		if u != 0 {
			nd++
		}
	}
	fd := 0
	up := false
	if i < len(b) && b[i] == '.' {
		// The k digits kept, then the one that rounds, then the rest,
		// which only say whether anything was cut (logprobs come with
		// 15-17 significant digits: most of them are cut).
		for i++; fd < k && i < len(b) && isDigit(b[i]); i++ {
			u = u*10 + uint64(b[i]-'0')
			if u != 0 {
				nd++
			}
			fd++
		}
		if fd == k && i < len(b) && isDigit(b[i]) {
			up = b[i] >= '5'
			changed = b[i] != '0'
			fd++
			for i++; !changed && i < len(b) && isDigit(b[i]); i++ {
				changed = b[i] != '0'
			}
			for i < len(b) && isDigit(b[i]) {
				i++
			}
		}
	}
	if i != len(b) {
		return 0, false, false // exponent
	}
	for ; fd < k; fd++ {
		u *= 10
		if u != 0 {
			nd++
		}
	}
	if nd > 18 {
		return 0, false, false
	}
	if up {
		u++
	}
	m = int64(u)
	if neg {
		m = -m
	}
	return m, changed, true
}
