package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/distillguard/distillguard/bench"
)

func cmdE2E(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("e2e", flag.ContinueOnError)
	fs.SetOutput(stderr)
	envoyYAML := fs.String("envoy-config", "envoy/envoy.yaml", "Envoy bootstrap to run (ports are rewritten to free loopback ports)")
	dgBin := fs.String("distillguard", "", "distillguard binary (default: this binary's serve-distillguard mode)")
	out := fs.String("out", "bench-out", "output directory")
	streams := fs.Int("c", 16, "concurrent client streams")
	requests := fs.Int("requests", 200, "requests per server")
	tokens := fs.Int("tokens", 50, "tokens per response")
	interval := fs.Duration("token-interval", 20*time.Millisecond, "time between upstream tokens")
	if err := parse(fs, args); err != nil {
		return err
	}
	envoy, err := exec.LookPath("envoy")
	if err != nil {
		fmt.Fprintln(stdout, "e2e: envoy is not on PATH; skipping")
		return nil
	}
	noop, dg, err := serverSpecs(*dgBin)
	if err != nil {
		return err
	}
	dg.Config = []byte("scoring:\n  enabled: false\n")
	rep, err := bench.RunE2E(ctx, bench.E2EConfig{
		Envoy: envoy, EnvoyYAML: *envoyYAML, Noop: noop, Dg: dg,
		Streams: *streams, Requests: *requests, Tokens: *tokens, Interval: *interval, OutDir: *out,
	})
	if err != nil {
		return err
	}
	for _, name := range []string{bench.NameNoop, bench.NameDistillguard} {
		r := rep.Servers[name]
		fmt.Fprintf(stdout, "%-12s TTFT p50 %.0f µs p99 %.0f µs; inter-token p50 %.0f µs p99 %.0f µs; %d errors\n",
			name, r.TTFT.P50, r.TTFT.P99, r.ITL.P50, r.ITL.P99, r.Errors)
	}
	fmt.Fprintf(stdout, "added by distillguard: TTFT p50 %+.0f µs, inter-token p50 %+.0f µs, p99 %+.0f µs\n",
		rep.AddedTTFTp50us, rep.AddedITLp50us, rep.AddedITLp99us)
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(*out, "e2e.json"), b, 0o644)
}
