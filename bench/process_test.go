package bench

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestProcessAwaitReady(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		argv    []string
		ctx     context.Context
		timeout time.Duration
		readyAt int // the probe reports ready from this call on; 0: never
		want    error
	}{
		{"ready at once", []string{"sleep", "30"}, context.Background(), 5 * time.Second, 1, nil},
		{"ready after polls", []string{"sleep", "30"}, context.Background(), 5 * time.Second, 4, nil},
		{"exits during start", []string{"/bin/sh", "-c", "exit 3"}, context.Background(), 5 * time.Second, 0, errExited},
		{"never ready", []string{"sleep", "30"}, context.Background(), 50 * time.Millisecond, 0, errNotReady},
		{"context ends", []string{"sleep", "30"}, cancelled, 5 * time.Second, 0, context.Canceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := startProcess(tc.argv, nil, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer p.stop()
			calls := 0
			err = p.awaitReady(tc.ctx, tc.timeout, 5*time.Millisecond, func() bool {
				calls++
				return tc.readyAt > 0 && calls >= tc.readyAt
			})
			if !errors.Is(err, tc.want) {
				t.Fatalf("awaitReady = %v, want %v", err, tc.want)
			}
			if tc.want == nil && calls != tc.readyAt {
				t.Errorf("probed %d times, want %d", calls, tc.readyAt)
			}
		})
	}
}

func TestProcessStopAndLog(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "out.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	p, err := startProcess([]string{"/bin/sh", "-c", "echo started >&2; exec sleep 30"}, nil, logf, logf)
	if err != nil {
		t.Fatal(err)
	}
	err = p.awaitReady(context.Background(), 5*time.Second, 5*time.Millisecond, func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), "started")
	})
	if err != nil {
		p.stop()
		t.Fatalf("the child's stderr never reached the log: %v", err)
	}
	start := time.Now()
	p.stop()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stop took %s; SIGTERM should end sleep at once", d)
	}
	select {
	case <-p.exited:
	default:
		t.Fatal("process still running after stop")
	}
	p.stop() // a second stop returns at once
	// The log was closed by the waiter: writing to it fails.
	if _, err := logf.WriteString("x"); !errors.Is(err, os.ErrClosed) {
		t.Errorf("log not closed after exit: %v", err)
	}
}

func TestStartProcessFails(t *testing.T) {
	for _, argv := range [][]string{nil, {filepath.Join(t.TempDir(), "no-such-binary")}} {
		logf, err := os.Create(filepath.Join(t.TempDir(), "log"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := startProcess(argv, nil, logf, logf); err == nil {
			t.Errorf("%q: started", argv)
		}
		if len(argv) > 0 {
			if _, err := logf.WriteString("x"); !errors.Is(err, os.ErrClosed) {
				t.Errorf("%q: log left open after a failed start", argv)
			}
		}
		logf.Close()
	}
}

func TestHTTPOK(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ready" {
			http.Error(w, "not yet", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	cl := &http.Client{Timeout: time.Second}
	tests := []struct {
		url  string
		want bool
	}{
		{srv.URL + "/ready", true},
		{srv.URL + "/other", false},
		{"http://127.0.0.1:1/ready", false},
	}
	for _, tc := range tests {
		if got := httpOK(cl, tc.url); got != tc.want {
			t.Errorf("httpOK(%s) = %v, want %v", tc.url, got, tc.want)
		}
	}
}
