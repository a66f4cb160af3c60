package scoring

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"testing"

	"github.com/distillguard/distillguard/internal/traffic"
)

// Detection targets, per family kind.
const (
	benignMaxFlagged  = 0.01 // benign accounts flagged at any tier
	attackMinFlagged  = 0.90 // attack accounts flagged
	classicMinFlagged = 0.95 // the original attack families
	campaignMinFlag   = 0.80 // distributed and diffuse campaigns
	maxMedianFirst    = 50   // median request of the first flag
	spreadPoints      = 0.02 // flagged-rate spread across secrets
)

// mayDegrade are the benign families allowed to degrade (never throttle or
// block): automated workloads whose shape overlaps harvesting.
var mayDegrade = map[string]bool{"benign-batch": true, "benign-eval": true, "benign-evalcot": true}

// classic are the families of the original generator, which keep their
// original goals.
var classic = map[string]bool{"attack-selfinstruct": true, "attack-reasoning": true, "attack-sweep": true, "attack-logitbias": true,
	"attack-distributed": true, "attack-slowlow": true, "attack-adaptive": true}

// evalSecrets are the secrets the evaluation replays under: the verdicts
// must not depend on which one a deployment draws.
var evalSecrets = []string{"", "eval-secret-1-eval-secret-1-eval-secret-1", "eval-secret-2-eval-secret-2-eval-secret-2",
	"eval-secret-3-eval-secret-3-eval-secret-3", "eval-secret-4-eval-secret-4-eval-secret-4"}

// checkFamily reports the targets a family's result misses.
func checkFamily(f traffic.Family, r *familyResult) []string {
	var bad []string
	switch {
	case !f.Attack && mayDegrade[f.Name]:
		if r.throttled > 0 {
			bad = append(bad, fmt.Sprintf("%d accounts throttled or blocked, want none", r.throttled))
		}
	case !f.Attack:
		if r.flaggedShare() > benignMaxFlagged {
			bad = append(bad, fmt.Sprintf("%.2f%% of accounts flagged, want <= %.0f%%", 100*r.flaggedShare(), 100*benignMaxFlagged))
		}
		if r.throttled > 0 {
			bad = append(bad, fmt.Sprintf("%d accounts throttled or blocked, want none", r.throttled))
		}
	default:
		want := attackMinFlagged
		switch {
		case f.Name == "attack-distributed" || f.Name == "attack-diffuse":
			want = campaignMinFlag
		case classic[f.Name]:
			want = classicMinFlagged
		}
		if r.flaggedShare() < want {
			bad = append(bad, fmt.Sprintf("%.1f%% of accounts flagged, want >= %.0f%%", 100*r.flaggedShare(), 100*want))
		}
		if m := r.medianFirstFlag(); m == 0 || m > maxMedianFirst {
			bad = append(bad, fmt.Sprintf("median first flag at request %d, want <= %d", m, maxMedianFirst))
		}
	}
	return bad
}

// TestEvaluationOnGeneratedTraffic replays the labelled traffic of
// internal/traffic through the engine with the default configuration,
// under several secrets (the first empty: random per engine), for the
// tuned variant of the generator and the held-out one, and asserts the
// detection targets:
//   - benign families: at most 1% of accounts flagged at any tier and none
//     throttled or blocked (batch classification and evaluation harnesses
//     may degrade, never throttle or block);
//   - attack families: at least 90% of accounts flagged (95% for the
//     original families, 80% for the distributed and diffuse campaigns),
//     median first flag within 50 requests;
//   - the flagged rate of every family varies by at most 2 points across
//     the secrets.
//
// With -short or under the race detector it replays a 0.2-scale week
// (attack families kept at 10 accounts or more, campaigns at full size)
// under two secrets.
func TestEvaluationOnGeneratedTraffic(t *testing.T) {
	scale, secrets, minAttack := 1.0, evalSecrets, 0
	if testing.Short() || raceEnabled {
		scale, secrets, minAttack = 0.2, evalSecrets[:2], 10
	}
	for _, variant := range []int{0, 1} {
		t.Run(fmt.Sprintf("variant%d", variant), func(t *testing.T) {
			reqs := loadTraffic(t, traffic.Options{Seed: 20250303 + uint64(variant), Scale: scale, Variant: variant, MinAttackAccounts: minAttack})
			parsed := make([]*Request, len(reqs))
			for i := range reqs {
				parsed[i] = fromTraffic(&reqs[i])
			}
			shares := map[string][]float64{}
			for si, secret := range secrets {
				cfg := DefaultConfig()
				cfg.Secret = secret
				e, err := New(cfg, Options{})
				if err != nil {
					t.Fatal(err)
				}
				fams := replayParsed(e, reqs, parsed)
				e.Close()
				t.Logf("variant %d, secret %d: %d requests (scale %.2f)\n%s", variant, si, len(reqs), scale, resultTable(fams))
				for _, f := range traffic.Families() {
					r := fams[f.Name]
					if r == nil {
						t.Errorf("family %s missing from the replay", f.Name)
						continue
					}
					shares[f.Name] = append(shares[f.Name], r.flaggedShare())
					for _, b := range checkFamily(f, r) {
						t.Errorf("variant %d, secret %d, %s: %s", variant, si, f.Name, b)
					}
				}
			}
			var spread []string
			for _, f := range traffic.Families() {
				xs := shares[f.Name]
				if len(xs) < 2 {
					continue
				}
				lo, hi := math.Inf(1), math.Inf(-1)
				for _, x := range xs {
					lo, hi = math.Min(lo, x), math.Max(hi, x)
				}
				spread = append(spread, fmt.Sprintf("%s %.1f-%.1f%%", f.Name, 100*lo, 100*hi))
				// At small scales one account is more than 2 points of a
				// small family; the bound is one account or 2 points.
				accounts := math.Max(1, math.Round(float64(f.Accounts)*scale))
				if f.Attack {
					accounts = math.Max(accounts, float64(minAttack))
				}
				if hi-lo > math.Max(spreadPoints, 1/accounts+1e-9) {
					t.Errorf("variant %d, %s: flagged share varies %.1f-%.1f%% across secrets", variant, f.Name, 100*lo, 100*hi)
				}
			}
			sort.Strings(spread)
			t.Logf("variant %d flagged share across %d secrets: %s", variant, len(secrets), strings.Join(spread, "; "))
		})
	}
}

// replayParsed scores every request in order, each parsed once, and
// returns per-family results.
func replayParsed(e *Engine, reqs []traffic.Request, parsed []*Request) map[string]*familyResult {
	accts := map[string]*accountResult{}
	for i := range reqs {
		tr := &reqs[i]
		d := e.Score(parsed[i])
		a := accts[tr.Account]
		if a == nil {
			a = &accountResult{family: tr.Family, attack: tr.Attack}
			accts[tr.Account] = a
		}
		a.requests++
		if d.Verdict >= Degrade && a.firstFlag == 0 {
			a.firstFlag = a.requests
		}
		a.maxTier = max(a.maxTier, d.Verdict)
		a.peak = max(a.peak, d.Score)
	}
	return aggregate(accts)
}
