package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/procfs"
)

// ServerSpec says how to start one server under test as a child process, so
// its CPU time and RSS are its own. In Argv, "{grpc}", "{admin}" and
// "{config}" are replaced by the chosen loopback addresses and the path of
// Config written to a file.
type ServerSpec struct {
	Name   string
	Argv   []string
	Config []byte
}

// Serving returns the spec of another serve mode of the same binary: Argv
// is the binary, its mode, then that mode's flags, so the binary and the
// address flags are kept and the mode and its extra flags replaced.
func (s ServerSpec) Serving(name, mode string, flags ...string) ServerSpec {
	s.Name = name
	s.Argv = append(append([]string{s.Argv[0], mode}, flags...), s.Argv[2:]...)
	return s
}

// Child is a running server process.
type Child struct {
	Name      string
	GRPCAddr  string
	AdminAddr string
	// IdleRSS is the resident set right after start, before any traffic.
	IdleRSS int64
	Log     string

	*process
	proc procfs.Proc
	http *http.Client
}

// freeLoopbackPort asks the kernel for an unused loopback port.
func freeLoopbackPort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// StartChild starts spec with its output in dir and waits until its admin
// /readyz answers (at most 20s).
func StartChild(ctx context.Context, spec ServerSpec, dir string) (*Child, error) {
	if len(spec.Argv) == 0 {
		return nil, errors.New("server spec: empty argv")
	}
	grpcAddr, err := freeLoopbackPort()
	if err != nil {
		return nil, err
	}
	adminAddr, err := freeLoopbackPort()
	if err != nil {
		return nil, err
	}
	cfgPath := ""
	if spec.Config != nil {
		cfgPath = filepath.Join(dir, spec.Name+".yaml")
		if err := os.WriteFile(cfgPath, spec.Config, 0o644); err != nil {
			return nil, err
		}
	}
	args := make([]string, len(spec.Argv))
	for i, a := range spec.Argv {
		a = strings.ReplaceAll(a, "{grpc}", grpcAddr)
		a = strings.ReplaceAll(a, "{admin}", adminAddr)
		a = strings.ReplaceAll(a, "{config}", cfgPath)
		args[i] = a
	}
	logPath := filepath.Join(dir, spec.Name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	p, err := startProcess(args, logf, logf, logf)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	c := &Child{
		Name: spec.Name, GRPCAddr: grpcAddr, AdminAddr: adminAddr, Log: logPath,
		process: p,
		http:    &http.Client{Timeout: 60 * time.Second},
	}
	probe := &http.Client{Timeout: time.Second}
	err = p.awaitReady(ctx, 20*time.Second, 20*time.Millisecond, func() bool {
		return httpOK(probe, "http://"+adminAddr+"/readyz")
	})
	switch {
	case errors.Is(err, errExited):
		return nil, fmt.Errorf("%s exited during start; see %s: %s", spec.Name, logPath, tail(logPath))
	case errors.Is(err, errNotReady):
		c.Stop()
		return nil, fmt.Errorf("%s not ready after 20s; see %s", spec.Name, logPath)
	case err != nil:
		c.Stop()
		return nil, err
	}
	if c.proc, err = procfs.NewProc(p.cmd.Process.Pid); err != nil {
		c.Stop()
		return nil, err
	}
	// Let start-up garbage settle before taking the idle footprint.
	time.Sleep(200 * time.Millisecond)
	s, err := c.Sample()
	if err != nil {
		c.Stop()
		return nil, err
	}
	c.IdleRSS = s.RSS
	return c, nil
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// Pid is the child's process id.
func (c *Child) Pid() int { return c.cmd.Process.Pid }

// Stop ends the child: SIGTERM, then SIGKILL after 10s.
func (c *Child) Stop() { c.stop() }

// ProcSample is a reading of the child's /proc entries.
type ProcSample struct {
	CPU time.Duration // utime + stime (/proc/<pid>/stat)
	RSS int64         // VmRSS (/proc/<pid>/status), bytes
}

// Sample reads the child's CPU time and resident set.
func (c *Child) Sample() (ProcSample, error) {
	st, err := c.proc.Stat()
	if err != nil {
		return ProcSample{}, err
	}
	ss, err := c.proc.NewStatus()
	if err != nil {
		return ProcSample{}, err
	}
	return ProcSample{CPU: time.Duration(st.CPUTime() * float64(time.Second)), RSS: int64(ss.VmRSS)}, nil
}

// Go runtime series read from a server's /metrics (the Prometheus Go
// collector, which cmd/distillguard registers too).
const (
	metricMallocs    = "go_memstats_mallocs_total"
	metricHeapInuse  = "go_memstats_heap_inuse_bytes"
	metricStackInuse = "go_memstats_stack_inuse_bytes"
)

// RuntimeStats are the Go runtime figures of a server process.
type RuntimeStats struct {
	Mallocs    uint64 // cumulative heap allocations
	HeapInuse  int64  // bytes in in-use heap spans
	StackInuse int64  // bytes of goroutine stacks
}

// Runtime reads the child's Go runtime figures from its /metrics.
func (c *Child) Runtime() (RuntimeStats, error) {
	resp, err := c.http.Get("http://" + c.AdminAddr + "/metrics")
	if err != nil {
		return RuntimeStats{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return RuntimeStats{}, fmt.Errorf("/metrics: %s", resp.Status)
	}
	v, err := scanMetrics(resp.Body, metricMallocs, metricHeapInuse, metricStackInuse)
	if err != nil {
		return RuntimeStats{}, err
	}
	return RuntimeStats{Mallocs: uint64(v[0]), HeapInuse: int64(v[1]), StackInuse: int64(v[2])}, nil
}

// scanMetrics reads the values of unlabelled counters or gauges from the
// Prometheus text exposition format
// (https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format),
// reading at most 16 MiB. Every name must be present with a value in
// [0, 2^63].
func scanMetrics(r io.Reader, names ...string) ([]float64, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(io.LimitReader(r, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("/metrics: %w", err)
	}
	out := make([]float64, len(names))
	for i, name := range names {
		fam, ok := fams[name]
		if !ok || len(fam.GetMetric()) == 0 {
			return nil, fmt.Errorf("%s not exposed", name)
		}
		m := fam.GetMetric()[0]
		var v float64
		switch {
		case m.GetCounter() != nil:
			v = m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			v = m.GetGauge().GetValue()
		default:
			v = m.GetUntyped().GetValue()
		}
		if !(v >= 0 && v <= 1<<63) {
			return nil, fmt.Errorf("%s: value %g out of range", name, v)
		}
		out[i] = v
	}
	return out, nil
}

// Profile fetches a CPU profile of seconds and then the allocation profile
// from the child's net/http/pprof, into the given files.
func (c *Child) Profile(ctx context.Context, seconds int, cpuOut, allocsOut string) error {
	get := func(url, out string) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := c.http.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s (does the server serve pprof?)", url, resp.Status)
		}
		f, err := os.Create(out)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, io.LimitReader(resp.Body, 256<<20)); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}
	base := "http://" + c.AdminAddr + "/debug/pprof/"
	if err := get(base+"profile?seconds="+strconv.Itoa(seconds), cpuOut); err != nil {
		return err
	}
	return get(base+"allocs", allocsOut)
}
