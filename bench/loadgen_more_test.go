package bench

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

func TestEventCounter(t *testing.T) {
	cases := []struct {
		chunks []string
		want   int
	}{
		{[]string{"data: a\n\n"}, 1},
		{[]string{"data: a\n", "\n"}, 1},
		{[]string{"data: a\r\n\r\n"}, 1},
		{[]string{"data: a\n\ndata: b\n\n"}, 2},
		{[]string{"data: a\n", "data: b\n\n"}, 1},
		{[]string{"data: a", "\n", "\r", "\n"}, 1},
		{[]string{""}, 0},
		{[]string{"data: a\n\n\n"}, 1},
	}
	for _, tc := range cases {
		var ec eventCounter
		got := 0
		for _, c := range tc.chunks {
			got += ec.feed([]byte(c))
		}
		if got != tc.want {
			t.Errorf("%q: %d events, want %d", tc.chunks, got, tc.want)
		}
	}
}

// FuzzEventCounter checks that the count never depends on how the stream
// was split, which is what matching full-duplex replies relies on.
func FuzzEventCounter(f *testing.F) {
	f.Add([]byte("data: a\n\ndata: b\r\n\r\n"), uint8(3))
	f.Add([]byte("\n\n\n\n"), uint8(1))
	f.Fuzz(func(t *testing.T, b []byte, split uint8) {
		var whole eventCounter
		want := whole.feed(b)
		var parts eventCounter
		got := 0
		step := int(split%16) + 1
		for i := 0; i < len(b); i += step {
			got += parts.feed(b[i:min(i+step, len(b))])
		}
		if got != want {
			t.Fatalf("split every %d: %d events, whole: %d", step, got, want)
		}
		if want > len(b)/2 {
			t.Fatalf("%d events in %d bytes", want, len(b))
		}
	})
}

// slowProc answers every message after a fixed delay.
type slowProc struct {
	extprocv3.UnimplementedExternalProcessorServer
	noop  *Noop
	delay time.Duration
}

func (s *slowProc) Process(st extprocv3.ExternalProcessor_ProcessServer) error {
	return s.noop.Process(&delayStream{st, s.delay})
}

type delayStream struct {
	extprocv3.ExternalProcessor_ProcessServer
	d time.Duration
}

func (d *delayStream) Send(r *extprocv3.ProcessingResponse) error {
	time.Sleep(d.d)
	return d.ExternalProcessor_ProcessServer.Send(r)
}

// TestOpenLoopCountsFromIntendedTime: a server that takes 4ms per reply,
// asked for a message every 1ms, falls further behind with every message;
// latency measured from the intended send time must show it, where a
// closed-loop measure would report a flat 4ms (coordinated omission).
func TestOpenLoopCountsFromIntendedTime(t *testing.T) {
	addr := serveInProcess(t, &slowProc{noop: NewNoop(), delay: 4 * time.Millisecond})
	wl, err := BuildWorkload(WorkloadSpec{Kind: KindStream, Tokens: 20, Variants: 1}, 1)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(context.Background(), LoadConfig{
		Addr: addr, Concurrency: 1, Duration: 300 * time.Millisecond, Rate: 1000, Workload: wl,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 0 {
		t.Fatal(res.ErrorSamples)
	}
	if p99 := res.Latency.Quantile(0.99); p99 < 50*time.Millisecond {
		t.Errorf("open-loop p99 %v: coordinated omission hidden (server 4x slower than the schedule)", p99)
	}
	if res.SendLag.Count == 0 {
		t.Error("late sends were not recorded as send lag")
	}

	closed, err := Run(context.Background(), LoadConfig{Addr: addr, Concurrency: 1, Duration: 200 * time.Millisecond, Workload: wl})
	if err != nil {
		t.Fatal(err)
	}
	// Closed loop waits for each reply, so it never sees the backlog: its
	// median is the server's delay, far below the open-loop tail. (Compared
	// with each other rather than with a wall-clock bound, so a loaded
	// machine slows both alike.)
	if p50, openP99 := closed.Latency.Quantile(0.5), res.Latency.Quantile(0.99); p50 < 4*time.Millisecond || p50 >= openP99/2 {
		t.Errorf("closed-loop p50 %v, want the 4ms server delay and well below the open-loop p99 %v", p50, openP99)
	}
}

func TestCountedWindow(t *testing.T) {
	addr := serveInProcess(t, NewNoop())
	wl, err := BuildWorkload(WorkloadSpec{Kind: KindStream, Tokens: 5, Variants: 1}, 1)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(context.Background(), LoadConfig{Addr: addr, Concurrency: 3, Duration: 10 * time.Second, Exchanges: 25, Workload: wl})
	if err != nil {
		t.Fatal(err)
	}
	// Exchanges started in the window are counted; the first few may have
	// started before it, so at least 25 and at most 25 + concurrency.
	if res.Exchanges < 25 || res.Exchanges > 28 || res.Elapsed > 5*time.Second {
		t.Errorf("%d exchanges in %v, want 25..28 quickly", res.Exchanges, res.Elapsed)
	}
}

// TestExchangePacing: with ExchangeRate the schedule paces exchanges and
// an exchange's later messages follow each reply at once (as Envoy sends
// them): 4 exchanges of 20 tokens at 8 exchanges/s take about half a
// second, where pacing every message at that rate would take ten.
func TestExchangePacing(t *testing.T) {
	addr := serveInProcess(t, NewNoop())
	wl, err := BuildWorkload(WorkloadSpec{Kind: KindStream, Tokens: 20, Variants: 1}, 1)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(context.Background(), LoadConfig{Addr: addr, Concurrency: 1, Duration: 30 * time.Second, Exchanges: 4, ExchangeRate: 8, Workload: wl})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 0 {
		t.Fatal(res.ErrorSamples)
	}
	if res.Exchanges < 4 || res.Messages < 4*20 || res.Elapsed > 5*time.Second || res.Elapsed < 250*time.Millisecond {
		t.Errorf("%d exchanges, %d messages in %v; want 4 exchanges of 20+ messages, paced at 8/s", res.Exchanges, res.Messages, res.Elapsed)
	}
}

// badProc answers response bodies with the wrong kind, or rejects.
type badProc struct {
	extprocv3.UnimplementedExternalProcessorServer
	reject bool
}

func (b *badProc) Process(st extprocv3.ExternalProcessor_ProcessServer) error {
	for {
		req, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		resp := &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{}}}
		if req.GetRequestBody() != nil && b.reject {
			resp = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocv3.ImmediateResponse{}}}
			if err := st.Send(resp); err != nil {
				return err
			}
			continue
		}
		if err := st.Send(resp); err != nil {
			return err
		}
	}
}

