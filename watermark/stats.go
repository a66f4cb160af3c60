package watermark

import "math"

// normalUpper is 1 - Phi(z), accurate in the far tail (erfc, not 1-erf).
func normalUpper(z float64) float64 { return 0.5 * math.Erfc(z/math.Sqrt2) }
