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
	if os.Getenv("WATERMARK_POWER_NOVIS") != "" {
		p.Visibility = nil
	}
	r, err := RunWatermarkPower(context.Background(), 1, p)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", r.Report(p))
}
