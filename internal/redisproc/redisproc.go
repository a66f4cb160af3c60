// Package redisproc starts and stops real redis-server processes on free
// loopback ports with their own temporary directories: standalone servers
// and Redis Clusters built with redis-cli --cluster create. Tests of
// replicated mode run against them (never a mock server), and the attack
// lab and `make demo-replicas` use them when no Redis address is given.
//
// The binaries are looked up on PATH and then in /usr/bin (Debian's
// redis-server package installs redis-server and redis-cli there).
package redisproc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrNotInstalled reports that redis-server or redis-cli is missing.
var errNotInstalled = errors.New("redis-server and redis-cli are not installed (Debian: apt-get install -y redis-server)")

// ErrNotInstalled returns the error Find reports when the binaries are
// missing, for errors.Is.
func ErrNotInstalled() error { return errNotInstalled }

// Find returns the paths of redis-server and redis-cli.
func Find() (server, cli string, err error) {
	look := func(name string) string {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
		if p := filepath.Join("/usr/bin", name); isExec(p) {
			return p
		}
		return ""
	}
	server, cli = look("redis-server"), look("redis-cli")
	if server == "" || cli == "" {
		return "", "", errNotInstalled
	}
	return server, cli, nil
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// Server is one redis-server process.
type Server struct {
	Port int
	dir  string
	bin  string
	cli  string
	args []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)) }

// Options configure Start.
type Options struct {
	// Cluster starts the server with --cluster-enabled yes (a node of a
	// cluster that StartCluster assembles).
	Cluster bool
	// Args are extra redis-server arguments ("--maxmemory", "64mb", ...).
	Args []string
	// Dir is the working directory; empty means a new temporary one that
	// Stop removes.
	Dir string
}

// Start starts a redis-server on a free loopback port, without
// persistence, and waits until it answers PING.
func Start(o Options) (*Server, error) {
	bin, cli, err := Find()
	if err != nil {
		return nil, err
	}
	dir := o.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "redisproc-"); err != nil {
			return nil, err
		}
	}
	port, err := freePort(o.Cluster)
	if err != nil {
		return nil, err
	}
	s := &Server{Port: port, dir: dir, bin: bin, cli: cli}
	s.args = []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
		"--save", "", "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no", "--loglevel", "warning",
		"--logfile", filepath.Join(dir, "redis.log")}
	if o.Cluster {
		s.args = append(s.args, "--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes.conf"),
			"--cluster-node-timeout", "2000")
	}
	s.args = append(s.args, o.Args...)
	if err := s.start(); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cmd := exec.Command(s.bin, s.args...)
	cmd.Dir = s.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }() // owned by the process: ends when it exits
	s.cmd, s.done = cmd, done
	deadline := time.Now().Add(10 * time.Second)
	for {
		if out, err := s.cliLocked("PING"); err == nil && strings.TrimSpace(out) == "PONG" {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("redis-server on port %d exited at start; log: %s", s.Port, s.logTail())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on port %d did not answer PING within 10s", s.Port)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// CLI runs redis-cli against the server and returns its output.
func (s *Server) CLI(args ...string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cliLocked(args...)
}

func (s *Server) cliLocked(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	full := append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(s.Port)}, args...)
	out, err := exec.CommandContext(ctx, s.cli, full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("redis-cli %s: %w: %s", strings.Join(args, " "), err, out)
	}
	if strings.HasPrefix(string(out), "ERR ") || strings.HasPrefix(string(out), "(error)") {
		return string(out), fmt.Errorf("redis-cli %s: %s", strings.Join(args, " "), out)
	}
	return string(out), nil
}

// Kill ends the process at once (SIGKILL): the data it held is lost.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGCONT) // a paused process must be able to die
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Restart starts the server again on the same port, empty (no
// persistence).
func (s *Server) Restart() error {
	s.Kill()
	if s.isCluster() {
		_ = os.Remove(filepath.Join(s.dir, "nodes.conf"))
	}
	var err error
	for range 50 { // the port may linger briefly in the kernel
		if err = s.start(); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

func (s *Server) isCluster() bool {
	for _, a := range s.args {
		if a == "--cluster-enabled" {
			return true
		}
	}
	return false
}

// Pause stops the process (SIGSTOP): connections stay open and nothing
// answers, as with a network partition. Resume continues it.
func (s *Server) Pause() error  { return s.signal(syscall.SIGSTOP) }
func (s *Server) Resume() error { return s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return errors.New("redis-server is not running")
	}
	return s.cmd.Process.Signal(sig)
}

// Stop kills the process and removes its directory.
func (s *Server) Stop() {
	s.Kill()
	if strings.HasPrefix(filepath.Base(s.dir), "redisproc-") {
		_ = os.RemoveAll(s.dir)
	}
}

// Cluster is a Redis Cluster of primaries without replicas.
type Cluster struct {
	Nodes []*Server
}

// Addrs are the nodes' host:port addresses.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr()
	}
	return out
}

