package main

import (
	"flag"
	"time"
)

// roundFlags are the flags the comparison commands (run, floors,
// replicated) share: where the results go, which distillguard binary is
// measured, and the alternating rounds that let drift cancel.
type roundFlags struct {
	out, dgBin       *string
	rounds, conns    *int
	warmup, duration *time.Duration
	seed             *uint64
}

// addRoundFlags registers them on fs; outDir and outHelp describe -out,
// alternating the servers a round alternates between.
func addRoundFlags(fs *flag.FlagSet, outDir, outHelp, alternating string) roundFlags {
	return roundFlags{
		out:      fs.String("out", outDir, outHelp),
		dgBin:    fs.String("distillguard", "", "distillguard binary to measure (default: this binary's serve-distillguard mode)"),
		rounds:   fs.Int("rounds", 3, "rounds per server and scenario, alternating "+alternating),
		warmup:   fs.Duration("warmup", 500*time.Millisecond, "warm-up before each round's window (not recorded)"),
		duration: fs.Duration("duration", 2*time.Second, "measurement window of each round"),
		conns:    fs.Int("conns", 2, "HTTP/2 connections the streams share (Envoy keeps one per worker)"),
		seed:     fs.Uint64("seed", 1, "seed of payloads, session keys and pacing"),
	}
}
