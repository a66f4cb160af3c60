package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/distillguard/distillguard/bench"
	"github.com/distillguard/distillguard/internal/corpus"
)

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rf := addRoundFlags(fs, "bench-out", "directory for results.md, results.json, the CDF plots, profiles and server logs", "noop and distillguard")
	out, rounds, warmup, duration, dgBin, conns, seed := rf.out, rf.rounds, rf.warmup, rf.duration, rf.dgBin, rf.conns, rf.seed
	names := fs.String("scenarios", "all", "comma-separated scenarios to run")
	profile := fs.String("profile", "", "scenario in whose first distillguard round CPU and allocation profiles are captured")
	floor := fs.Duration("floor", 300*time.Millisecond, "time to measure the in-process rewrite floor per scenario (0 skips)")
	openRate := fs.Float64("open-rate", 8000, "message rate of the open-loop scenario (messages/s over all streams)")
	corpusFlag := fs.String("corpus", "", "prompt corpus directory (default $DISTILLGUARD_CORPUS or ../shared/data; synthetic prompts when absent)")
	list := fs.Bool("list", false, "list the scenarios and exit")
	enforce := fs.Bool("enforce-targets", false, "exit 1 when a published target is missed")
	aa := fs.Bool("aa", false, "A/A calibration: run the no-op processor in the distillguard slot too, to see the noise floor of the ratios")
	if err := parse(fs, args); err != nil {
		return err
	}
	all := bench.DefaultScenarios(*openRate)
	if *list {
		for _, s := range all {
			fmt.Fprintf(stdout, "%-22s %s\n", s.Name, s.Description)
		}
		return nil
	}
	scenarios, err := bench.SelectScenarios(all, *names)
	if err != nil {
		return err
	}
	noop, dg, err := serverSpecs(*dgBin)
	if err != nil {
		return err
	}
	if *profile != "" {
		dg.Argv = append(dg.Argv, "-pprof")
	}
	if *aa {
		dg.Argv = noop.Argv
	}
	prompts := loadPrompts(*corpusFlag, stderr)

	mc := bench.MatrixConfig{
		Scenarios: scenarios, Rounds: *rounds, Warmup: *warmup, Duration: *duration,
		Conns: *conns, Seed: *seed, Noop: noop, Distillguard: dg, OutDir: *out,
		Profile: *profile, FloorTime: *floor, Prompts: prompts, Log: stderr,
	}
	if f, ok := stderr.(*os.File); ok && isTerminal(f) {
		mc.Bar = stderr
	}
	start := time.Now()
	rep, err := bench.RunMatrix(ctx, mc)
	if rep == nil || len(rep.Scenarios) == 0 {
		return err
	}
	if werr := writeOutputs(rep, *out, stdout); werr != nil {
		return errors.Join(err, werr)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "matrix done in %s; results in %s\n", time.Since(start).Round(time.Second), *out)
	if n := rep.Errors(); n > 0 {
		return fmt.Errorf("%d messages failed (see error_samples in %s)", n, filepath.Join(*out, "results.json"))
	}
	if *enforce && !rep.TargetsMet() {
		return errors.New("targets missed (see results.md)")
	}
	return nil
}

func loadPrompts(dir string, stderr io.Writer) []string {
	if dir == "" {
		dir = corpus.Dir()
	}
	ps, err := bench.LoadPrompts(dir, 5000)
	if err != nil {
		fmt.Fprintf(stderr, "prompts: %v; using synthetic prompts\n", err)
		return nil
	}
	return ps
}

func writeOutputs(rep *bench.Report, out string, stdout io.Writer) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	jf, err := os.Create(filepath.Join(out, "results.json"))
	if err != nil {
		return err
	}
	if err := rep.WriteJSON(jf); err != nil {
		jf.Close()
		return err
	}
	if err := jf.Close(); err != nil {
		return err
	}
	mf, err := os.Create(filepath.Join(out, "results.md"))
	if err != nil {
		return err
	}
	if err := errors.Join(rep.WriteMarkdown(io.MultiWriter(mf, stdout)), mf.Close()); err != nil {
		return err
	}
	return rep.WritePlots(out)
}
