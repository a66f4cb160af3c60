package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/distillguard/distillguard/bench"
)

func cmdLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:50051", "ext_proc gRPC address (loopback only)")
	conc := fs.Int("c", 32, "concurrent streams")
	conns := fs.Int("conns", 2, "HTTP/2 connections")
	duration := fs.Duration("duration", 5*time.Second, "measurement window (with -exchanges: its upper bound)")
	warmup := fs.Duration("warmup", time.Second, "warm-up, not recorded")
	exchanges := fs.Int64("exchanges", 0, "end the window after this many exchanges (0: run for -duration)")
	rate := fs.Float64("rate", 0, "open-loop message rate over all streams (0: closed loop)")
	modeS := fs.String("mode", "streamed", "response body mode: streamed or duplex")
	kindS := fs.String("kind", "stream", "response kind: stream, json or embeddings")
	mixS := fs.String("mix", "5", "top_logprobs alternatives mix, e.g. 0:1,5:1,20:1")
	tokens := fs.Int("tokens", 100, "content events per stream")
	jsonBytes := fs.Int("json-bytes", 100<<10, "size of a json response")
	dims := fs.Int("dims", 3072, "embedding dimensions")
	distinct := fs.Bool("distinct-sessions", false, "a new session for every exchange")
	seed := fs.Uint64("seed", 1, "seed")
	window := fs.Int("window", 8, "unanswered chunks per stream in duplex mode")
	jsonOut := fs.String("json", "", "also write the result as JSON to this file")
	if err := parse(fs, args); err != nil {
		return err
	}
	mode, err := bench.ParseMode(*modeS)
	if err != nil {
		return err
	}
	mix, err := bench.ParseMix(*mixS)
	if err != nil {
		return err
	}
	spec := bench.WorkloadSpec{Mix: mix, Tokens: *tokens, JSONBytes: *jsonBytes, Dimensions: *dims}
	switch *kindS {
	case "stream":
		spec.Kind = bench.KindStream
	case "json":
		spec.Kind = bench.KindJSON
	case "embeddings":
		spec.Kind = bench.KindEmbeddings
	default:
		return fmt.Errorf("kind %q: want stream, json or embeddings", *kindS)
	}
	if err := bench.CheckLoopback(*addr); err != nil {
		return err
	}
	wl, err := bench.BuildWorkload(spec, *seed)
	if err != nil {
		return err
	}
	cfg := bench.LoadConfig{
		Addr: *addr, Conns: *conns, Concurrency: *conc, Warmup: *warmup, Duration: *duration,
		Exchanges: *exchanges, Rate: *rate, Mode: mode, Window: *window, Workload: wl, Seed: *seed,
		DistinctSessions: *distinct,
	}
	if f, ok := stderr.(*os.File); ok && isTerminal(f) {
		cfg.Progress = func(in time.Duration, msgs, errs uint64) {
			fmt.Fprintf(stderr, "\r\x1b[K%5.1fs %10d messages %6d errors", in.Seconds(), msgs, errs)
		}
	}
	res, err := bench.Run(ctx, cfg)
	if cfg.Progress != nil {
		fmt.Fprint(stderr, "\r\x1b[K")
	}
	if err != nil {
		return err
	}
	h := res.Latency
	fmt.Fprintf(stdout, "%s %s, %d streams: %d messages in %s (%.0f msg/s), %d exchanges, %d errors, %d rejected\n",
		spec.Kind, mode, *conc, res.Messages, res.Elapsed.Round(time.Millisecond), res.MessagesPerSec(), res.Exchanges, res.Errors, res.Rejected)
	fmt.Fprintf(stdout, "latency p50 %v  p90 %v  p99 %v  p99.9 %v  max %v\n",
		h.Quantile(0.5), h.Quantile(0.9), h.Quantile(0.99), h.Quantile(0.999), time.Duration(h.Max))
	for k, kh := range res.ByKind {
		if kh.Count > 0 {
			fmt.Fprintf(stdout, "  %-17s n=%-9d p50 %v  p99 %v\n", bench.KindName(k), kh.Count, kh.Quantile(0.5), kh.Quantile(0.99))
		}
	}
	if res.Messages > 0 {
		fmt.Fprintf(stdout, "generator CPU %.1f µs/msg\n", float64(res.ClientCPU.Microseconds())/float64(res.Messages))
	}
	for _, s := range res.ErrorSamples {
		fmt.Fprintf(stdout, "error: %s\n", s)
	}
	if *jsonOut != "" {
		b, err := json.MarshalIndent(struct {
			*bench.LoadResult
			MsgsPerSec float64 `json:"msgs_per_s"`
			P50us      float64 `json:"p50_us"`
			P90us      float64 `json:"p90_us"`
			P99us      float64 `json:"p99_us"`
			P999us     float64 `json:"p99_9_us"`
		}{res, res.MessagesPerSec(), us(h.Quantile(0.5)), us(h.Quantile(0.9)), us(h.Quantile(0.99)), us(h.Quantile(0.999))}, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*jsonOut, b, 0o644); err != nil {
			return err
		}
	}
	if res.Errors > 0 {
		return errors.New("some messages failed")
	}
	return nil
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
