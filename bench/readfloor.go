package bench

import (
	"context"
	"fmt"
	"strings"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/redis/rueidis"
)

// The read floor: the no-op processor plus the one Redis call replicated
// mode makes on the request path (scoring/replica.go, fetch), and nothing
// else. After replying to a request's headers it starts an MGET of the
// session's two keys (readFloorBlob bytes stored under the first) and waits
// for it before replying to the request body, as distillguard waits for its
// prefetched read. It writes nothing and scores nothing, so what it adds to
// the same processor without the read is a lower bound on what any
// replicated design with one session read per request adds on the same
// machine.
//
// Both answer every request body with the refusal distillguard sends a
// blocked session (an immediate 403), because the replicated bench's
// sessions (many accounts sending the same system prompt and asking for
// logprobs) are blocked by distillguard after their first requests: the
// floor then carries the same messages per exchange, and the same session
// reads per second, as the servers it is set beside.

// readFloorBlob is the stored value's size: the median session blob
// MEMORY USAGE reported in a replicated lab replay (README, Memory in
// Redis).
const readFloorBlob = 760

// readFloorPrefix is the key prefix the read floor reads under.
const readFloorPrefix = "floor:"

// readFloorKeys are a session's two keys, in one slot (hash tag).
func readFloorKeys(auth string) (blob, stand string) {
	return readFloorPrefix + "{" + auth + "}:s", readFloorPrefix + "{" + auth + "}:st"
}

// ReadFloorOptions returns the client options of distillguard's
// request-path reads (scoring/replica.go, newReplica): no client-side
// cache, no retries, a 20 µs flush delay.
func ReadFloorOptions(addr string) rueidis.ClientOption {
	return rueidis.ClientOption{
		InitAddress: []string{addr}, ClientName: "distillguard-bench-floor",
		DisableCache: true, DisableRetry: true, MaxFlushDelay: 20 * time.Microsecond,
	}
}

// SeedReadFloor stores a readFloorBlob-byte value for each of the load
// generator's first n sessions (their authorization headers, loadgen.go),
// so the floor's reads find state as distillguard's do.
func SeedReadFloor(ctx context.Context, c rueidis.Client, n int, ttl time.Duration) error {
	v := strings.Repeat("x", readFloorBlob)
	cmds := make(rueidis.Commands, 0, n)
	for i := range n {
		k, _ := readFloorKeys(fmt.Sprintf("Bearer sk-bench-%x", i))
		cmds = append(cmds, c.B().Set().Key(k).Value(v).Px(ttl).Build())
	}
	for _, r := range c.DoMulti(ctx, cmds...) {
		if err := r.Error(); err != nil {
			return err
		}
	}
	return nil
}

// NewReadFloor returns the floor processor: the no-op one refusing every
// request body and, when client is not nil, reading the session on client
// first. A failed read is a stream error: the floor is only meaningful when
// every read reached Redis.
func NewReadFloor(client rueidis.Client, timeout time.Duration) *Noop {
	n := NewNoop()
	n.refuse = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocv3.ImmediateResponse{
		Status: &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden},
		Body:   []byte(`{"error":{"message":"refused","type":"permission_error","code":"blocked"}}`),
	}}}
	if client == nil {
		return n
	}
	n.read = func(headers *extprocv3.HttpHeaders) func() error {
		var auth string
		for _, h := range headers.GetHeaders().GetHeaders() {
			if h.GetKey() == "authorization" {
				auth = string(h.GetRawValue())
				if auth == "" {
					auth = h.GetValue()
				}
				break
			}
		}
		blob, stand := readFloorKeys(auth)
		done := make(chan error, 1)
		go func() { // ends within timeout
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			_, err := client.Do(ctx, client.B().Mget().Key(blob, stand).Build()).ToArray()
			done <- err
		}()
		return func() error { return <-done }
	}
	return n
}
