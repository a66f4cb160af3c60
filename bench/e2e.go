package bench

import (
	"bufio"
	"bytes"
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
	"sync"
	"time"
)

// The end-to-end mode runs real traffic through Envoy with envoy/envoy.yaml:
// client -> Envoy -> mock upstream streaming tokens at a fixed rate, with
// the ext_proc filter pointed at the no-op processor and then at
// distillguard. What it reports is what a client sees: time to first token
// and the gaps between tokens. It needs an envoy binary and is skipped
// without one.

// E2EConfig configures RunE2E.
type E2EConfig struct {
	Envoy     string // envoy binary
	EnvoyYAML string // envoy/envoy.yaml
	Noop      ServerSpec
	Dg        ServerSpec // Config is used as is
	Streams   int
	Requests  int           // per server
	Tokens    int           // per response
	Interval  time.Duration // between upstream tokens
	OutDir    string
}

// E2EResult is one server's client-side view.
type E2EResult struct {
	Requests int         `json:"requests"`
	Errors   int         `json:"errors"`
	TTFT     Percentiles `json:"ttft"`
	ITL      Percentiles `json:"inter_token"`
}

// E2EReport compares the two.
type E2EReport struct {
	Servers map[string]*E2EResult `json:"servers"`
	// Added is distillguard minus noop, microseconds.
	AddedTTFTp50us float64 `json:"added_ttft_p50_us"`
	AddedITLp50us  float64 `json:"added_inter_token_p50_us"`
	AddedITLp99us  float64 `json:"added_inter_token_p99_us"`
}

// envoyConfig rewrites envoy.yaml's fixed ports to the given loopback ones
// and binds the listener to 127.0.0.1.
func envoyConfig(base []byte, listen, upstream, extproc, admin string) ([]byte, error) {
	s := string(base)
	for _, r := range []struct{ from, to string }{
		{"port_value: 10000", "port_value: " + portOf(listen)},
		{"port_value: 8000", "port_value: " + portOf(upstream)},
		{"port_value: 50051", "port_value: " + portOf(extproc)},
		{"port_value: 9901", "port_value: " + portOf(admin)},
		{"address: 0.0.0.0", "address: 127.0.0.1"},
	} {
		if !strings.Contains(s, r.from) {
			return nil, fmt.Errorf("envoy config: %q not found; the e2e mode needs updating", r.from)
		}
		s = strings.ReplaceAll(s, r.from, r.to)
	}
	return []byte(s), nil
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// mockUpstream streams a chat completion: one SSE event every interval.
func mockUpstream(events [][]byte, interval time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
		w.Header().Set("content-type", "text/event-stream")
		fl, _ := w.(http.Flusher)
		t := time.NewTicker(interval)
		defer t.Stop()
		for _, e := range events {
			if _, err := w.Write(e); err != nil {
				return
			}
			if fl != nil {
				fl.Flush()
			}
			select {
			case <-t.C:
			case <-r.Context().Done():
				return
			}
		}
	})
}

// RunE2E runs the end-to-end comparison. It returns (nil, nil) when
// cfg.Envoy is empty.
func RunE2E(ctx context.Context, cfg E2EConfig) (*E2EReport, error) {
	if cfg.Envoy == "" {
		return nil, nil
	}
	base, err := os.ReadFile(cfg.EnvoyYAML)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		return nil, err
	}
	g := &gen{r: newRand(1)}
	events := g.streamEvents(cfg.Tokens, 5)
	ul, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	us := &http.Server{Handler: mockUpstream(events, cfg.Interval), ReadHeaderTimeout: 5 * time.Second}
	upDone := make(chan struct{})
	go func() { defer close(upDone); _ = us.Serve(ul) }()
	defer func() { _ = us.Close(); <-upDone }()

	rep := &E2EReport{Servers: map[string]*E2EResult{}}
	for _, spec := range []ServerSpec{cfg.Noop, cfg.Dg} {
		r, err := e2eOne(ctx, cfg, spec, base, ul.Addr().String())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", spec.Name, err)
		}
		rep.Servers[spec.Name] = r
	}
	n, d := rep.Servers[cfg.Noop.Name], rep.Servers[cfg.Dg.Name]
	rep.AddedTTFTp50us = d.TTFT.P50 - n.TTFT.P50
	rep.AddedITLp50us = d.ITL.P50 - n.ITL.P50
	rep.AddedITLp99us = d.ITL.P99 - n.ITL.P99
	return rep, nil
}

