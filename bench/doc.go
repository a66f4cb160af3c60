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
package bench
