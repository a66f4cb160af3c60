package tokens

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"The big dog", []string{"The", " big", " dog"}},
		{"wonderful day, isn't it", []string{"wond", "erful", " day", ",", " isn", "'", "t", " it"}},
		{"  café\n", []string{" ", " café", "\n"}},
		{"", nil},
	} {
		got := Split(tc.in)
		if strings.Join(got, "|") != strings.Join(tc.want, "|") || strings.Join(got, "") != tc.in {
			t.Errorf("Split(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func FuzzSplit(f *testing.F) {
	f.Add("The big dog bought a huge car — perhaps.")
	f.Fuzz(func(t *testing.T, s string) {
		// Invalid UTF-8 comes back as U+FFFD, as []rune reads it.
		if utf8.ValidString(s) && strings.Join(Split(s), "") != s {
			t.Fatalf("pieces of %q do not concatenate to it", s)
		}
	})
}
