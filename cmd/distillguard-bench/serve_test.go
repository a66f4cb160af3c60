package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/distillguard/distillguard/bench"
)

func TestServerSpecs(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs("bin/distillguard")
	if err != nil {
		t.Fatal(err)
	}
	addrs := []string{"-grpc-addr", "{grpc}", "-admin-addr", "{admin}"}
	wantNoop := append([]string{self, "serve-noop"}, addrs...)
	tests := []struct {
		dgBin  string
		wantDg []string
	}{
		{"", append([]string{self, "serve-distillguard", "-config", "{config}"}, addrs...)},
		{"bin/distillguard", append([]string{abs, "-config", "{config}"}, addrs...)},
		{"/opt/dg", append([]string{"/opt/dg", "-config", "{config}"}, addrs...)},
	}
	for _, tc := range tests {
		noop, dg, err := serverSpecs(tc.dgBin)
		if err != nil {
			t.Fatalf("%q: %v", tc.dgBin, err)
		}
		if noop.Name != bench.NameNoop || !slices.Equal(noop.Argv, wantNoop) {
			t.Errorf("%q: noop %q %q, want %q %q", tc.dgBin, noop.Name, noop.Argv, bench.NameNoop, wantNoop)
		}
		if dg.Name != bench.NameDistillguard || !slices.Equal(dg.Argv, tc.wantDg) {
			t.Errorf("%q: distillguard %q %q, want %q %q", tc.dgBin, dg.Name, dg.Argv, bench.NameDistillguard, tc.wantDg)
		}
		if noop.Config != nil || dg.Config != nil {
			t.Errorf("%q: specs carry a config", tc.dgBin)
		}
	}
}
