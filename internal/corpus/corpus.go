// Package corpus locates the prompt corpora that the replay tests, the
// attack lab and the load generator draw real prompts from. The corpora are
// not part of the repository (see shared/data/README.md beside it), so every
// user resolves their directory the same way: $DISTILLGUARD_CORPUS when set,
// else ../shared/data next to the module root.
package corpus

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// EnvVar names the environment variable that overrides the corpus directory.
const EnvVar = "DISTILLGUARD_CORPUS"

// Corpus file names inside the corpus directory (see shared/data/README.md).
const (
	// DialogsFile holds HH-RLHF conversations, one {"turns":[...]} a line.
	DialogsFile = "hh_rlhf_dialogs.jsonl"
	// QuestionsFile holds GSM8K test questions, one {"question":...} a line.
	QuestionsFile = "gsm8k_test.jsonl"
	// TasksFile holds self-instruct seed tasks, one {"instruction","input"} a line.
	TasksFile = "selfinstruct_seed_tasks.jsonl"
)

// Files returns the corpus file names, in the order the generators read them.
func Files() []string {
	return []string{DialogsFile, QuestionsFile, TasksFile}
}

// Dir resolves the corpus directory: $DISTILLGUARD_CORPUS when set, otherwise
// ../shared/data relative to the module root (the nearest directory holding
// go.mod, searched upwards from the working directory), or relative to the
// working directory when no go.mod is found. It does not check that the
// directory exists; see Check.
func Dir() string {
	wd, err := os.Getwd()
	if err != nil {
		wd = "."
	}
	return dirFrom(os.Getenv(EnvVar), wd)
}

// dirFrom is Dir with its inputs explicit.
func dirFrom(env, wd string) string {
	if env != "" {
		return env
	}
	for d := wd; ; {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return filepath.Join(d, "..", "shared", "data")
		}
		parent := filepath.Dir(d)
		if parent == d {
			return filepath.Join(wd, "..", "shared", "data")
		}
		d = parent
	}
}

// ErrMissing is wrapped by Check's error when a corpus file is absent.
var ErrMissing = errors.New("prompt corpus not found")

// Check reports whether dir holds every corpus file. Its error wraps
// ErrMissing and says how to point the tools at the corpora.
func Check(dir string) error {
	for _, name := range Files() {
		st, err := os.Stat(filepath.Join(dir, name))
		if err == nil && !st.Mode().IsRegular() {
			err = errors.New("not a regular file")
		}
		if err != nil {
			return fmt.Errorf("%w in %s (set %s to the directory holding %s, %s and %s): %w",
				ErrMissing, dir, EnvVar, DialogsFile, QuestionsFile, TasksFile, err)
		}
	}
	return nil
}
