package lab

import (
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/extproc"
	"github.com/distillguard/distillguard/scoring"
)

// newInProcessServer builds the real distillguard ext_proc server: extproc
// with the session-risk engine, both on the simulated clock.
func newInProcessServer(cfg *config.Config, now func() time.Time) (extprocv3.ExternalProcessorServer, func(), error) {
	eng, err := scoring.New(cfg.Scoring, scoring.Options{Clock: now, Seed: []byte("distillguard-lab")})
	if err != nil {
		return nil, nil, err
	}
	srv, err := extproc.New(extproc.Options{
		Config: func() *config.Config { return cfg },
		Scorer: eng,
		Now:    now,
	})
	if err != nil {
		eng.Close()
		return nil, nil, err
	}
	return srv, func() { eng.Close() }, nil
}
