package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
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

// Child is a running server process.
type Child struct {
	Name      string
	GRPCAddr  string
	AdminAddr string
	// IdleRSS is the resident set right after start, before any traffic.
	IdleRSS int64
	Log     string

	cmd    *exec.Cmd
	proc   procfs.Proc
	exited chan struct{}
	http   *http.Client
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
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// The child dies with the suite even if the suite is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	c := &Child{
		Name: spec.Name, GRPCAddr: grpcAddr, AdminAddr: adminAddr, Log: logPath,
		cmd: cmd, exited: make(chan struct{}),
		http: &http.Client{Timeout: 60 * time.Second},
	}
	// The waiter goroutine is owned by the Child and ends with the process.
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(c.exited)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c.ready() {
			break
		}
		select {
		case <-c.exited:
			return nil, fmt.Errorf("%s exited during start; see %s: %s", spec.Name, logPath, tail(logPath))
		case <-ctx.Done():
			c.Stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.Stop()
			return nil, fmt.Errorf("%s not ready after 20s; see %s", spec.Name, logPath)
		}
	}
	if c.proc, err = procfs.NewProc(cmd.Process.Pid); err != nil {
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

func (c *Child) ready() bool {
	cl := http.Client{Timeout: time.Second}
	resp, err := cl.Get("http://" + c.AdminAddr + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
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
func (c *Child) Stop() {
	select {
	case <-c.exited:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
}

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

// Mallocs reads go_memstats_mallocs_total (cumulative heap allocations) from
// the child's /metrics.
func (c *Child) Mallocs() (uint64, error) {
	resp, err := c.http.Get("http://" + c.AdminAddr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("/metrics: %s", resp.Status)
	}
	return scanCounter(resp.Body, "go_memstats_mallocs_total")
}

// scanCounter reads the value of the unlabelled counter or gauge name from
// the Prometheus text exposition format
// (https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format),
// reading at most 16 MiB.
func scanCounter(r io.Reader, name string) (uint64, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(io.LimitReader(r, 16<<20))
	if err != nil {
		return 0, fmt.Errorf("/metrics: %w", err)
	}
	fam, ok := fams[name]
	if !ok || len(fam.GetMetric()) == 0 {
		return 0, fmt.Errorf("%s not exposed", name)
	}
	m := fam.GetMetric()[0]
	v := m.GetCounter().GetValue()
	if m.GetCounter() == nil {
		v = m.GetUntyped().GetValue() + m.GetGauge().GetValue()
	}
	if v < 0 || v > 1<<63 {
		return 0, fmt.Errorf("%s: value %g out of range", name, v)
	}
	return uint64(v), nil
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
