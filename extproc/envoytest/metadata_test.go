package envoytest

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/metadata"
)

// mdRecorder answers like passthrough and keeps the incoming metadata of
// every stream.
type mdRecorder struct {
	extprocv3.UnimplementedExternalProcessorServer
	mu  sync.Mutex
	mds []metadata.MD
}

func (p *mdRecorder) Process(ps extprocv3.ExternalProcessor_ProcessServer) error {
	md, _ := metadata.FromIncomingContext(ps.Context())
	p.mu.Lock()
	p.mds = append(p.mds, md)
	p.mu.Unlock()
	for {
		req, err := ps.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := ps.Send(passthrough(req)); err != nil {
			return err
		}
	}
}

// TestInitialMetadata: Config.InitialMetadata reaches the processor as the
// side stream's metadata, next to what the caller's context already had.
func TestInitialMetadata(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, tc := range []struct {
		name   string
		md     metadata.MD
		caller metadata.MD
		want   map[string][]string
	}{
		{"none", nil, nil, map[string][]string{"traceparent": nil}},
		{"traceparent", metadata.Pairs("traceparent", tp), nil, map[string][]string{"traceparent": {tp}}},
		{"b3-and-caller", metadata.Pairs("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7", "x-b3-spanid", "e457b5a2e4d86bd1", "x-b3-sampled", "1"),
			metadata.Pairs("x-caller", "kept"),
			map[string][]string{"x-b3-traceid": {"80f198ee56343ba864fe8b2a57d3eff7"}, "x-b3-spanid": {"e457b5a2e4d86bd1"}, "x-b3-sampled": {"1"}, "x-caller": {"kept"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &mdRecorder{}
			e := New(dial(t, rec), Config{InitialMetadata: tc.md})
			ctx := context.Background()
			if tc.caller != nil {
				ctx = metadata.NewOutgoingContext(ctx, tc.caller)
			}
			res, err := e.Do(ctx, &Exchange{Method: "GET", Path: "/v1/models", Upstream: echo()})
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != 200 || len(res.Violations) > 0 {
				t.Fatalf("status %d, violations %v", res.Status, res.Violations)
			}
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if len(rec.mds) != 1 {
				t.Fatalf("%d side streams, want 1", len(rec.mds))
			}
			for k, want := range tc.want {
				if got := rec.mds[0].Get(k); len(got) != len(want) || len(want) > 0 && got[0] != want[0] {
					t.Errorf("metadata %s = %q, want %q", k, got, want)
				}
			}
		})
	}
}
