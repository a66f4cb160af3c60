// Package testtool holds what the deploy module's tests share: finding the
// external programs they run (skip with a message on a developer's machine,
// fail under CI=true), locating the distillguard module, building its
// server binary and running it on free local ports.
package testtool

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// debianPackage names the package that ships each tool
// (scripts/ensure-tools.sh installs them).
func debianPackage(tool string) string {
	switch tool {
	case "promtool":
		return "prometheus"
	default:
		return tool
	}
}

// Need returns the path of tool on PATH. When it is missing the test skips
// with a message, or fails when CI=true: CI must not pass by skipping.
func Need(t testing.TB, tool string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("%s is not on PATH: run scripts/ensure-tools.sh as root (or apt-get install %s)", tool, debianPackage(tool))
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + "; CI=true, so this fails instead of skipping")
	}
	t.Skip(msg)
	return ""
}

// Root returns the directory of the distillguard module (the one whose
// go.mod declares github.com/distillguard/distillguard), found upwards from
// the working directory.
func Root(t testing.TB) string {
	t.Helper()
	r, err := findRoot()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func findRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(b), "module github.com/distillguard/distillguard\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("distillguard module root not found above the working directory")
		}
		dir = parent
	}
}

// BuildServer compiles cmd/distillguard from the distillguard module (not
// from this one, so the binary is the one the project ships) into dir. The
// flags that change compiled packages (cgo off, -trimpath) are those of the
// image build (deploy/image), so the build cache serves both.
func BuildServer(t testing.TB, dir string) string {
	t.Helper()
	out, err := BuildServerIn(dir)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// BuildServerIn is BuildServer for callers without a testing.TB (a
// sync.OnceValues shared by a package's tests).
func BuildServerIn(dir string) (string, error) {
	root, err := findRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "distillguard")
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, "./cmd/distillguard")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/distillguard: %v\n%s", err, b)
	}
	return out, nil
}

// Server is a running distillguard process.
type Server struct {
	GRPC, Admin string // bound addresses
	cmd         *exec.Cmd
	done        chan error
	stop        sync.Once
	mu          sync.Mutex
	log         strings.Builder
}

// Log returns what the server has logged so far.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

// Start runs bin with args (which should bind both listeners to port 0 on
// 127.0.0.1) and returns once the server logs its bound addresses. The
// process is stopped with SIGTERM when the test ends and must exit 0.
func Start(t testing.TB, bin string, args ...string) *Server {
	t.Helper()
	s := &Server{done: make(chan error, 1)}
	s.cmd = exec.Command(bin, args...)
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stdout = io.Discard
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrs := make(chan [2]string, 1)
	// The reader goroutine is owned by the process: it ends when the
	// process closes stderr, before Wait returns.
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.log.WriteString(line + "\n")
			s.mu.Unlock()
			if sent {
				continue
			}
			var rec struct {
				Msg   string `json:"msg"`
				GRPC  string `json:"grpc"`
				Admin string `json:"admin"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "distillguard serving" {
				addrs <- [2]string{rec.GRPC, rec.Admin}
				sent = true
			}
		}
		s.done <- s.cmd.Wait()
	}()
	select {
	case a := <-addrs:
		s.GRPC, s.Admin = a[0], a[1]
	case err := <-s.done:
		t.Fatalf("distillguard exited before serving: %v\n%s", err, s.Log())
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		t.Fatalf("distillguard did not report its addresses within 30s\n%s", s.Log())
	}
	t.Cleanup(func() { s.Stop(t) })
	return s
}

// Stop sends SIGTERM and waits for a clean exit (at most once).
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.stop.Do(func() {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-s.done:
			if err != nil {
				t.Errorf("distillguard did not exit cleanly on SIGTERM: %v\n%s", err, s.Log())
			}
		case <-time.After(60 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.done
			t.Errorf("distillguard did not exit within 60s of SIGTERM\n%s", s.Log())
		}
	})
}

// Signal sends sig to the server process.
func (s *Server) Signal(t testing.TB, sig os.Signal) {
	t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// Get fetches path from the server's admin port.
func (s *Server) Get(t testing.TB, path string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + s.Admin + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, string(b)
}
