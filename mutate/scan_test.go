package mutate

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

func TestValidTopAgreesWithEncodingJSON(t *testing.T) {
	docs := []string{
		`{}`, ` { } `, `{"a":1}`, `{"a":[]}`, `{"a":[1,2,{"b":null}]}`, `{"a":"\u00e9\n\"\\\/\b\f\r\t"}`,
		`{"a":-0}`, `{"a":-0.0e+0}`, `{"a":1E5}`, `{"a":true,"b":false}`, "{\"a\":\"\xff\"}",
		`{"a":01}`, `{"a":-}`, `{"a":1.}`, `{"a":.1}`, `{"a":1e}`, `{"a":+1}`, `{"a":NaN}`, `{"a":"\u12"}`, `{"a":"\x"}`,
		"{\"a\":\"\x01\"}", `{"a":tru}`, `{"a":nul}`, `{"a" 1}`, `{a:1}`, `{"a":1,}`, `{,}`, `{"a":[1,]}`, `{"a":[,1]}`,
		`{"a":1}}`, `{"a":1`, `{"a":"`, `{`, `}`, `{"a":[}`, `{"a":{]}`, `{"a":1} 2`, "{\"a\":1}\n", `{"":""}`,
		`{"a":"` + strings.Repeat("x", 100) + `\"` + strings.Repeat("y", 9) + `"}`,
		// Arrays of integers (token bytes) take a fast path in skipValue.
		`{"a":[72,101,108]}`, `{"a":[9]}`, `{"a":[255,0,1]}`, `{"a":[12 ,3]}`, `{"a":[12, 3]}`, `{"a":[1 ]}`,
		`{"a":[1.5,2]}`, `{"a":[1e5,2]}`, `{"a":[10,-1]}`, `{"a":[1,[2]]}`, `{"a":[1,"x"]}`, `{"a":[1,null]}`,
		`{"a":[1,]}`, `{"a":[1,,2]}`, `{"a":[01]}`, `{"a":[1,01]}`, `{"a":[1 2]}`, `{"a":[1`, `{"a":[1,2`, `{"a":[12`,
		`{"a":[1]`, `{"a":[1x]}`, `{"a":[1,2]x}`, `{"a":[1],"b":[2,3]}`, `{"a":[1}`,
	}
	for _, d := range docs {
		err := validTop([]byte(d))
		if (err == nil) != json.Valid([]byte(d)) {
			t.Errorf("%q: validTop %v, json.Valid %v", d, err, json.Valid([]byte(d)))
		}
	}
}

func TestStringScanAllPositions(t *testing.T) {
	// The SWAR fast path must find a quote, backslash or control byte at
	// every offset within an 8-byte word.
	for n := 0; n < 40; n++ {
		for _, special := range []string{`\"`, `\\`, `\u00e9`, "\x1f", "\x7f", "\xc3\xa9", "\"x"} {
			s := `{"k":"` + strings.Repeat("a", n) + special + strings.Repeat("b", n%9) + `"}`
			if err := validTop([]byte(s)); (err == nil) != json.Valid([]byte(s)) {
				t.Fatalf("%q: %v", s, err)
			}
		}
	}
}

func TestParseNumber(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	cases := []string{"0", "-0", "1", "-1.5", "0.000123", "-9999", "123456789012345", "1234567890123456789", "-0.1234567890123456789",
		"1e-7", "-1.23456E+1", "1.7976931348623157e308", "5e-324", "0.1", "0.30000000000000004"}
	for i := 0; i < 2000; i++ {
		v := -rng.Float64() * math.Pow10(rng.IntN(8)-4)
		cases = append(cases, strconv.FormatFloat(v, 'f', rng.IntN(12), 64), strconv.FormatFloat(v, 'g', -1, 64))
	}
	for _, c := range cases {
		want, _ := strconv.ParseFloat(c, 64)
		got, ok := parseNumber([]byte(c))
		if !ok || got != want {
			t.Fatalf("%s: got %v %v, want %v", c, got, ok, want)
		}
	}
	if _, ok := parseNumber([]byte("1e999")); ok {
		t.Errorf("overflow accepted")
	}
}

