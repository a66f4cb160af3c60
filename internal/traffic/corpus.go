package traffic

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/distillguard/distillguard/internal/corpus"
)

// ErrNoCorpus wraps the error returned when a corpus file is missing, so
// tests can tell "corpora not installed" from a broken file.
var ErrNoCorpus = errors.New("traffic: corpus not found")

// Task is one self-instruct seed task.
type Task struct {
	Instruction string `json:"instruction"`
	Input       string `json:"input"`
}

// Corpus is the prompt material the generator draws from.
type Corpus struct {
	// Dialogs are the human sides of HH-RLHF conversations, in order.
	Dialogs [][]string
	// Questions are GSM8K test questions.
	Questions []string
	// Tasks are the self-instruct seed tasks.
	Tasks []Task
}

// LoadCorpus reads the three corpus files from dir. A missing file yields an
// error wrapping ErrNoCorpus; a malformed line is an error naming file and
// line.
func LoadCorpus(dir string) (*Corpus, error) {
	c := &Corpus{}
	err := readJSONL(dir, corpus.DialogsFile, func(line []byte) error {
		var d struct {
			Turns []string `json:"turns"`
		}
		if err := json.Unmarshal(line, &d); err != nil {
			return err
		}
		var turns []string
		for _, t := range d.Turns {
			if t = strings.TrimSpace(t); t != "" {
				turns = append(turns, t)
			}
		}
		if len(turns) > 0 {
			c.Dialogs = append(c.Dialogs, turns)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = readJSONL(dir, corpus.QuestionsFile, func(line []byte) error {
		var q struct {
			Question string `json:"question"`
		}
		if err := json.Unmarshal(line, &q); err != nil {
			return err
		}
		if q.Question = strings.TrimSpace(q.Question); q.Question != "" {
			c.Questions = append(c.Questions, q.Question)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = readJSONL(dir, corpus.TasksFile, func(line []byte) error {
		var t Task
		if err := json.Unmarshal(line, &t); err != nil {
			return err
		}
		if t.Instruction = strings.TrimSpace(t.Instruction); t.Instruction != "" {
			t.Input = strings.TrimSpace(t.Input)
			c.Tasks = append(c.Tasks, t)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// The generator needs a few of each (eval exemplars, batch inputs).
	if len(c.Dialogs) < 10 || len(c.Questions) < 10 || len(c.Tasks) < 10 {
		return nil, fmt.Errorf("traffic: corpus in %s is too small (%d dialogs, %d questions, %d tasks; want >= 10 each)",
			dir, len(c.Dialogs), len(c.Questions), len(c.Tasks))
	}
	return c, nil
}

func readJSONL(dir, name string, each func([]byte) error) error {
	path := filepath.Join(dir, name)
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%w: %s (set %s to the directory holding %s, %s and %s)",
				ErrNoCorpus, path, corpus.EnvVar, corpus.DialogsFile, corpus.QuestionsFile, corpus.TasksFile)
		}
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Bytes()
		if len(strings.TrimSpace(string(line))) == 0 {
			continue
		}
		if err := each(line); err != nil {
			return fmt.Errorf("%s:%d: %w", path, n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
