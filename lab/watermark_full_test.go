package lab

import (
	"context"
	"os"
	"testing"

	"github.com/distillguard/distillguard/internal/corpus/corpustest"
)

// TestWatermarkExperimentFull prints the full-scale report section; run it
// with WATERMARK_FULL=1 (minutes, not part of the suite).
func TestWatermarkExperimentFull(t *testing.T) {
	if os.Getenv("WATERMARK_FULL") == "" {
		t.Skip("set WATERMARK_FULL=1 to run the full-scale watermark experiment")
	}
	sec, err := RunWatermark(context.Background(), 1, WatermarkSizes(corpustest.Require(t), 1))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", (&Report{Title: "watermark", Sections: []Section{sec}}).Markdown())
}
