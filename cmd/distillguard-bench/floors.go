package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/distillguard/distillguard/bench"
)

// cmdFloors runs distillguard beside the no-op and echo processors and
// the no-ext_proc schedule (bench.RunFloors).
func cmdFloors(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("floors", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rf := addRoundFlags(fs, "bench-out/floors", "directory for floors.md, floors.json and server logs", "noop, echo and distillguard")
	out, rounds, warmup, duration, dgBin, conns, seed := rf.out, rf.rounds, rf.warmup, rf.duration, rf.dgBin, rf.conns, rf.seed
	names := fs.String("scenarios", "passthrough,default-top5,json-100k", "comma-separated scenarios (see run -list)")
	interval := fs.Duration("token-interval", 2*time.Millisecond, "upstream token interval of the paced pass (time to last token); 0 skips it")
	pacedConc := fs.Int("paced-concurrency", 0, "concurrency of the paced pass (default: the scenario's)")
	if err := parse(fs, args); err != nil {
		return err
	}
	scenarios, err := bench.SelectScenarios(bench.DefaultScenarios(8000), *names)
	if err != nil {
		return err
	}
	noop, dg, err := serverSpecs(*dgBin)
	if err != nil {
		return err
	}
	echo := noop.Serving(bench.NameEcho, "serve-echo")
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	rep, err := bench.RunFloors(ctx, bench.FloorsConfig{
		Scenarios: scenarios, Rounds: *rounds, Warmup: *warmup, Duration: *duration, Conns: *conns, Seed: *seed,
		TokenInterval: *interval, PacedConcurrency: *pacedConc,
		Noop: noop, Echo: echo, Distillguard: dg, OutDir: *out, Log: stderr,
	})
	if rep == nil || len(rep.Scenarios) == 0 {
		return err
	}
	b, jerr := json.MarshalIndent(rep, "", "  ")
	if jerr != nil {
		return jerr
	}
	if werr := os.WriteFile(filepath.Join(*out, "floors.json"), append(b, '\n'), 0o644); werr != nil {
		return werr
	}
	mf, ferr := os.Create(filepath.Join(*out, "floors.md"))
	if ferr != nil {
		return ferr
	}
	defer mf.Close()
	if merr := rep.WriteMarkdown(io.MultiWriter(mf, stdout)); merr != nil {
		return merr
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "floors done; results in %s\n", *out)
	return nil
}
