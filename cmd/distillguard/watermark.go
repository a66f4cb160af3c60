package main

import (
	"fmt"
	"io"

	"github.com/distillguard/distillguard/watermark"
)

// watermarkUsage lists the watermark subcommands.
const watermarkUsage = `usage: distillguard watermark COMMAND [flags]

commands:
  verify   test suspect outputs for the watermark of a key file's keys
           (distillguard watermark verify -key-file F [-mode text|logprobs] [-contexts C] [-prompts P] [-reference R] [-decoys N] FILE...)
  keygen   create a key set file, or add a fresh key to one and make it active
           (distillguard watermark keygen -key-file F [-id ID])
  contexts count context statistics in the provider's own unmarked output
           (distillguard watermark contexts -o OUT FILE...)
  probe    send a probe set to a suspect's endpoint (Chat Completions, legacy
           Completions, Responses, Gemini generateContent or Anthropic
           Messages) and keep the answers for verify (with -key-file,
           verify them too)
           (distillguard watermark probe -url URL -prompts P -o OUT [-api chat|completions|responses|gemini|anthropic] [-model M] [-api-key-env VAR] [-key-file F] ...)
`

// runWatermark dispatches `distillguard watermark ...`.
func runWatermark(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, watermarkUsage)
		return 2
	}
	switch args[0] {
	case "verify":
		return watermark.RunVerify(args[1:], stdout, stderr)
	case "keygen":
		return watermark.RunKeygen(args[1:], stdout, stderr)
	case "contexts":
		return watermark.RunContexts(args[1:], stdout, stderr)
	case "probe":
		return watermark.RunProbe(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, watermarkUsage)
		return 0
	}
	fmt.Fprintf(stderr, "distillguard watermark: unknown command %q\n%s", args[0], watermarkUsage)
	return 2
}
