package corpus

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeCorpus creates the given corpus files (empty) in dir.
func writeCorpus(t *testing.T, dir string, names ...string) {
	t.Helper()
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestDir(t *testing.T) {
	// root/go.mod with a package two levels down, and a tree with no go.mod
	// at all (a temporary directory has none above it).
	root, err := filepath.EvalSymlinks(t.TempDir()) // Getwd reports the resolved path
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "go.mod"), []byte("module x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	nested := filepath.Join(root, "a", "b")
	if err := os.MkdirAll(nested, 0o755); err != nil {
		t.Fatal(err)
	}
	loose, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(loose), "go.mod")); err == nil {
		t.Skip("the temporary directory lies inside a Go module")
	}

	tests := []struct {
		name string
		env  string
		wd   string
		want string
	}{
		{"env set wins", "/some/where", nested, "/some/where"},
		{"env set, relative", "corpora", loose, "corpora"},
		{"module root from a subdirectory", "", nested, filepath.Join(root, "..", "shared", "data")},
		{"module root itself", "", root, filepath.Join(root, "..", "shared", "data")},
		{"no go.mod: relative to wd", "", loose, filepath.Join(loose, "..", "shared", "data")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvVar, tc.env)
			t.Chdir(tc.wd)
			if got := Dir(); got != tc.want {
				t.Errorf("Dir() = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestDirThisModule checks the discovery against the real tree: from this
// package the module root is two levels up.
func TestDirThisModule(t *testing.T) {
	t.Setenv(EnvVar, "")
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(wd, "..", "..", "..", "shared", "data")
	if got := Dir(); filepath.Clean(got) != filepath.Clean(want) {
		t.Errorf("Dir() = %q, want %q", got, want)
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name    string
		files   []string
		dirFile string // created as a directory instead of a file
		wantErr bool
	}{
		{"all files", Files(), "", false},
		{"none", nil, "", true},
		{"dialogs missing", []string{QuestionsFile, TasksFile}, "", true},
		{"tasks missing", []string{DialogsFile, QuestionsFile}, "", true},
		{"a directory in place of a file", []string{DialogsFile, QuestionsFile}, TasksFile, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeCorpus(t, dir, tc.files...)
			if tc.dirFile != "" {
				if err := os.Mkdir(filepath.Join(dir, tc.dirFile), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			err := Check(dir)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Check() = %v, want error %v", err, tc.wantErr)
			}
			if err == nil {
				return
			}
			if !errors.Is(err, ErrMissing) {
				t.Errorf("error %v does not wrap ErrMissing", err)
			}
			for _, s := range []string{dir, EnvVar} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
	if err := Check(filepath.Join(t.TempDir(), "nope")); !errors.Is(err, ErrMissing) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("absent directory: %v, want ErrMissing wrapping os.ErrNotExist", err)
	}
}
