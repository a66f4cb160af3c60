// Package bench measures the latency distillguard adds to every ext_proc
// message, against the floor of a processor that does nothing.
//
// Envoy's ext_proc filter puts one gRPC round trip on every body chunk of a
// token stream
// (https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_filters/ext_proc_filter),
// so the number that matters is the time from sending a message to its reply,
// per message, under concurrent streams. The package has four parts:
//
//   - a load generator (Run) that plays Envoy against any ext_proc address:
//     one Process stream per HTTP exchange, request headers with Envoy's
//     request attributes, a BUFFERED request body, response headers, then a
//     token-by-token SSE stream in STREAMED or FULL_DUPLEX_STREAMED mode,
//     closed-loop or open-loop (latency from the intended send time, so
//     coordinated omission is not hidden);
//   - a no-op processor (Noop) that answers every message with an empty reply
//     of the right kind: the baseline;
//   - the in-process cost of the rewrite alone (RewriteFloor): what a build
//     without the gRPC hop would pay;
//   - a matrix runner (RunMatrix) that starts each server as a child process
//     and runs rounds alternately against the no-op and the real server, so
//     machine drift cancels, and reports percentiles, throughput, server CPU,
//     allocations and RSS per stream with distillguard/noop ratios as
//     markdown, JSON and an SVG latency CDF.
//
// RunReplicated sets replicated mode (scoring on a real redis-server)
// beside in-memory scoring the same way and, with its Noop spec, beside
// the read floor (NewReadFloor): a processor that only refuses each
// request, without and with replicated mode's one session read per
// request, the least any design with that read adds.
//
// The command is cmd/distillguard-bench:
//
//	make build   # or go build -tags=vtprotobuf -o bin/ ./cmd/distillguard ./cmd/distillguard-bench
//	bin/distillguard-bench run -distillguard bin/distillguard      # the matrix, into bench-out/
//	bin/distillguard-bench run -aa                                  # noop against noop: the noise floor
//	bin/distillguard-bench run -scenarios streams-1000 -rounds 1 -duration 60s   # 1,000-stream soak
//	bin/distillguard-bench load -addr 127.0.0.1:50051 -c 32 -mix 0:1,5:1,20:1    # any ext_proc server
//
// Latency and throughput on a machine shared with other work are noisy; the
// report records the load average and the spread of the ratios over round
// pairs, and server CPU time and allocations per message are the steadier
// figures.
package bench
