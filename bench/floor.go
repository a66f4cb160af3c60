package bench

import (
	"runtime"
	"time"

	procmodev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	"golang.org/x/sys/unix"

	"github.com/distillguard/distillguard/mutate"
)

// FloorResult is the in-process cost of the response rewrite alone: the
// mutate package's SSE framer and JSON rewriter on the same bodies the load
// generator sends, with no gRPC and no ext_proc protocol. It is what a build
// embedded in the proxy (a dynamic module or Wasm filter) would still pay per
// message.
type FloorResult struct {
	Messages int64 `json:"messages"`
	// NsPerMsg is CPU time of the rewriting thread per message.
	NsPerMsg     float64 `json:"cpu_ns_per_msg"`
	AllocsPerMsg float64 `json:"allocs_per_msg"`
	BytesPerMsg  float64 `json:"bytes_per_msg"`
}

// rewriteExchange runs one exchange's response bodies through the rewriter
// the server would use, returning the output buffer for reuse.
func rewriteExchange(x *exchange, p mutate.OutputPolicy, seed uint64, maxHeld int, dst []byte) []byte {
	rw := mutate.NewRewriter(p, seed)
	if x.respMode != procmodev3.ProcessingMode_BUFFERED { // an SSE stream
		s := mutate.NewSSEStream(rw, maxHeld)
		for i, c := range x.raw {
			dst = s.Write(dst[:0], c, i == len(x.raw)-1)
		}
		return dst
	}
	for _, b := range x.raw {
		dst, _ = rw.Rewrite(dst[:0], b)
	}
	return dst
}

// threadCPU is the CPU time of the calling OS thread. The floor counts CPU
// time rather than wall time so that other processes on a shared machine do
// not inflate it.
func threadCPU() time.Duration {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts) != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// RewriteFloor measures the rewrite of wl's response bodies under p for
// about minTime of CPU on the calling goroutine, locked to its thread.
func RewriteFloor(wl *Workload, p mutate.OutputPolicy, minTime time.Duration) FloorResult {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var xs []*exchange
	for _, v := range wl.exchanges {
		xs = append(xs, v...)
	}
	var dst []byte
	// One untimed pass sizes the output buffer and warms the caches.
	for _, x := range xs {
		dst = rewriteExchange(x, p, 1, 1<<20, dst)
	}
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	start := threadCPU()
	var msgs int64
	for i := 0; threadCPU()-start < minTime || i == 0; i++ {
		x := xs[i%len(xs)]
		dst = rewriteExchange(x, p, uint64(i), 1<<20, dst)
		msgs += int64(len(x.raw))
	}
	el := threadCPU() - start
	runtime.ReadMemStats(&m1)
	return FloorResult{
		Messages:     msgs,
		NsPerMsg:     float64(el.Nanoseconds()) / float64(msgs),
		AllocsPerMsg: float64(m1.Mallocs-m0.Mallocs) / float64(msgs),
		BytesPerMsg:  float64(m1.TotalAlloc-m0.TotalAlloc) / float64(msgs),
	}
}
