package redisproc

import (
	"net"
	"strings"
	"testing"
	"time"
)

func TestServerLifecycle(t *testing.T) {
	s := Require(t, Options{Args: []string{"--maxmemory", "16mb"}})
	if out, err := s.CLI("SET", "k", "v"); err != nil || strings.TrimSpace(out) != "OK" {
		t.Fatalf("SET: %q %v", out, err)
	}
	if out, _ := s.CLI("CONFIG", "GET", "maxmemory"); !strings.Contains(out, "16777216") {
		t.Errorf("extra args not applied: %q", out)
	}
	// Paused, the server accepts connections but answers nothing.
	if err := s.Pause(); err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(200 * time.Millisecond))
	_, _ = c.Write([]byte("PING\r\n"))
	if _, err := c.Read(make([]byte, 16)); err == nil {
		t.Error("a paused server answered")
	}
	c.Close()
	if err := s.Resume(); err != nil {
		t.Fatal(err)
	}
	// Restarted, it is empty, on the same port.
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if out, err := s.CLI("--raw", "EXISTS", "k"); err != nil || strings.TrimSpace(out) != "0" {
		t.Errorf("key survived the restart: %q %v", out, err)
	}
	s.Kill()
	if _, err := s.CLI("PING"); err == nil {
		t.Error("a killed server answered")
	}
}

func TestClusterSlotMove(t *testing.T) {
	c := RequireCluster(t, 3)
	if _, err := c.Nodes[0].CLI("-c", "SET", "{x}k", "v"); err != nil {
		t.Fatal(err)
	}
	slot, owner, err := c.SlotOf("{x}k")
	if err != nil {
		t.Fatal(err)
	}
	to := (owner + 1) % 3
	if err := c.MoveSlot(slot, owner, to); err != nil {
		t.Fatal(err)
	}
	if _, now, err := c.SlotOf("{x}k"); err != nil || now != to {
		t.Fatalf("slot owner %d after the move, want %d (%v)", now, to, err)
	}
	if out, err := c.Nodes[to].CLI("GET", "{x}k"); err != nil || strings.TrimSpace(out) != "v" {
		t.Errorf("key not moved with its slot: %q %v", out, err)
	}
}
