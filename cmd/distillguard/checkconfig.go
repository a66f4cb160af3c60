package main

import (
	"fmt"
	"io"

	"github.com/distillguard/distillguard/config"
)

// printCheck reports a valid configuration: "config ok", where it came
// from, the listeners, and the effective policy of every route and verdict
// (inherited fields included), so an operator sees what each tier does
// before running it.
func printCheck(w io.Writer, c *config.Config, name string) error {
	fmt.Fprintf(w, "config ok (%s)\n", name)
	fmt.Fprintf(w, "grpc %s, admin %s, tls %v, scoring %v, shadow %v\n\n",
		c.Server.GRPCAddr, c.Server.AdminAddr, c.Server.TLS.Enabled(), c.Scoring.Enabled, c.Scoring.Shadow)
	return c.WritePolicyTable(w)
}
