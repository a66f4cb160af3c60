package lab

import (
	"context"
	"fmt"
	"math"
	"strings"

	"github.com/distillguard/distillguard/config"
)

// DetectionEvalParams configure the detection evaluation: the replay of
// RunDetection repeated for the generator's tuned and held-out variants
// under several scoring secrets.
type DetectionEvalParams struct {
	Scale     float64
	CorpusDir string
	Families  []string
	// Config is the configuration the in-process server starts from; each
	// replay sets its own scoring.secret. nil means the embedded default.
	Config *config.Config
	// Secrets is how many secrets to replay under (default 5).
	Secrets int
}

// labSecret is the i-th secret of an evaluation: fixed, so the report is
// reproducible, and distinct per replay.
func labSecret(seed uint64, i int) string {
	return fmt.Sprintf("lab-secret-%d-%d-0123456789abcdef0123456789abcdef", seed, i)
}

// familyRates are one family's outcomes in one replay.
type familyRates struct {
	name               string
	attack             bool
	accounts, flagged  int
	throttled, blocked int
	median             float64 // median request of the first flag
	peaks              []float64
}

func ratesOf(fams []*familyStats) []familyRates {
	out := make([]familyRates, 0, len(fams))
	for _, f := range fams {
		t := f.tally()
		r := familyRates{name: f.name, attack: f.attack, accounts: t.n, flagged: t.flagged, blocked: t.blocked, median: quantileInt(t.firsts, 0.5)}
		for _, a := range f.accounts {
			if a.throttled {
				r.throttled++
			}
			r.peaks = append(r.peaks, a.peak)
		}
		out = append(out, r)
	}
	return out
}

// RunDetectionEval replays the traffic for variants 0 (tuned) and 1 (held
// out) under p.Secrets secrets each and reports per-family outcomes,
// precision and recall by tier and over the degrade threshold, and the
// spread of every family's flagged share across the secrets.
func RunDetectionEval(ctx context.Context, seed uint64, p DetectionEvalParams, prog *Task) (Section, error) {
	n := p.Secrets
	if n <= 0 {
		n = 5
	}
	base := p.Config
	if base == nil {
		base = config.Default()
	}
	var runs [2][][]familyRates // [variant][secret]
	total := 0
	for variant := 0; variant < 2; variant++ {
		for i := 0; i < n; i++ {
			cfg := *base
			cfg.Scoring.Secret = labSecret(seed, i)
			fams, reqs, _, err := replayDetection(ctx, seed+uint64(variant), DetectionParams{
				Scale: p.Scale, CorpusDir: p.CorpusDir, Families: p.Families, Config: &cfg, Variant: variant,
			}, prog)
			if err != nil {
				return Section{}, fmt.Errorf("variant %d, secret %d: %w", variant, i, err)
			}
			total += reqs
			runs[variant] = append(runs[variant], ratesOf(fams))
		}
	}
	return detectionEvalSection(seed, p, n, total, runs), nil
}

