package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/redis/rueidis"

	"github.com/distillguard/distillguard/bench"
)

func serveFlags(name string, stderr io.Writer) (*flag.FlagSet, *bench.ServeOptions) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &bench.ServeOptions{}
	fs.StringVar(&o.GRPCAddr, "grpc-addr", "127.0.0.1:50061", "ext_proc gRPC listen address (loopback only)")
	fs.StringVar(&o.AdminAddr, "admin-addr", "127.0.0.1:9091", "admin listen address for /readyz and /metrics (loopback only)")
	fs.BoolVar(&o.Pprof, "pprof", false, "serve net/http/pprof on the admin address")
	return fs, o
}

func cmdServeNoop(ctx context.Context, args []string, stderr io.Writer) error {
	fs, o := serveFlags("serve-noop", stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	o.Processor = bench.NewNoop()
	return bench.Serve(ctx, *o)
}

func cmdServeEcho(ctx context.Context, args []string, stderr io.Writer) error {
	fs, o := serveFlags("serve-echo", stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	o.Processor = bench.NewEcho()
	return bench.Serve(ctx, *o)
}

func cmdServeReadFloor(ctx context.Context, args []string, stderr io.Writer) error {
	fs, o := serveFlags("serve-read-floor", stderr)
	addr := fs.String("redis", "", "Redis host:port on loopback (empty: the same processor without the read)")
	sessions := fs.Int("sessions", 4096, "sessions whose keys are stored before serving")
	timeout := fs.Duration("timeout", 30*time.Millisecond, "deadline of each read (scoring.redis.call_timeout's default)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *addr == "" {
		o.Processor = bench.NewReadFloor(nil, 0)
		return bench.Serve(ctx, *o)
	}
	if err := bench.CheckLoopback(*addr); err != nil {
		return err
	}
	c, err := rueidis.NewClient(bench.ReadFloorOptions(*addr))
	if err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	defer c.Close()
	if err := bench.SeedReadFloor(ctx, c, *sessions, time.Hour); err != nil {
		return fmt.Errorf("redis: storing the sessions' keys: %w", err)
	}
	o.Processor = bench.NewReadFloor(c, *timeout)
	return bench.Serve(ctx, *o)
}

func cmdServeDistillguard(ctx context.Context, args []string, stderr io.Writer) error {
	fs, o := serveFlags("serve-distillguard", stderr)
	fs.StringVar(&o.Config, "config", "", "distillguard YAML config, layered over the embedded default")
	if err := parse(fs, args); err != nil {
		return err
	}
	o.Log = stderr
	return bench.Serve(ctx, *o)
}

// serverSpecs says how the suite starts the two servers under test: this
// binary's serve-noop mode, and its serve-distillguard mode or, when dgBin
// is set, that distillguard binary (which takes the same -config,
// -grpc-addr and -admin-addr flags).
func serverSpecs(dgBin string) (noop, dg bench.ServerSpec, err error) {
	self, err := os.Executable()
	if err != nil {
		return noop, dg, err
	}
	dgArgv := []string{self, "serve-distillguard"}
	if dgBin != "" {
		p, err := filepath.Abs(dgBin)
		if err != nil {
			return noop, dg, err
		}
		dgArgv = []string{p}
	}
	addrs := []string{"-grpc-addr", "{grpc}", "-admin-addr", "{admin}"}
	noop = bench.ServerSpec{Name: bench.NameNoop, Argv: append([]string{self, "serve-noop"}, addrs...)}
	dg = bench.ServerSpec{Name: bench.NameDistillguard, Argv: append(append(dgArgv, "-config", "{config}"), addrs...)}
	return noop, dg, nil
}
