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

	"github.com/distillguard/distillguard/bench"
)

// cmdReplicated measures replicated mode against in-memory scoring
// (bench.RunReplicated).
func cmdReplicated(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("replicated", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rf := addRoundFlags(fs, "bench-out", "directory for replicated.md and replicated.json", "in-memory and replicated")
	out, rounds, warmup, duration, dgBin, conns, seed := rf.out, rf.rounds, rf.warmup, rf.duration, rf.dgBin, rf.conns, rf.seed
	redis := fs.String("redis", "", "Redis host:port on loopback (default: start a redis-server for the run)")
	conc := fs.Int("c", 32, "concurrent streams")
	sessions := fs.Int("sessions", 4096, "session keys the exchanges draw from")
	rate := fs.Float64("rate", 0, "open-loop message rate over all streams, every message paced (0: closed loop)")
	exchRate := fs.Float64("exchange-rate", 0, "open-loop exchange rate over all streams, each exchange's later messages sent on the previous reply as Envoy sends them (overrides -rate)")
	corpusFlag := fs.String("corpus", "", "prompt corpus directory (synthetic prompts when absent)")
	floor := fs.Bool("read-floor", false, "also run the read floor: a processor that only refuses each request, without and with one Redis session read per request (the least any replicated design adds)")
	writeDelay := fs.Duration("write-delay", -1, "scoring.redis.write_delay of the replicated server (negative: the default)")
	if err := parse(fs, args); err != nil {
		return err
	}
	noop, dg, err := serverSpecs(*dgBin)
	if err != nil {
		return err
	}
	if !*floor {
		noop = bench.ServerSpec{}
	}
	rep, err := bench.RunReplicated(ctx, bench.ReplicatedConfig{
		Distillguard: dg, RedisAddr: *redis, Rounds: *rounds, Warmup: *warmup, Duration: *duration,
		Concurrency: *conc, Conns: *conns, Sessions: *sessions, Seed: *seed, Rate: *rate, ExchangeRate: *exchRate, WriteDelay: *writeDelay, Noop: noop, Prompts: loadPrompts(*corpusFlag, stderr),
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