func TestErrorsAndRejectionsAreCounted(t *testing.T) {
	wl, err := BuildWorkload(WorkloadSpec{Kind: KindStream, Tokens: 3, Variants: 1}, 1)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name               string
		proc               *badProc
		wantErr, wantRejct bool
	}{
		{"wrong reply kind", &badProc{}, true, false},
		{"immediate response", &badProc{reject: true}, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr := serveInProcess(t, tc.proc)
			res, err := Run(context.Background(), LoadConfig{Addr: addr, Concurrency: 2, Duration: 150 * time.Millisecond, Workload: wl})
			if err != nil {
				t.Fatal(err)
			}
			if (res.Errors > 0) != tc.wantErr || (res.Rejected > 0) != tc.wantRejct {
				t.Fatalf("errors %d rejected %d: %v", res.Errors, res.Rejected, res.ErrorSamples)
			}
			if tc.wantErr && !strings.Contains(strings.Join(res.ErrorSamples, ";"), "reply") {
				t.Errorf("error samples do not say what failed: %v", res.ErrorSamples)
			}
		})
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	wl, _ := BuildWorkload(WorkloadSpec{Kind: KindStream, Tokens: 1}, 1)
	for _, cfg := range []LoadConfig{
		{Addr: "127.0.0.1:1", Concurrency: 1, Duration: time.Second},
		{Addr: "127.0.0.1:1", Concurrency: 0, Duration: time.Second, Workload: wl},
		{Addr: "127.0.0.1:1", Concurrency: 1, Workload: wl},
		{Addr: "127.0.0.1:1", Concurrency: 1, Duration: time.Second, Rate: -1, Workload: wl},
		{Addr: "192.0.2.1:50051", Concurrency: 1, Duration: time.Second, Workload: wl},
	} {
		if _, err := Run(context.Background(), cfg); err == nil {
			t.Errorf("Run(%+v) accepted", cfg)
		}
	}
}

func TestDeadServerIsErrorsNotHang(t *testing.T) {
	port, err := freeLoopbackPort()
	if err != nil {
		t.Fatal(err)
	}
	wl, _ := BuildWorkload(WorkloadSpec{Kind: KindStream, Tokens: 1}, 1)
	start := time.Now()
	res, err := Run(context.Background(), LoadConfig{Addr: port, Concurrency: 2, Duration: 200 * time.Millisecond, Workload: wl})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors == 0 || time.Since(start) > 5*time.Second {
		t.Errorf("errors %d after %v", res.Errors, time.Since(start))
	}
}
