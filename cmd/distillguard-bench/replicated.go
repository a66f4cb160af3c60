package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/distillguard/distillguard/bench"
)

// cmdReplicated measures replicated mode against in-memory scoring
// (bench.RunReplicated).
func cmdReplicated(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("replicated", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "bench-out", "directory for replicated.md and replicated.json")
	dgBin := fs.String("distillguard", "", "distillguard binary (default: this binary's serve-distillguard mode)")
	redis := fs.String("redis", "", "Redis host:port on loopback (default: start a redis-server for the run)")
	rounds := fs.Int("rounds", 3, "rounds per server, alternating in-memory and replicated")
	warmup := fs.Duration("warmup", 500*time.Millisecond, "warm-up before each round's window")
	duration := fs.Duration("duration", 2*time.Second, "measurement window of each round")
	conc := fs.Int("c", 32, "concurrent streams")
	sessions := fs.Int("sessions", 4096, "session keys the exchanges draw from")
	conns := fs.Int("conns", 2, "HTTP/2 connections the streams share")
	seed := fs.Uint64("seed", 1, "seed of payloads and session keys")
	rate := fs.Float64("rate", 0, "open-loop message rate over all streams (0: closed loop)")
	corpusFlag := fs.String("corpus", "", "prompt corpus directory (synthetic prompts when absent)")
	if err := parse(fs, args); err != nil {
		return err
	}
	_, dg, err := serverSpecs(*dgBin)
	if err != nil {
		return err
	}
	rep, err := bench.RunReplicated(ctx, bench.ReplicatedConfig{
		Distillguard: dg, RedisAddr: *redis, Rounds: *rounds, Warmup: *warmup, Duration: *duration,
		Concurrency: *conc, Conns: *conns, Sessions: *sessions, Seed: *seed, Rate: *rate, Prompts: loadPrompts(*corpusFlag, stderr),
		OutDir: *out, Log: stderr,
	})
	if rep == nil {
		return err
	}
	if werr := os.MkdirAll(*out, 0o755); werr != nil {
		return errors.Join(err, werr)
	}
	j, jerr := json.MarshalIndent(rep, "", "  ")
	md := rep.Markdown()
	fmt.Fprint(stdout, md)
	return errors.Join(err, jerr,
		os.WriteFile(filepath.Join(*out, "replicated.json"), j, 0o644),
		os.WriteFile(filepath.Join(*out, "replicated.md"), []byte(md), 0o644))
}
