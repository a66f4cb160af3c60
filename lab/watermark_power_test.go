package lab

import (
	"context"
	"os"
	"strconv"
	"testing"
)

// TestWatermarkPower prints the lexical watermark's power harness at the
// target (WATERMARK_POWER=1; WATERMARK_POWER_REPS sets the number of
// replications). Minutes, not part of the suite.
func TestWatermarkPower(t *testing.T) {
	if os.Getenv("WATERMARK_POWER") == "" {
		t.Skip("set WATERMARK_POWER=1 to run the lexical watermark power harness")
	}
	dir := os.Getenv("DISTILLGUARD_CORPUS")
	if dir == "" {
		dir = "../../shared/data"
	}
	p := PowerSizes(dir)
	if n, err := strconv.Atoi(os.Getenv("WATERMARK_POWER_REPS")); err == nil {
		p.Replications = n
	}
	if n, err := strconv.Atoi(os.Getenv("WATERMARK_POWER_STATS")); err == nil {
		p.StatsResponses = n
	}
	if n, err := strconv.Atoi(os.Getenv("WATERMARK_POWER_MAXTOKENS")); err == nil {
		p.MaxTokens = n
	}
	if os.Getenv("WATERMARK_POWER_NOVIS") != "" {
		p.Visibility = nil
	}
	r, err := RunWatermarkPower(context.Background(), 1, p)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", r.Report(p))
	// Calibration is a requirement at any power: decoy keys on unmarked
	// students, and the real key on them, must not find a mark.
	if share := 1 - float64(r.DecoyBelow)/float64(r.DecoyTrials); share < 0.99 {
		t.Errorf("decoy keys on unmarked students: p >= 0.01 for %.2f%%, want >= 99%%", 100*share)
	}
	if n := countBelow(r.Unmarked, 0.01); n > 0 {
		t.Errorf("the real key finds a mark in %d unmarked students", n)
	}
	// Marked text itself (the gateway's output) is identified outright.
	for name, v := range r.Corpus {
		if v > 1e-6 || r.CorpusRaw[name] < 0.01 {
			t.Errorf("%s: marked p = %g, unmarked p = %g", name, v, r.CorpusRaw[name])
		}
	}
}

// TestWatermarkPowerBreakdown prints where one replication's evidence
// comes from (WATERMARK_BREAKDOWN=1; WATERMARK_BREAKDOWN_REP picks the
// replication).
func TestWatermarkPowerBreakdown(t *testing.T) {
	if os.Getenv("WATERMARK_BREAKDOWN") == "" {
		t.Skip("set WATERMARK_BREAKDOWN=1 to print the lexical watermark's evidence breakdown")
	}
	dir := os.Getenv("DISTILLGUARD_CORPUS")
	if dir == "" {
		dir = "../../shared/data"
	}
	p := PowerSizes(dir)
	if n, err := strconv.Atoi(os.Getenv("WATERMARK_POWER_MAXTOKENS")); err == nil {
		p.MaxTokens = n
	}
	rep, _ := strconv.Atoi(os.Getenv("WATERMARK_BREAKDOWN_REP"))
	for _, o := range p.Orders {
		s, err := PowerBreakdown(1, rep, o, p)
		if err != nil {
			t.Fatal(err)
		}
		if s == "" {
			t.Fatal("empty breakdown")
		}
		t.Logf("\n%s", s)
	}
}
