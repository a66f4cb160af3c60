// Command distillguard-bench measures the latency distillguard adds per
// ext_proc message against a no-op processor.
//
//	distillguard-bench run [flags]          # the matrix: alternating rounds, report in -out
//	distillguard-bench load -addr A [flags] # one load run against any ext_proc server
//	distillguard-bench floors [flags]       # distillguard beside the noop and echo floors and no ext_proc
//	distillguard-bench serve-noop -grpc-addr A -admin-addr B
//	distillguard-bench serve-echo -grpc-addr A -admin-addr B
//	distillguard-bench serve-read-floor [-redis R] -grpc-addr A -admin-addr B
//	distillguard-bench serve-distillguard -config F -grpc-addr A -admin-addr B [-pprof]
//	distillguard-bench e2e [flags]          # through envoy/envoy.yaml when envoy is on PATH
//	distillguard-bench replicated [flags]   # replicated mode (Redis) against in-memory scoring
//
// Servers under test run as child processes (this binary's serve-* modes, or
// the distillguard binary given with -distillguard), so their CPU time and
// RSS are measured apart from the load generator. Everything listens and
// connects on 127.0.0.1 only.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	os.Exit(runMain(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: distillguard-bench <command> [flags]

commands:
  run                  run the benchmark matrix (default)
  load                 one load run against an ext_proc address
  floors               distillguard beside the noop and echo processors and no ext_proc at all
  serve-noop           serve the no-op processor (baseline)
  serve-echo           serve the echo processor (every response body replaced by itself)
  serve-read-floor     serve the read floor: refuse every request, after one Redis session read with -redis
  serve-distillguard   serve the real distillguard processor in this process
  e2e                  end-to-end through Envoy (needs envoy on PATH)
  replicated           replicated mode on a real redis-server against in-memory scoring

"distillguard-bench <command> -h" lists a command's flags.
`

func runMain(args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	switch cmd {
	case "run":
		err = cmdRun(ctx, args, stdout, stderr)
	case "load":
		err = cmdLoad(ctx, args, stdout, stderr)
	case "floors":
		err = cmdFloors(ctx, args, stdout, stderr)
	case "serve-echo":
		err = cmdServeEcho(ctx, args, stderr)
	case "serve-noop":
		err = cmdServeNoop(ctx, args, stderr)
	case "serve-read-floor":
		err = cmdServeReadFloor(ctx, args, stderr)
	case "serve-distillguard":
		err = cmdServeDistillguard(ctx, args, stderr)
	case "e2e":
		err = cmdE2E(ctx, args, stdout, stderr)
	case "replicated":
		err = cmdReplicated(ctx, args, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "distillguard-bench: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	default:
		fmt.Fprintf(stderr, "distillguard-bench %s: %v\n", cmd, err)
		return 1
	}
}

var errUsage = errors.New("usage")

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected arguments %q\n", fs.Args())
		return errUsage
	}
	return nil
}
