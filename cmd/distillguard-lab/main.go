// Command distillguard-lab runs the attack lab: defence-efficacy experiments
// against simulated models through distillguard's rewriting code, and a
// replay of labelled traffic through a distillguard ext_proc server. It
// writes lab-report.md and SVG figures to the output directory.
//
//	distillguard-lab -seed 1 -out lab-out
//	distillguard-lab -experiments tramer,carlini -scale 0.2
//	distillguard-lab -experiments detection -addr 127.0.0.1:50051
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/internal/corpus"
	"github.com/distillguard/distillguard/lab"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "distillguard-lab:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("distillguard-lab", flag.ContinueOnError)
	corpusFlag := fs.String("corpus", "", "prompt corpus directory (default $DISTILLGUARD_CORPUS, else ../shared/data next to the module root)")
	seed := fs.Uint64("seed", 1, "seed: the same seed gives the same report")
	scale := fs.Float64("scale", 1, "size of the run: 1 is the full lab, smaller is quicker")
	out := fs.String("out", "lab-out", "output directory for "+lab.ReportFile+" and figures")
	exps := fs.String("experiments", strings.Join(lab.DefaultExperiments(), ","), "comma-separated experiments: "+strings.Join(lab.AllExperiments(), ", "))
	addr := fs.String("addr", "", "external distillguard ext_proc address host:port, or several comma-separated replicas served round-robin per request (default: start one in-process)")
	cfgPath := fs.String("config", "", "distillguard configuration file (default: the embedded default)")
	parallel := fs.Int("parallel", 0, "experiment parts run at once (default GOMAXPROCS)")
	replicas := fs.String("replicas", "", "replica counts: one count N > 1 replays detection over N replicas sharing Redis round-robin per request; a list (1,3,5) is what detection-replicas compares")
	redisAddr := fs.String("redis", "", "Redis host:port the replicas share (default: start a redis-server for the run)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg := config.Default()
	if *cfgPath != "" {
		c, err := config.Load(*cfgPath)
		if err != nil {
			return err
		}
		cfg = c
	}
	dir := *corpusFlag
	if dir == "" {
		dir = corpus.Dir()
	}
	var list []string
	for _, e := range strings.Split(*exps, ",") {
		if e = strings.TrimSpace(e); e != "" {
			list = append(list, e)
		}
	}

	var counts []int
	for _, f := range strings.Split(*replicas, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > 64 {
			return fmt.Errorf("-replicas: %q is not a count in [1, 64]", f)
		}
		counts = append(counts, n)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	prog := lab.NewProgress(os.Stdout, lab.IsTerminal(os.Stdout))
	start := time.Now()
	rep, err := lab.Run(ctx, lab.Options{
		Seed:        *seed,
		Scale:       *scale,
		CorpusDir:   dir,
		Experiments: list,
		Addr:        *addr,
		Config:      cfg,
		Parallel:    *parallel,
		Progress:    prog,
		Replicas:    counts,
		RedisAddr:   *redisAddr,
	})
	if rep != nil {
		if werr := rep.Write(*out); werr != nil {
			return errors.Join(err, werr)
		}
		fmt.Printf("report: %s (%s)\n", filepath.Join(*out, lab.ReportFile), time.Since(start).Round(time.Millisecond))
	}
	return err
}
