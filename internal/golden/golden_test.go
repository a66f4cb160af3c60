package golden

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// recorder is a testing.TB that records failures; Fatal and Fatalf stop the
// calling goroutine, as the real ones do.
type recorder struct {
	testing.TB // nil: any other method panics, flagging an unexpected call
	errs       []string
	fatal      bool
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *recorder) Fatal(args ...any) {
	r.errs, r.fatal = append(r.errs, fmt.Sprint(args...)), true
	runtime.Goexit()
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.errs, r.fatal = append(r.errs, fmt.Sprintf(format, args...)), true
	runtime.Goexit()
}

// check runs Check on its own goroutine, so Goexit ends only that.
func check(r *recorder, path string, got []byte, update bool) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		Check(r, path, got, update)
	}()
	<-done
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name      string
		existing  string // "" : no file
		got       string
		update    bool
		wantFatal bool
		wantErr   string // substring of the reported failure; "" : pass
		wantFile  string // file content afterwards
	}{
		{name: "match", existing: "a\nb\n", got: "a\nb\n", wantFile: "a\nb\n"},
		{name: "differs", existing: "a\n", got: "b\n", wantErr: "differs from the golden file", wantFile: "a\n"},
		{name: "one byte longer", existing: "ab", got: "ab\n", wantErr: "run with -update", wantFile: "ab"},
		{name: "missing", got: "x", wantFatal: true, wantErr: "run with -update to create it"},
		{name: "update creates", got: "new\n", update: true, wantFile: "new\n"},
		{name: "update overwrites", existing: "old\n", got: "new\n", update: true, wantFile: "new\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "testdata", "x.golden")
			if tc.existing != "" {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(tc.existing), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			r := &recorder{}
			check(r, path, []byte(tc.got), tc.update)
			if r.fatal != tc.wantFatal {
				t.Errorf("fatal = %v, want %v (%q)", r.fatal, tc.wantFatal, r.errs)
			}
			switch {
			case tc.wantErr == "" && len(r.errs) > 0:
				t.Errorf("unexpected failure %q", r.errs)
			case tc.wantErr != "" && (len(r.errs) != 1 || !strings.Contains(r.errs[0], tc.wantErr)):
				t.Errorf("failures %q, want one mentioning %q", r.errs, tc.wantErr)
			}
			b, err := os.ReadFile(path)
			if tc.wantFile == "" {
				if err == nil {
					t.Errorf("file written: %q", b)
				}
				return
			}
			if string(b) != tc.wantFile {
				t.Errorf("file holds %q, want %q (err %v)", b, tc.wantFile, err)
			}
		})
	}
}
