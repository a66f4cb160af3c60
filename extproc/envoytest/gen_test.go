package envoytest

import "testing"

// TestAppendTokenFields: the shared logprob entry prefix, with the float
// precision of each generator (shortest round-trip form, and the 8
// significant digits bench uses for float32-like values) and JSON escapes.
func TestAppendTokenFields(t *testing.T) {
	cases := []struct {
		tok    string
		lp     float64
		digits int
		want   string
	}{
		{" the", -0.000123456789, -1, `{"token":" the","logprob":-0.000123456789,"bytes":[32,116,104,101]`},
		{" the", -0.000123456789, 8, `{"token":" the","logprob":-0.00012345679,"bytes":[32,116,104,101]`},
		{"\n\n", -1.9361265e-07, 8, `{"token":"\n\n","logprob":-1.9361265e-07,"bytes":[10,10]`},
		{`"\`, 0, -1, `{"token":"\"\\","logprob":0,"bytes":[34,92]`},
		{"é", -2.5, 8, `{"token":"é","logprob":-2.5,"bytes":[195,169]`},
		{"", -1, -1, `{"token":"","logprob":-1,"bytes":[]`},
	}
	for _, tc := range cases {
		if got := string(AppendTokenFields([]byte("x"), tc.tok, tc.lp, tc.digits)); got != "x"+tc.want {
			t.Errorf("AppendTokenFields(%q, %v, %d) = %s, want %s", tc.tok, tc.lp, tc.digits, got, "x"+tc.want)
		}
	}
}
