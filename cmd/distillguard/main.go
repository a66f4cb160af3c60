// Command distillguard is the ext_proc server: it serves
// envoy.service.ext_proc.v3.ExternalProcessor and grpc.health.v1.Health on
// the gRPC port, and /healthz, /readyz, /metrics and the session admin API on
// the admin port.
//
//	distillguard                         # embedded default policy
//	distillguard -config policy.yaml     # layered over the default
//	distillguard -config policy.yaml -check-config   # validate, print what each tier does per route
//	distillguard watermark verify -key-file F FILE...   # see runWatermark
//	distillguard watermark keygen -key-file F [-id ID]
//	distillguard watermark probe -url URL -prompts P -o OUT [-key-file F]
//	distillguard evidence export -url URL -token-file F -session ID [-o FILE]
//	distillguard evidence verify (-key F | -public-key K) FILE...
//
// SIGHUP reloads the config file (a bad file keeps the running config).
// SIGTERM or SIGINT drains: health turns NOT_SERVING, new streams are refused,
// in-flight streams get server.drain_grace to finish, then the process exits 0.
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

	"github.com/distillguard/distillguard/evidence"
)

func main() {
	os.Exit(runMain(os.Args[1:], os.Stdout, os.Stderr))
}

// runMain parses flags and runs the server until a terminating signal.
func runMain(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "watermark" {
		return runWatermark(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "evidence" {
		return evidence.Run(args[1:], stdout, stderr)
	}
	opts, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if opts.checkOnly {
		cfg, err := loadConfig(opts)
		if err != nil {
			fmt.Fprintf(stderr, "distillguard: config invalid: %v\n", err)
			return 1
		}
		if err := printCheck(stdout, cfg, configName(opts.configPath)); err != nil {
			fmt.Fprintf(stderr, "distillguard: %v\n", err)
			return 1
		}
		return 0
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	if err := run(context.Background(), opts, sigs, stderr, nil); err != nil {
		fmt.Fprintf(stderr, "distillguard: %v\n", err)
		return 1
	}
	return 0
}

type options struct {
	configPath  string
	grpcAddr    string
	adminAddr   string
	checkOnly   bool
	tlsCert     string
	tlsKey      string
	tlsClientCA string
	pprof       bool
	set         map[string]bool // flags given explicitly
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("distillguard", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{}
	fs.StringVar(&o.configPath, "config", "", "YAML config file, layered over the embedded default (optional)")
	fs.StringVar(&o.grpcAddr, "grpc-addr", "127.0.0.1:50051", "ext_proc gRPC listen address, host:port or unix:///path (overrides server.grpc_addr)")
	fs.StringVar(&o.adminAddr, "admin-addr", "127.0.0.1:9090", "admin HTTP listen address: /healthz /readyz /metrics /v1/sessions (overrides server.admin_addr)")
	fs.BoolVar(&o.checkOnly, "check-config", false, "validate the configuration and exit")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "PEM certificate for the gRPC port (overrides server.tls.cert_file)")
	fs.StringVar(&o.tlsKey, "tls-key", "", "PEM private key for the gRPC port (overrides server.tls.key_file)")
	fs.StringVar(&o.tlsClientCA, "tls-client-ca", "", "PEM CA bundle; when set, clients must present a certificate it signed (mTLS)")
	fs.BoolVar(&o.pprof, "pprof", false, "serve net/http/pprof on the admin port")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: distillguard [flags]\n       distillguard watermark verify|keygen [flags] (run \"distillguard watermark\" for details)\n       distillguard evidence export|verify [flags] (run \"distillguard evidence\" for details)\n\nflags:")
		fs.PrintDefaults()
		fmt.Fprintln(stderr, "\nOTLP export and tracing: the standard OTEL_* environment variables (OTEL_EXPORTER_OTLP_ENDPOINT, ...;\nREADME, Tracing and OTLP). None set: no export, no tracing, Prometheus /metrics only.")
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "distillguard: unexpected arguments %q\n", fs.Args())
		fs.Usage()
		return nil, errors.New("unexpected arguments")
	}
	o.set = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { o.set[f.Name] = true })
	return o, nil
}
