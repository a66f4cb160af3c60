package lab

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/distillguard/distillguard/internal/corpus/corpustest"
	"github.com/distillguard/distillguard/watermark"
)

// envInt sets *dst from the integer environment variable name, when set.
func envInt(name string, dst *int) {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil {
		*dst = n
	}
}

// TestWatermarkPower prints the lexical watermark's power harness at the
// target (WATERMARK_POWER=1; WATERMARK_POWER_REPS sets the number of
// replications; WATERMARK_POWER_REAL=1 harvests real corpus texts instead
// of the teacher's, and WATERMARK_POWER_DOMAIN_DIR, a path list, the
// Markdown prose under it instead of the corpora;
// WATERMARK_POWER_UNSMOOTHED=1 adds the unsmoothed bigram sampler, marked
// and unmarked, WATERMARK_POWER_KN=1 the Kneser-Ney bigram). Minutes, not
// part of the suite.
func TestWatermarkPower(t *testing.T) {
	if os.Getenv("WATERMARK_POWER") == "" {
		t.Skip("set WATERMARK_POWER=1 to run the lexical watermark power harness")
	}
	p := PowerSizes(corpustest.Require(t))
	envInt("WATERMARK_POWER_REPS", &p.Replications)
	envInt("WATERMARK_POWER_STATS", &p.StatsResponses)
	envInt("WATERMARK_POWER_MAXTOKENS", &p.MaxTokens)
	if os.Getenv("WATERMARK_POWER_NEURAL") != "" {
		p.Orders = append(p.Orders, 0) // the neural student too: minutes more
	}
	if os.Getenv("WATERMARK_POWER_UNSMOOTHED") != "" {
		p.Orders = append(p.Orders, -2) // the maximum-likelihood bigram sampler too
	}
	if os.Getenv("WATERMARK_POWER_KN") != "" {
		p.Orders = append(p.Orders, kneserNey+2) // the Kneser-Ney bigram too
	}
	if os.Getenv("WATERMARK_POWER_NOVIS") != "" {
		p.Visibility = nil
	}
	run := RunWatermarkPower
	if os.Getenv("WATERMARK_POWER_REAL") != "" {
		// Real corpus texts as the harvest, marked with the embedded
		// statistics; students write to their own lengths.
		run, p.MaxTokens, p.Visibility = RunWatermarkPowerReal, 400, nil
		envInt("WATERMARK_POWER_MAXTOKENS", &p.MaxTokens)
		p.DomainDirs = domainDirs()
	}
	r, err := run(context.Background(), 1, p)
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
	// The same given the served text, where the unmarked students'
	// groups are all served.
	if share := 1 - float64(r.DecoyBelowServed)/float64(r.DecoyTrials); share < 0.99 {
		t.Errorf("decoy keys on unmarked students, served text given: p >= 0.01 for %.2f%%, want >= 99%%", 100*share)
	}
	if n := countBelow(r.UnmarkedServed, 0.01); n > 0 {
		t.Errorf("the real key, served text given, finds a mark in %d unmarked students", n)
	}
	// Marked text itself (the gateway's output) is identified outright.
	for name, v := range r.Corpus {
		if v > 1e-6 || r.CorpusRaw[name] < 0.01 {
			t.Errorf("%s: marked p = %g, unmarked p = %g", name, v, r.CorpusRaw[name])
		}
	}
}

// domainDirs are the directories of WATERMARK_POWER_DOMAIN_DIR (a
// path list): with WATERMARK_POWER_REAL, the harvest is their Markdown
// prose, another domain than the embedded statistics'.
func domainDirs() []string {
	if v := os.Getenv("WATERMARK_POWER_DOMAIN_DIR"); v != "" {
		return filepath.SplitList(v)
	}
	return nil
}

// TestWatermarkPowerBreakdown prints where one replication's evidence
// comes from (WATERMARK_BREAKDOWN=1; WATERMARK_BREAKDOWN_REP picks the
// replication; WATERMARK_POWER_REAL=1 breaks down the real-text harness's
// replication instead).
func TestWatermarkPowerBreakdown(t *testing.T) {
	if os.Getenv("WATERMARK_BREAKDOWN") == "" {
		t.Skip("set WATERMARK_BREAKDOWN=1 to print the lexical watermark's evidence breakdown")
	}
	p := PowerSizes(corpustest.Require(t))
	envInt("WATERMARK_POWER_MAXTOKENS", &p.MaxTokens)
	rep := 0
	envInt("WATERMARK_BREAKDOWN_REP", &rep)
	real := os.Getenv("WATERMARK_POWER_REAL") != ""
	if real {
		p.MaxTokens = 400
		envInt("WATERMARK_POWER_MAXTOKENS", &p.MaxTokens)
		p.DomainDirs = domainDirs()
	}
	for _, o := range p.Orders {
		s, err := PowerBreakdown(1, rep, o, p, real)
		if err != nil {
			t.Fatal(err)
		}
		if s == "" {
			t.Fatal("empty breakdown")
		}
		t.Logf("\n%s", s)
	}
}

// TestServedFindsSmoothedBigram: a smoothed bigram student writes many
// word pairs its harvest never held; told which responses were served
// (verify -served), the test weighs only the groups it can have learned
// and finds it. One real-text replication at the target size (2,000
// marked responses, 500 outputs), seeded.
func TestServedFindsSmoothedBigram(t *testing.T) {
	p := PowerSizes(corpustest.Require(t))
	p.MaxTokens = 400
	corpora, err := loadTextCorpora(p.CorpusDir)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := realPool(corpora, p)
	if err != nil {
		t.Fatal(err)
	}
	base := uint64(9000 + 20*3)
	r := realReplication(1, base, p, pool, watermark.DefaultLexicon())
	outs := studentOutputs(1, base+3, 2, r.marked, p)
	served := sampleOf(r.ver, r.markedText, nil)
	plain, given := sampleOf(r.ver, outs, nil).Score(r.key), sampleOf(r.ver, outs, served).Score(r.key)
	if given.PValue > 1e-6 || given.PValue >= plain.PValue || given.ServedGroups == 0 {
		t.Errorf("smoothed bigram student: p %g given the served text (%d groups), %g without", given.PValue, given.ServedGroups, plain.PValue)
	}
	un := sampleOf(r.ver, studentOutputs(1, base+9, 2, r.raw, p), served)
	if q := un.Score(r.key).PValue; q < 0.01 {
		t.Errorf("unmarked student of the same responses, served text given: p %g", q)
	}
}

func TestBand(t *testing.T) {
	for _, c := range []struct {
		v    float64
		want string
	}{
		{0, "harvest < 1"}, {1, "harvest 1-3"}, {2, "harvest 1-3"}, {3, "harvest 3-10"}, {9, "harvest 3-10"}, {10, "harvest >= 10"}, {400, "harvest >= 10"},
	} {
		if got := band("harvest", c.v, 1, 3, 10); got != c.want {
			t.Errorf("band(%g) = %q, want %q", c.v, got, c.want)
		}
	}
	if got := band("null", 0.25, 0.3, 0.6, 0.8); got != "null < 0.3" {
		t.Errorf("band(0.25) = %q", got)
	}
}