func e2eOne(ctx context.Context, cfg E2EConfig, spec ServerSpec, base []byte, upstream string) (*E2EResult, error) {
	dir := filepath.Join(cfg.OutDir, "e2e-"+spec.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	child, err := StartChild(ctx, spec, dir)
	if err != nil {
		return nil, err
	}
	defer child.Stop()
	listen, err := freeLoopbackPort()
	if err != nil {
		return nil, err
	}
	admin, err := freeLoopbackPort()
	if err != nil {
		return nil, err
	}
	ecfg, err := envoyConfig(base, listen, upstream, child.GRPCAddr, admin)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "envoy.yaml")
	if err := os.WriteFile(path, ecfg, 0o644); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "envoy.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	argv := []string{cfg.Envoy, "-c", path, "--concurrency", "2", "-l", "warning", "--base-id", strconv.Itoa(int(time.Now().UnixNano() % 100000))}
	envoy, err := startProcess(argv, io.Discard, logf, logf)
	if err != nil {
		return nil, err
	}
	defer envoy.stop()
	cl := &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: cfg.Streams}, Timeout: time.Minute}
	// Envoy is ready when its admin endpoint says LIVE.
	err = envoy.awaitReady(ctx, 30*time.Second, 100*time.Millisecond, func() bool {
		return httpOK(cl, "http://"+admin+"/ready")
	})
	switch {
	case errors.Is(err, errExited):
		return nil, fmt.Errorf("envoy exited; see %s", logPath)
	case errors.Is(err, errNotReady):
		return nil, errors.New("envoy not ready after 30s")
	case err != nil:
		return nil, err
	}
	var (
		mu        sync.Mutex
		ttft, itl Hist
		errs      int
		wg        sync.WaitGroup
		next      = make(chan struct{}, cfg.Requests)
	)
	for i := 0; i < cfg.Requests; i++ {
		next <- struct{}{}
	}
	close(next)
	body := []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}],"stream":true,"logprobs":true,"top_logprobs":5}`)
	for w := 0; w < cfg.Streams; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				if ctx.Err() != nil {
					return
				}
				var t, gaps []time.Duration
				err := streamOnce(ctx, cl, "http://"+listen+"/v1/chat/completions", body, &t, &gaps)
				mu.Lock()
				if err != nil {
					errs++
				} else {
					ttft.Add(t[0])
					for _, g := range gaps {
						itl.Add(g)
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return &E2EResult{Requests: cfg.Requests, Errors: errs, TTFT: summarize(&ttft), ITL: summarize(&itl)}, nil
}

// streamOnce sends one streaming request and records the time to the first
// content event and the gaps between events.
func streamOnce(ctx context.Context, cl *http.Client, url string, body []byte, ttft, gaps *[]time.Duration) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("content-type", "application/json")
	req.Header.Set("authorization", "Bearer sk-bench-e2e")
	start := time.Now()
	resp, err := cl.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	last := start
	for sc.Scan() {
		if !bytes.HasPrefix(sc.Bytes(), []byte("data: ")) {
			continue
		}
		now := time.Now()
		if len(*ttft) == 0 {
			*ttft = append(*ttft, now.Sub(start))
		} else {
			*gaps = append(*gaps, now.Sub(last))
		}
		last = now
	}
	if len(*ttft) == 0 {
		return errors.New("no events")
	}
	return sc.Err()
}
