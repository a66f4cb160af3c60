// Package corpustest holds the test-side rule for the prompt corpora: a test
// that needs them skips with a clear message when they are absent, except
// under CI=true, where a missing corpus means a broken checkout and fails.
// It is split from package corpus so the binaries that locate the corpora do
// not link package testing.
package corpustest

import (
	"os"
	"testing"

	"github.com/distillguard/distillguard/internal/corpus"
)

// Require returns the corpus directory (corpus.Dir), or ends the test when
// the corpus files are not there: t.Fatal when $CI is "true", else t.Skip.
func Require(t testing.TB) string {
	t.Helper()
	dir := corpus.Dir()
	if err := corpus.Check(dir); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	return dir
}
