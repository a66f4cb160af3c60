package lab

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// Progress displays the advance of running experiments: a redrawn bar on a
// terminal, plain lines at every tenth otherwise (logs, CI). It only
// displays; nothing it does feeds back into results.
type Progress struct {
	mu    sync.Mutex
	w     io.Writer
	tty   bool
	tasks []*Task
	last  time.Time
	width int
}

// NewProgress writes to w; tty selects the redrawn bar. A nil w discards.
func NewProgress(w io.Writer, tty bool) *Progress {
	if w == nil {
		w = io.Discard
	}
	return &Progress{w: w, tty: tty}
}

// IsTerminal reports whether f is a character device (a terminal), which is
// what decides between the bar and plain lines.
func IsTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Task is one experiment's share of the display. A nil *Task ignores calls,
// so experiments can run without a display.
type Task struct {
	p           *Progress
	name        string
	done, total int
	reported    int // tenths printed in plain mode
	finished    bool
}

// Start adds a task named name with total units of work (Grow may add more).
func (p *Progress) Start(name string, total int) *Task {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	t := &Task{p: p, name: name, total: total}
	p.tasks = append(p.tasks, t)
	return t
}

// Grow adds n units to the task's total.
func (t *Task) Grow(n int) {
	if t == nil {
		return
	}
	t.p.mu.Lock()
	t.total += n
	t.p.mu.Unlock()
}

// Add records n finished units.
func (t *Task) Add(n int) {
	if t == nil {
		return
	}
	p := t.p
	p.mu.Lock()
	defer p.mu.Unlock()
	t.done += n
	if p.tty {
		if time.Since(p.last) > 100*time.Millisecond {
			p.drawLocked()
		}
		return
	}
	if t.total > 0 {
		if tenth := 10 * t.done / t.total; tenth > t.reported && tenth < 10 {
			t.reported = tenth
			fmt.Fprintf(p.w, "%s: %d%% (%d/%d)\n", t.name, 10*tenth, t.done, t.total)
		}
	}
}

// Done marks the task finished with a summary line.
func (t *Task) Done(summary string) {
	if t == nil {
		return
	}
	p := t.p
	p.mu.Lock()
	defer p.mu.Unlock()
	t.finished = true
	t.done = t.total
	if p.tty {
		p.clearLocked()
	}
	fmt.Fprintf(p.w, "%s: done — %s\n", t.name, summary)
	if p.tty {
		p.drawLocked()
	}
}

func (p *Progress) clearLocked() {
	if p.width > 0 {
		fmt.Fprintf(p.w, "\r%s\r", strings.Repeat(" ", p.width))
		p.width = 0
	}
}

func (p *Progress) drawLocked() {
	p.last = time.Now()
	var parts []string
	for _, t := range p.tasks {
		if t.finished {
			continue
		}
		frac := 0.0
		if t.total > 0 {
			frac = min(1, float64(t.done)/float64(t.total))
		}
		const bar = 20
		n := int(frac * bar)
		parts = append(parts, fmt.Sprintf("%s [%s%s] %3.0f%%", t.name, strings.Repeat("#", n), strings.Repeat(".", bar-n), 100*frac))
	}
	line := strings.Join(parts, "  ")
	p.clearLocked()
	fmt.Fprint(p.w, line)
	p.width = len([]rune(line))
}

// Close clears the bar.
func (p *Progress) Close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		p.clearLocked()
	}
}
