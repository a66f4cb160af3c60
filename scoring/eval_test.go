package scoring

import (
	"testing"

	"github.com/distillguard/distillguard/internal/traffic"
)

// TestEvaluationOnGeneratedTraffic replays the labelled traffic of
// internal/traffic through the engine with the default configuration and
// asserts the detection targets:
//   - every attack family flagged (degrade or stronger) in >= 95% of its
//     accounts, median first flag within 100 requests (10 for logit-bias
//     probing); >= 80% of the distributed campaign's accounts flagged;
//   - <= 1% of human chat accounts ever flagged and none blocked;
//   - batch and evaluation workloads never blocked.
func TestEvaluationOnGeneratedTraffic(t *testing.T) {
	scale := 1.0
	if testing.Short() {
		scale = 0.3
	}
	reqs := loadTraffic(t, traffic.Options{Seed: 20250303, Scale: scale})
	e, err := New(DefaultConfig(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	fams, _ := replay(t, e, reqs)
	t.Logf("replayed %d requests (scale %.2f)\n%s", len(reqs), scale, resultTable(fams))

	for _, f := range traffic.Families() {
		r := fams[f.Name]
		if r == nil {
			t.Errorf("family %s missing from the replay", f.Name)
			continue
		}
		switch {
		case f.Name == "attack-distributed":
			if r.flaggedShare() < 0.80 {
				t.Errorf("%s: %.1f%% of accounts flagged, want >= 80%%", f.Name, 100*r.flaggedShare())
			}
		case f.Attack:
			if r.flaggedShare() < 0.95 {
				t.Errorf("%s: %.1f%% of accounts flagged, want >= 95%%", f.Name, 100*r.flaggedShare())
			}
			limit := 100
			if f.Name == "attack-logitbias" {
				limit = 10
			}
			if m := r.medianFirstFlag(); m == 0 || m > limit {
				t.Errorf("%s: median first flag at request %d, want <= %d", f.Name, m, limit)
			}
		case f.Name == "benign-chat":
			if r.flaggedShare() > 0.01 {
				t.Errorf("%s: %.2f%% of accounts flagged, want <= 1%%", f.Name, 100*r.flaggedShare())
			}
			if r.block > 0 {
				t.Errorf("%s: %d accounts blocked, want none", f.Name, r.block)
			}
		case f.Name == "benign-batch" || f.Name == "benign-eval":
			if r.block > 0 {
				t.Errorf("%s: %d accounts blocked, want none", f.Name, r.block)
			}
		}
	}
}