func TestAppendRounded(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for i := 0; i < 20000; i++ {
		x := -rng.Float64() * math.Pow10(rng.IntN(10)-3)
		if i%7 == 0 {
			x = -x
		}
		k := rng.IntN(13)
		m, ok := roundTo(x, k)
		if !ok {
			continue
		}
		want := strconv.AppendFloat(nil, float64(m)/pow10[k], 'f', -1, 64)
		if string(want) == "-0" {
			want = []byte("0")
		}
		if got := appendRounded(nil, x, k); string(got) != string(want) {
			t.Fatalf("x=%v k=%d: got %s want %s", x, k, got, want)
		}
	}
	for _, c := range []struct {
		x    float64
		k    int
		want string
	}{{-0.004, 2, "0"}, {-0.005, 2, "-0.01"}, {math.Copysign(0, -1), -1, "0"}, {-1.25, 1, "-1.3"}, {-9999, 2, "-9999"}, {-1e-300, -1, "-" + "0." + strings.Repeat("0", 299) + "1"}} {
		if got := string(appendRounded(nil, c.x, c.k)); got != c.want {
			t.Errorf("appendRounded(%v, %d) = %s, want %s", c.x, c.k, got, c.want)
		}
	}
}

func TestRoundText(t *testing.T) {
	tests := []struct {
		in      string
		k       int
		want    string
		changed bool
		ok      bool
	}{
		{"-0.123456", 2, "-0.12", true, true},
		{"-0.125", 2, "-0.13", true, true}, // half away from zero
		{"-1.005", 2, "-1.01", true, true}, // exact on the digits (float64 says -1.00)
		{"-0.004", 2, "0", true, true},
		{"-0.50", 1, "-0.5", false, true},
		{"-0.5000001", 1, "-0.5", true, true},
		{"-9999", 2, "-9999", false, true},
		{"0", 0, "0", false, true},
		{"-0.96", 1, "-1", true, true},
		{"12.3456", 0, "12", true, true},
		{"-1e-7", 2, "", false, false},
		{"-1234567890123456789", 0, "", false, false},
	}
	for _, tt := range tests {
		m, changed, ok := roundText([]byte(tt.in), tt.k)
		if ok != tt.ok || ok && (string(appendScaled(nil, m, tt.k)) != tt.want || changed != tt.changed) {
			t.Errorf("roundText(%s, %d) = %d %v %v", tt.in, tt.k, m, changed, ok)
		}
	}
	// Away from midpoints the text and float64 paths agree.
	rng := rand.New(rand.NewPCG(9, 10))
	for i := 0; i < 20000; i++ {
		x := -rng.Float64() * math.Pow10(rng.IntN(6)-2)
		s := strconv.FormatFloat(x, 'f', -1, 64)
		k := rng.IntN(8)
		m, _, ok := roundText([]byte(s), k)
		if !ok {
			continue
		}
		y := x * pow10[k]
		if math.Abs(y-math.Trunc(y)) > 0.4999 && math.Abs(y-math.Trunc(y)) < 0.5001 {
			continue
		}
		if got, want := string(appendScaled(nil, m, k)), string(appendRounded(nil, x, k)); got != want {
			t.Fatalf("%s k=%d: text %s, float %s", s, k, got, want)
		}
	}
}

// validTop validates a whole document whose top-level value must be an
// object, with nothing but whitespace after it: the reference the
// single-pass member scans (scanTop, topMembers) are checked against.
func validTop(b []byte) error {
	var s scanner
	s.reset(b)
	s.ws()
	if s.peek() != '{' {
		return errNotObject
	}
	if err := s.skipValue(0); err != nil {
		return err
	}
	s.ws()
	if s.i != len(s.b) {
		return errTrailing
	}
	return nil
}
