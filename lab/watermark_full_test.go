package lab

import (
	"context"
	"os"
	"testing"
)

// TestWatermarkExperimentFull prints the full-scale report section; run it
// with WATERMARK_FULL=1 (minutes, not part of the suite).
func TestWatermarkExperimentFull(t *testing.T) {
	if os.Getenv("WATERMARK_FULL") == "" {
		t.Skip("set WATERMARK_FULL=1 to run the full-scale watermark experiment")
	}
	dir := os.Getenv("DISTILLGUARD_CORPUS")
	if dir == "" {
		dir = "../../shared/data"
	}
	sec, err := RunWatermark(context.Background(), 1, WatermarkSizes(dir, 1))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", (&Report{Title: "watermark", Sections: []Section{sec}}).Markdown())
}
