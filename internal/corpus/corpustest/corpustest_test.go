package corpustest

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/distillguard/distillguard/internal/corpus"
)

// recorder is a testing.TB that records how Require ended the test. Skip
// and Fatal stop the calling goroutine, as the real ones do.
type recorder struct {
	testing.TB // nil: any other method panics, flagging an unexpected call
	skipped    bool
	failed     bool
	msg        string
}

func (r *recorder) Helper() {}

func (r *recorder) Skip(args ...any) {
	r.skipped, r.msg = true, fmt.Sprint(args...)
	runtime.Goexit()
}

func (r *recorder) Fatal(args ...any) {
	r.failed, r.msg = true, fmt.Sprint(args...)
	runtime.Goexit()
}

// require runs Require on its own goroutine, so Goexit ends only that.
func require(r *recorder) string {
	done := make(chan string)
	go func() {
		var dir string
		defer func() { done <- dir }()
		dir = Require(r)
	}()
	return <-done
}

func TestRequire(t *testing.T) {
	full := t.TempDir()
	for _, n := range corpus.Files() {
		if err := os.WriteFile(filepath.Join(full, n), []byte("{}\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	empty := t.TempDir()
	absent := filepath.Join(t.TempDir(), "absent")

	tests := []struct {
		name        string
		dir, ci     string
		wantDir     string
		wantSkip    bool
		wantFail    bool
		wantMessage string
	}{
		{name: "present", dir: full, wantDir: full},
		{name: "present under CI", dir: full, ci: "true", wantDir: full},
		{name: "absent dir, not CI", dir: absent, wantSkip: true, wantMessage: absent},
		{name: "absent dir, CI=false", dir: absent, ci: "false", wantSkip: true, wantMessage: absent},
		{name: "absent dir, CI=true", dir: absent, ci: "true", wantFail: true, wantMessage: absent},
		{name: "empty dir, not CI", dir: empty, wantSkip: true, wantMessage: corpus.DialogsFile},
		{name: "empty dir, CI=true", dir: empty, ci: "true", wantFail: true, wantMessage: corpus.EnvVar},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(corpus.EnvVar, tc.dir)
			t.Setenv("CI", tc.ci)
			r := &recorder{}
			got := require(r)
			if r.skipped != tc.wantSkip || r.failed != tc.wantFail {
				t.Fatalf("skipped=%v failed=%v (%s), want skipped=%v failed=%v", r.skipped, r.failed, r.msg, tc.wantSkip, tc.wantFail)
			}
			if got != tc.wantDir {
				t.Errorf("Require() = %q, want %q", got, tc.wantDir)
			}
			if !strings.Contains(r.msg, tc.wantMessage) {
				t.Errorf("message %q does not mention %q", r.msg, tc.wantMessage)
			}
		})
	}
}
