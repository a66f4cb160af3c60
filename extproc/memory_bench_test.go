package extproc

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/extproc/envoytest"
	"github.com/distillguard/distillguard/scoring"
)

// procStatusKB reads a "Name:   N kB" line of /proc/self/status (VmRSS,
// VmHWM); 0 where the file does not exist.
func procStatusKB(name string) float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, name+":"); ok {
			v, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return v
		}
	}
	return 0
}

// liveHeap is the heap in use after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// heldReport runs open n times over one in-memory gRPC connection, each
// opening a Process stream brought to the point the scenario waits at,
// and reports what the idle streams hold: live heap per stream after a
// collection, and the process's RSS and peak RSS (VmHWM, which includes
// the client side of the connection and the transient buffers of every
// message).
func heldReport(b *testing.B, n int, cfg *config.Config, open func(ps extprocv3.ExternalProcessor_ProcessClient)) {
	h := newHarness(b, cfg, verdictScorer(scoring.Allow))
	for b.Loop() {
		ctx, cancel := context.WithCancel(context.Background())
		base := liveHeap()
		streams := make([]extprocv3.ExternalProcessor_ProcessClient, n)
		for i := range streams {
			ps, err := h.client.Process(ctx)
			if err != nil {
				b.Fatal(err)
			}
			open(ps)
			streams[i] = ps
		}
		held := liveHeap()
		b.ReportMetric(float64(int64(held)-int64(base))/float64(n), "heap-B/stream")
		b.ReportMetric(float64(int64(held)-int64(base))/(1<<20), "heap-MiB")
		b.ReportMetric(procStatusKB("VmRSS")/1024, "rss-MiB")
		b.ReportMetric(procStatusKB("VmHWM")/1024, "peak-rss-MiB")
		cancel()
		for h.srv.Active() > 0 {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func mustSend(b *testing.B, ps extprocv3.ExternalProcessor_ProcessClient, m *extprocv3.ProcessingRequest, replies int) {
	if err := ps.Send(m); err != nil {
		b.Fatal(err)
	}
	for range replies {
		if _, err := ps.Recv(); err != nil {
			b.Fatal(err)
		}
	}
}

// megabyteRequest is a 1 MiB chat request whose top_logprobs the default
// policy caps, so its body is rewritten.
func megabyteRequest() []byte {
	var b bytes.Buffer
	b.WriteString(`{"model":"m","logprobs":true,"top_logprobs":20,"messages":[{"role":"user","content":"`)
	for b.Len() < 1<<20-8 {
		b.WriteString("lorem ipsum dolor sit amet ")
	}
	b.WriteString(`"}]}`)
	return b.Bytes()
}

// BenchmarkHeldMemory states what idle streams hold (heap per stream, RSS
// and peak RSS of the process):
//
//   - 1000-streams-after-1MiB-request: 1,000 concurrent streams that have
//     each had a 1 MiB BUFFERED request rewritten and wait for the
//     response headers;
//   - 100-gzip-streams: 100 concurrent gzip-encoded SSE responses that have
//     each had one 64 KiB compressed chunk (about 1 MiB decoded) and wait
//     for the next;
//   - 10-gzip-bomb-chunk: 10 concurrent gzip responses that have each had
//     one ~120 KiB chunk that decodes to 40 MiB.
//
// Run with -benchtime=1x; the figures are in the README.
func BenchmarkHeldMemory(b *testing.B) {
	reqHeaders := func() *extprocv3.ProcessingRequest {
		return &extprocv3.ProcessingRequest{
			ProtocolConfig: &extprocv3.ProtocolConfiguration{RequestBodyMode: mBuffered, ResponseBodyMode: mStreamed},
			Attributes:     envoytest.Attributes(time.Now(), "203.0.113.9:4000"),
			Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
				Headers: hmap(":path", "/v1/chat/completions", ":method", "POST", "content-type", "application/json", "authorization", "Bearer bench")}}}
	}
	b.Run("1000-streams-after-1MiB-request", func(b *testing.B) {
		body := megabyteRequest()
		heldReport(b, 1000, testConfig(nil), func(ps extprocv3.ExternalProcessor_ProcessClient) {
			mustSend(b, ps, reqHeaders(), 1)
			mustSend(b, ps, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
				RequestBody: &extprocv3.HttpBody{Body: body, EndOfStream: true}}}, 1)
		})
	})
	gzipped := func(b *testing.B, plain []byte, n int) []byte {
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
		zw.Write(plain)
		zw.Close()
		out := buf.Bytes()
		if n > 0 && len(out) > n {
			out = out[:n]
		}
		return out
	}
	respOpen := func(b *testing.B, chunk []byte) func(ps extprocv3.ExternalProcessor_ProcessClient) {
		return func(ps extprocv3.ExternalProcessor_ProcessClient) {
			mustSend(b, ps, reqHeaders(), 1)
			mustSend(b, ps, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
				RequestBody: &extprocv3.HttpBody{Body: chatBody, EndOfStream: true}}}, 1)
			mustSend(b, ps, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
				Headers: hmap(":status", "200", "content-type", "text/event-stream", "content-encoding", "gzip")}}}, 1)
			mustSend(b, ps, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
				ResponseBody: &extprocv3.HttpBody{Body: chunk}}}, 1)
		}
	}
	b.Run("100-gzip-streams", func(b *testing.B) {
		g := envoytest.NewGen(5)
		var plain []byte
		for len(plain) < 4<<20 {
			plain = append(plain, envoytest.Join(g.ChatStream(envoytest.Options{Logprobs: true, TopLogprobs: 5, Tokens: 64}))...)
		}
		chunk := gzipped(b, plain, 64<<10)
		heldReport(b, 100, testConfig(nil), respOpen(b, chunk))
	})
	b.Run("10-gzip-bomb-chunk", func(b *testing.B) {
		plain := append([]byte("data: {\"a\":\""), bytes.Repeat([]byte("x"), 40<<20)...)
		chunk := gzipped(b, plain, 0)
		heldReport(b, 10, testConfig(nil), respOpen(b, chunk))
	})
}
