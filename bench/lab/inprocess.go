package lab

import (
	"errors"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/distillguard/distillguard/config"
)

// newInProcessServer builds the real distillguard ext_proc server.
func newInProcessServer(cfg *config.Config, now func() time.Time) (extprocv3.ExternalProcessorServer, func(), error) {
	return nil, nil, errors.New("lab: the in-process ext_proc server is not available in this build; pass -addr")
}
