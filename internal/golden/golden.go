// Package golden pins wire formats in tests: output is compared byte for
// byte with a file under testdata, and a test run with -update rewrites the
// file instead after an intended change.
package golden

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// Check compares got with the golden file at path. With update it first
// writes got to path (creating its directory), so the comparison passes and
// the change shows in the diff of testdata. A missing file ends the test; a
// difference fails it and prints both versions.
//
// Each test package declares its own -update flag and passes its value:
// a flag registered here would clash with packages that already have one.
func Check(t testing.TB, path string, got []byte, update bool) {
	t.Helper()
	if update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (run with -update if intended)\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}