func detectionEvalSection(seed uint64, p DetectionEvalParams, secrets, total int, runs [2][][]familyRates) Section {
	s := Section{
		Title: "Detection evaluation: tuned and held-out traffic, several secrets",
		Intro: []string{
			"The detection replay (above) repeated for the generator's tuned variant (the one the scoring defaults were chosen on) " +
				"and its held-out variant (other system prompts, tool schemas, personas, wrappers, follow-ups, reasoning demands and " +
				"timing, never tuned on), each under several `scoring.secret` values: every keyed hash, and so every sampled shingle, " +
				"differs between the replays. An account is flagged once any of its requests gets degrade or stronger.",
		},
		Params: [][2]string{
			{"seed", fmt.Sprint(seed)},
			{"traffic scale", fmt.Sprint(p.Scale)},
			{"secrets per variant", itoa(secrets)},
			{"requests replayed (all runs)", itoa(total)},
		},
	}
	first := [2][]familyRates{runs[0][0], runs[1][0]}
	t1 := Table{
		Title: "Per family, first secret",
		Header: []string{"family", "kind", "accounts", "flagged (tuned)", "throttled or blocked (tuned)", "median first flag (tuned)",
			"flagged (held out)", "throttled or blocked (held out)", "median first flag (held out)"},
		Notes: []string{"Targets: benign families at most 1% flagged and none throttled or blocked (batch, eval and CoT-eval " +
			"harnesses may degrade); attack families at least 90% flagged with the median first flag within 50 requests " +
			"(95% for the original families, 80% for the distributed and diffuse campaigns)."},
	}
	byName := func(rs []familyRates, name string) *familyRates {
		for i := range rs {
			if rs[i].name == name {
				return &rs[i]
			}
		}
		return nil
	}
	for _, r := range first[0] {
		kind := "benign"
		if r.attack {
			kind = "attack"
		}
		row := []string{r.name, kind, itoa(r.accounts), fmtPct(frac(r.flagged, r.accounts)), fmtPct(frac(r.throttled, r.accounts)), fmtCount(r.median)}
		if h := byName(first[1], r.name); h != nil {
			row = append(row, fmtPct(frac(h.flagged, h.accounts)), fmtPct(frac(h.throttled, h.accounts)), fmtCount(h.median))
		} else {
			row = append(row, "—", "—", "—")
		}
		t1.Rows = append(t1.Rows, row)
	}

	t2 := Table{
		Title:  "Precision and recall by tier (accounts, all secrets pooled)",
		Header: []string{"variant", "tier reached", "attack accounts (recall)", "benign accounts (false-positive rate)", "precision"},
		Notes:  []string{"Precision is attack accounts over all accounts reaching the tier; it depends on the family mix of the generator."},
	}
	variantName := [2]string{"tuned", "held out"}
	for v := 0; v < 2; v++ {
		for _, tier := range []string{"degrade or stronger", "throttle or block", "block"} {
			var tp, fp, pos, neg int
			for _, run := range runs[v] {
				for _, r := range run {
					k := r.flagged
					switch tier {
					case "throttle or block":
						k = r.throttled
					case "block":
						k = r.blocked
					}
					if r.attack {
						tp += k
						pos += r.accounts
					} else {
						fp += k
						neg += r.accounts
					}
				}
			}
			t2.Rows = append(t2.Rows, []string{variantName[v], tier, fmtPct(frac(tp, pos)), fmtPct2(frac(fp, neg)), fmtPct(frac(tp, tp+fp))})
		}
	}

	t3 := Table{
		Title:  "Over the degrade threshold (tuned variant, first secret)",
		Header: []string{"threshold", "attack accounts reaching it (recall)", "benign accounts reaching it", "precision"},
		Notes: []string{"An account reaches a threshold when its peak score does; the configured degrade threshold is " +
			fmt.Sprint(configThreshold(p.Config)) + "."},
	}
	fig := Figure{
		File: "detection-thresholds.svg", Title: "Accounts reaching a threshold (tuned variant)", XLabel: "score threshold",
		YLabel: "share of accounts", YRange: [2]float64{0, 1.02},
	}
	rec, fpr := Series{Name: "attack accounts"}, Series{Name: "benign accounts"}
	for th := 0.1; th < 0.951; th += 0.05 {
		var tp, fp, pos, neg int
		for _, r := range first[0] {
			for _, pk := range r.peaks {
				hit := pk >= th-1e-9
				if r.attack {
					pos++
					if hit {
						tp++
					}
				} else {
					neg++
					if hit {
						fp++
					}
				}
			}
		}
		if math.Abs(math.Mod(th*100+0.5, 10)-0.5) < 1e-6 {
			t3.Rows = append(t3.Rows, []string{fmt.Sprintf("%.1f", th), fmtPct(frac(tp, pos)), fmtPct2(frac(fp, neg)), fmtPct(frac(tp, tp+fp))})
		}
		rec.X, rec.Y = append(rec.X, th), append(rec.Y, frac(tp, pos))
		fpr.X, fpr.Y = append(fpr.X, th), append(fpr.Y, frac(fp, neg))
	}
	fig.Series = []Series{rec, fpr}

	t4 := Table{
		Title:  fmt.Sprintf("Flagged share across %d secrets", secrets),
		Header: []string{"family", "tuned: lowest", "tuned: highest", "held out: lowest", "held out: highest", "widest spread (points)"},
	}
	var worst float64
	for _, r := range first[0] {
		row := []string{r.name}
		spread := 0.0
		for v := 0; v < 2; v++ {
			lo, hi := math.Inf(1), math.Inf(-1)
			for _, run := range runs[v] {
				if x := byName(run, r.name); x != nil {
					f := frac(x.flagged, x.accounts)
					lo, hi = math.Min(lo, f), math.Max(hi, f)
				}
			}
			if math.IsInf(lo, 0) {
				row = append(row, "—", "—")
				continue
			}
			row = append(row, fmtPct(lo), fmtPct(hi))
			spread = math.Max(spread, hi-lo)
		}
		worst = math.Max(worst, spread)
		t4.Rows = append(t4.Rows, append(row, fmt.Sprintf("%.1f", 100*spread)))
	}
	s.Tables = []Table{t1, t2, t3, t4}
	s.Figures = []Figure{fig}
	s.Findings = evalFindings(first, worst)
	return s
}

// mayDegradeFamily: automated benign workloads allowed to degrade (never
// throttle or block): batch classification and evaluation harnesses.
func mayDegradeFamily(name string) bool {
	return name == "benign-batch" || name == "benign-eval" || name == "benign-evalcot"
}

func configThreshold(c *config.Config) float64 {
	if c == nil {
		c = config.Default()
	}
	if c.Scoring.Thresholds.Degrade > 0 {
		return c.Scoring.Thresholds.Degrade
	}
	return 0.3
}

func evalFindings(first [2][]familyRates, worst float64) []string {
	var out []string
	for v, name := range []string{"Tuned variant", "Held-out variant"} {
		var fp, missed []string
		for _, r := range first[v] {
			f := frac(r.flagged, r.accounts)
			if !r.attack && (r.throttled > 0 || f > 0.01 && !mayDegradeFamily(r.name)) {
				fp = append(fp, fmt.Sprintf("%s %s flagged, %s throttled or blocked", r.name, fmtPct(f), fmtPct(frac(r.throttled, r.accounts))))
			}
			want := 0.9
			if r.name == "attack-distributed" || r.name == "attack-diffuse" {
				want = 0.8
			}
			if r.attack && f < want {
				missed = append(missed, fmt.Sprintf("%s %s (target %s)", r.name, fmtPct(f), fmtPct(want)))
			}
		}
		line := name + ": "
		if len(fp) == 0 {
			line += "no benign family above 1% flagged (batch and evaluation harnesses may degrade) and none ever throttled or blocked; "
		} else {
			line += "benign families over target: " + strings.Join(fp, "; ") + "; "
		}
		if len(missed) == 0 {
			line += "every attack family at its target (90% flagged, 80% for the distributed and diffuse campaigns)."
		} else {
			line += "attack families below target: " + strings.Join(missed, "; ") + "."
		}
		out = append(out, line)
	}
	out = append(out, fmt.Sprintf("Across secrets the flagged share of a family moved by at most %.1f points.", 100*worst))
	return out
}
