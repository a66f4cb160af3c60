package redisproc

import (
	"errors"
	"os"
	"testing"
)

// Require starts a standalone server for a test and stops it at cleanup.
// When redis-server is not installed the test is skipped with a clear
// message, and fails under CI=true, where a skip would hide that replicated
// mode went untested.
func Require(t testing.TB, o Options) *Server {
	t.Helper()
	skipIfMissing(t)
	s, err := Start(o)
	if err != nil {
		t.Fatalf("redis-server: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// RequireCluster starts an n-node cluster for a test (see Require).
func RequireCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	skipIfMissing(t)
	c, err := StartCluster(n)
	if err != nil {
		t.Fatalf("redis cluster: %v", err)
	}
	t.Cleanup(c.Stop)
	return c
}

func skipIfMissing(t testing.TB) {
	t.Helper()
	if _, _, err := Find(); errors.Is(err, errNotInstalled) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and %v", err)
		}
		t.Skipf("skipping: %v", err)
	}
}
