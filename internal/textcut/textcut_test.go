package textcut

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestPrefix(t *testing.T) {
	for _, tc := range []struct {
		s     string
		limit int
		want  string
	}{
		{"hello", 0, ""},
		{"hello", -1, ""},
		{"", 0, ""},
		{"hello", 5, "hello"},
		{"hello", 9, "hello"},
		{"hello", 3, "hel"},
		{"über", 1, ""}, // ü is two bytes
		{"über", 2, "ü"},
		{"aü", 2, "a"},
		{"a€b", 3, "a"}, // € is three bytes
		{"a€b", 4, "a€"},
		{"😀x", 3, ""}, // four bytes
		{"😀x", 4, "😀"},
	} {
		if got := Prefix(tc.s, tc.limit); got != tc.want {
			t.Errorf("Prefix(%q, %d) = %q, want %q", tc.s, tc.limit, got, tc.want)
		}
	}
}

func FuzzPrefix(f *testing.F) {
	f.Add("a€b😀", 3)
	f.Fuzz(func(t *testing.T, s string, limit int) {
		got := Prefix(s, limit)
		if !strings.HasPrefix(s, got) {
			t.Fatalf("%q is not a prefix of %q", got, s)
		}
		if len(got) > max(limit, 0) {
			t.Fatalf("%d bytes kept of a budget of %d", len(got), limit)
		}
		// In valid text the cut drops at most one partial rune: the rest
		// stays valid and is fewer than utf8.UTFMax bytes under the
		// budget. (Invalid text backs off over every continuation byte.)
		if !utf8.ValidString(s) {
			return
		}
		if !utf8.ValidString(got) {
			t.Fatalf("valid %q cut to invalid %q", s, got)
		}
		if len(s) > limit && limit-len(got) >= utf8.UTFMax {
			t.Fatalf("cut %q to %d bytes at a budget of %d", s, len(got), limit)
		}
	})
}
