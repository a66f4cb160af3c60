//go:build unix

package mutate

import (
	"syscall"
	"time"
)

// processCPU returns the CPU time (user + system) the process has used. The
// rewrite benchmarks report it per operation next to ns/op: on a shared
// machine wall time includes waiting for a core, CPU time does not.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