// StartCluster starts n cluster-enabled servers and joins them with
// redis-cli --cluster create (no replicas), waiting for cluster_state:ok
// on every node.
func StartCluster(n int) (*Cluster, error) {
	if n < 3 {
		return nil, errors.New("a Redis Cluster needs at least 3 primaries")
	}
	c := &Cluster{}
	for range n {
		s, err := Start(Options{Cluster: true})
		if err != nil {
			c.Stop()
			return nil, err
		}
		c.Nodes = append(c.Nodes, s)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if _, err := c.Nodes[0].CLI(args...); err != nil {
		c.Stop()
		return nil, err
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, s := range c.Nodes {
		for {
			out, err := s.CLI("CLUSTER", "INFO")
			if err == nil && strings.Contains(out, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				c.Stop()
				return nil, fmt.Errorf("cluster not ok within 20s: %s %v", out, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return c, nil
}

// SlotOf returns key's hash slot and the index of the node serving it.
func (c *Cluster) SlotOf(key string) (slot, node int, err error) {
	out, err := c.Nodes[0].CLI("CLUSTER", "KEYSLOT", key)
	if err != nil {
		return 0, 0, err
	}
	if slot, err = strconv.Atoi(strings.TrimSpace(out)); err != nil {
		return 0, 0, err
	}
	owner, err := c.slotOwner(slot)
	if err != nil {
		return 0, 0, err
	}
	for i, s := range c.Nodes {
		id, err := s.CLI("CLUSTER", "MYID")
		if err != nil {
			return 0, 0, err
		}
		if strings.TrimSpace(id) == owner {
			return slot, i, nil
		}
	}
	return 0, 0, fmt.Errorf("no node owns slot %d", slot)
}

// slotOwner reads CLUSTER NODES for the id of the primary serving slot.
func (c *Cluster) slotOwner(slot int) (string, error) {
	out, err := c.Nodes[0].CLI("CLUSTER", "NODES")
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 9 || !strings.Contains(f[2], "master") {
			continue
		}
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") {
				continue // a slot being migrated
			}
			lo, hi, ok := strings.Cut(r, "-")
			if !ok {
				hi = lo
			}
			l, err1 := strconv.Atoi(lo)
			h, err2 := strconv.Atoi(hi)
			if err1 == nil && err2 == nil && slot >= l && slot <= h {
				return f[0], nil
			}
		}
	}
	return "", fmt.Errorf("slot %d has no owner", slot)
}

// MoveSlot migrates slot (with its keys) from node from to node to, as
// redis-cli --cluster reshard does: IMPORTING / MIGRATING, MIGRATE of
// every key, then SETSLOT NODE on all nodes. Clients then get MOVED.
func (c *Cluster) MoveSlot(slot, from, to int) error {
	src, dst := c.Nodes[from], c.Nodes[to]
	idOf := func(s *Server) (string, error) {
		out, err := s.CLI("CLUSTER", "MYID")
		return strings.TrimSpace(out), err
	}
	srcID, err := idOf(src)
	if err != nil {
		return err
	}
	dstID, err := idOf(dst)
	if err != nil {
		return err
	}
	sl := strconv.Itoa(slot)
	if _, err := dst.CLI("CLUSTER", "SETSLOT", sl, "IMPORTING", srcID); err != nil {
		return err
	}
	if _, err := src.CLI("CLUSTER", "SETSLOT", sl, "MIGRATING", dstID); err != nil {
		return err
	}
	for {
		out, err := src.CLI("CLUSTER", "GETKEYSINSLOT", sl, "100")
		if err != nil {
			return err
		}
		keys := strings.Fields(out)
		if len(keys) == 0 {
			break
		}
		args := append([]string{"MIGRATE", "127.0.0.1", strconv.Itoa(dst.Port), "", "0", "5000", "KEYS"}, keys...)
		if _, err := src.CLI(args...); err != nil {
			return err
		}
	}
	for _, s := range c.Nodes {
		if _, err := s.CLI("CLUSTER", "SETSLOT", sl, "NODE", dstID); err != nil {
			return err
		}
	}
	return nil
}

// Stop stops every node.
func (c *Cluster) Stop() {
	for _, s := range c.Nodes {
		s.Stop()
	}
}

// freePort finds a loopback port that is free (and, for a cluster node,
// whose cluster bus port, port+10000, is free too).
func freePort(cluster bool) (int, error) {
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !cluster {
			return p, nil
		}
		if p+10000 > 65535 {
			continue
		}
		b, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+10000)))
		if err != nil {
			continue
		}
		b.Close()
		return p, nil
	}
	return 0, errors.New("no free port")
}

// FreePort returns a free loopback port (for a second listener, such as
// --tls-port).
func FreePort() (int, error) { return freePort(false) }
