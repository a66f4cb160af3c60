package bench

import (
	"bytes"
	"context"
	"testing"
	"time"

	procmodev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/extproc/envoytest"
)

// TestEchoReplacesBody: the echo processor answers a STREAMED response
// chunk with a body mutation carrying the same bytes.
func TestEchoReplacesBody(t *testing.T) {
	client := processorClient(t, NewEcho())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st := openStream(t, ctx, client, procmodev3.ProcessingMode_STREAMED)
	for _, body := range [][]byte{[]byte("data: {\"a\":1}\n\n"), []byte("data: [DONE]\n\n")} {
		if err := st.Send(envoytest.ResponseBody(body, false)); err != nil {
			t.Fatal(err)
		}
		r, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if got := r.GetResponseBody().GetResponse().GetBodyMutation().GetBody(); !bytes.Equal(got, body) {
			t.Errorf("echo replied %q, want %q", got, body)
		}
	}
	_ = st.CloseSend()
}

// TestRunSkipsUnchangeableBodies: against distillguard, a stream without
// logprobs is answered at its headers with mode_override NONE and the load
// generator, like Envoy with allow_mode_override, sends no body; a top-5
// stream is sent chunk by chunk. Both record a time to last token per
// exchange, and the paced one is at least the upstream's schedule.
func TestRunSkipsUnchangeableBodies(t *testing.T) {
	cfg, err := config.Parse([]byte(configAllow))
	if err != nil {
		t.Fatal(err)
	}
	addr := serveConfig(t, cfg, nil)
	for _, tc := range []struct {
		alts     int
		skip     bool
		interval time.Duration
	}{{0, true, 0}, {5, false, 0}, {5, false, time.Millisecond}} {
		wl, err := BuildWorkload(WorkloadSpec{Kind: KindStream, Tokens: 10, Mix: []MixEntry{{tc.alts, 1}}}, 1)
		if err != nil {
			t.Fatal(err)
		}
		res, err := Run(context.Background(), LoadConfig{Addr: addr, Concurrency: 2, Warmup: 50 * time.Millisecond,
			Duration: 300 * time.Millisecond, Mode: Streamed, Workload: wl, Seed: 3, TokenInterval: tc.interval})
		if err != nil {
			t.Fatal(err)
		}
		if res.Errors != 0 || res.Exchanges == 0 {
			t.Fatalf("alternatives %d: %d errors (%v), %d exchanges", tc.alts, res.Errors, res.ErrorSamples, res.Exchanges)
		}
		if skipped := res.BodiesSkipped == res.Exchanges && res.ByKind[KindRespBody].Count == 0; skipped != tc.skip {
			t.Errorf("alternatives %d: %d of %d bodies skipped, %d body messages; want skipped=%v",
				tc.alts, res.BodiesSkipped, res.Exchanges, res.ByKind[KindRespBody].Count, tc.skip)
		}
		if res.Streams.Count < res.Exchanges {
			t.Errorf("alternatives %d: %d stream times for %d exchanges", tc.alts, res.Streams.Count, res.Exchanges)
		}
		if sched := time.Duration(wl.BodyChunks()-1) * tc.interval; tc.interval > 0 && res.Streams.Quantile(0.01) < sched*9/10 {
			t.Errorf("paced stream took %v, under the %v schedule", res.Streams.Quantile(0.01), sched)
		}
	}
}
