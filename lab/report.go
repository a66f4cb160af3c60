package lab

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Table is one result table of the report.
type Table struct {
	Title  string
	Header []string
	Rows   [][]string
	Notes  []string
}

// Series is one line of a figure.
type Series struct {
	Name string
	X, Y []float64
}

// Figure is a line plot rendered to SVG next to the report.
type Figure struct {
	File           string // base name, e.g. "tramer-precision.svg"
	Title          string
	XLabel, YLabel string
	LogX, LogY     bool
	// YRange fixes the y axis when its ends differ (shares: 0 to 1).
	YRange [2]float64
	Series []Series
}

// Section is one experiment's part of the report.
type Section struct {
	Title    string
	Intro    []string
	Params   [][2]string
	Tables   []Table
	Figures  []Figure
	Findings []string
}

// Report is the whole lab report. It holds no timings or anything else that
// varies between runs with the same seed.
type Report struct {
	Title    string
	Params   [][2]string
	Sections []Section
}

// ReportFile is the report's file name inside the output directory.
const ReportFile = "lab-report.md"

// Markdown renders the report.
func (r *Report) Markdown() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# %s\n\n", r.Title)
	writeParams(&b, r.Params)
	for i, s := range r.Sections {
		fmt.Fprintf(&b, "## %d. %s\n\n", i+1, s.Title)
		for _, p := range s.Intro {
			fmt.Fprintf(&b, "%s\n\n", p)
		}
		writeParams(&b, s.Params)
		for _, t := range s.Tables {
			writeTable(&b, t)
		}
		for _, f := range s.Figures {
			fmt.Fprintf(&b, "![%s](%s)\n\n", f.Title, f.File)
		}
		if len(s.Findings) > 0 {
			b.WriteString("Findings:\n\n")
			for _, f := range s.Findings {
				fmt.Fprintf(&b, "- %s\n", f)
			}
			b.WriteString("\n")
		}
	}
	return b.Bytes()
}

func writeParams(b *bytes.Buffer, ps [][2]string) {
	if len(ps) == 0 {
		return
	}
	b.WriteString("| parameter | value |\n| --- | --- |\n")
	for _, p := range ps {
		fmt.Fprintf(b, "| %s | %s |\n", cell(p[0]), cell(p[1]))
	}
	b.WriteString("\n")
}

func writeTable(b *bytes.Buffer, t Table) {
	fmt.Fprintf(b, "### %s\n\n", t.Title)
	b.WriteString("|")
	for _, h := range t.Header {
		fmt.Fprintf(b, " %s |", cell(h))
	}
	b.WriteString("\n|")
	for range t.Header {
		b.WriteString(" --- |")
	}
	b.WriteString("\n")
	for _, r := range t.Rows {
		b.WriteString("|")
		for _, c := range r {
			fmt.Fprintf(b, " %s |", cell(c))
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
	for _, n := range t.Notes {
		fmt.Fprintf(b, "%s\n\n", n)
	}
}

func cell(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "|", `\|`), "\n", " ")
}

// Write writes the report and its figures into dir.
func (r *Report) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, s := range r.Sections {
		for _, f := range s.Figures {
			if err := f.Save(filepath.Join(dir, f.File)); err != nil {
				return fmt.Errorf("figure %s: %w", f.File, err)
			}
		}
	}
	return os.WriteFile(filepath.Join(dir, ReportFile), r.Markdown(), 0o644)
}

// Formatting helpers shared by the experiments.

func fmtSci(v float64) string {
	switch {
	case v != v:
		return "—"
	case v == 0:
		return "0"
	case v >= 0.01 && v < 1000:
		return fmt.Sprintf("%.3g", v)
	}
	return fmt.Sprintf("%.2e", v)
}

func fmtPct(v float64) string {
	if v != v {
		return "—"
	}
	return fmt.Sprintf("%.1f%%", 100*v)
}

func fmtPct2(v float64) string {
	if v != v {
		return "—"
	}
	return fmt.Sprintf("%.2f%%", 100*v)
}

func itoa(n int) string { return fmt.Sprint(n) }
