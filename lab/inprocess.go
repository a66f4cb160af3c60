package lab

import (
	"net"
	"time"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/server"
)

// labSeed makes the in-process scoring engine deterministic
// (scoring.Options.Seed): the same seed and traffic give the same report.
const labSeed = "distillguard-lab"

// startServer serves the in-process ext_proc server on loopback ports
// through server.New, the assembly cmd/distillguard runs: extproc with the
// session-risk engine on the simulated clock now, or the substitute
// p.NewServer builds, with the production gRPC settings either way. The
// returned stop drains it and waits for every goroutine it started.
func startServer(p DetectionParams, now func() time.Time) (string, func(), error) {
	srv, stop, err := startServerFull(p, p.Config, now)
	if err != nil {
		return "", nil, err
	}
	return srv.GRPCAddr(), stop, nil
}

// startServerFull is startServer with the configuration given and the
// server returned (replicated replays drive its engine's Flush).
func startServerFull(p DetectionParams, cfg *config.Config, now func() time.Time) (*server.Server, func(), error) {
	if cfg == nil {
		cfg = config.Default()
	}
	opts := server.Options{Clock: now, Seed: []byte(labSeed)}
	closeSub := func() {}
	if p.NewServer != nil {
		sub, c, err := p.NewServer(cfg, now)
		if err != nil {
			return nil, nil, err
		}
		opts.Processor, closeSub = sub, c
	}
	// Loopback ports of the kernel's choosing: the configured addresses
	// are production ones, and several lab runs may share a machine.
	var err error
	if opts.GRPCListener, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		closeSub()
		return nil, nil, err
	}
	if opts.AdminListener, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		opts.GRPCListener.Close()
		closeSub()
		return nil, nil, err
	}
	srv, err := server.New(cfg, opts)
	if err != nil {
		closeSub()
		return nil, nil, err
	}
	srv.Start()
	return srv, func() {
		srv.Drain(cfg.Server.DrainGrace)
		closeSub()
	}, nil
}
