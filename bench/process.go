package bench

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os/exec"
	"syscall"
	"time"
)

// process is a started child process (a server under test or Envoy). Its
// waiter goroutine is owned by the process and ends when the process does,
// closing exited.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

// startProcess starts argv with the given stdout and stderr. log, when not
// nil, is closed once the process has exited, or at once when it fails to
// start. The process is killed when the suite dies (Pdeathsig), so no
// server outlives a killed run.
func startProcess(argv []string, stdout, stderr io.Writer, log io.Closer) (*process, error) {
	if len(argv) == 0 {
		return nil, errors.New("empty argv")
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		if log != nil {
			log.Close()
		}
		return nil, err
	}
	p := &process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		if log != nil {
			log.Close()
		}
		close(p.exited)
	}()
	return p, nil
}

// stop ends the process: SIGTERM, then SIGKILL after 10s. It returns once
// the process has exited.
func (p *process) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// Reasons awaitReady gives up.
var (
	errExited   = errors.New("exited during start")
	errNotReady = errors.New("not ready in time")
)

// awaitReady polls ready every interval until it reports true. It gives up
// with errExited when the process exits, ctx.Err() when ctx ends, and
// errNotReady once timeout has passed.
func (p *process) awaitReady(ctx context.Context, timeout, interval time.Duration, ready func() bool) error {
	deadline := time.Now().Add(timeout)
	for !ready() {
		select {
		case <-p.exited:
			return errExited
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
		if time.Now().After(deadline) {
			return errNotReady
		}
	}
	return nil
}

// httpOK reports whether a GET of url answers 200 OK: the readiness probe of
// both the servers' /readyz and Envoy's admin /ready.
func httpOK(cl *http.Client, url string) bool {
	resp, err := cl.Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
