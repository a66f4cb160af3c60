package lab

import (
	"context"
	"os"
	"testing"
)

func TestZZLogprob(t *testing.T) {
	if os.Getenv("ZZ") == "" {
		t.Skip()
	}
	p := WatermarkSizes("", 1).LP
	tabs, f, err := runLogprobWatermark(context.Background(), 1, p)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", (&Report{Title: "x", Sections: []Section{{Title: "lp", Tables: tabs, Findings: f}}}).Markdown())
}
