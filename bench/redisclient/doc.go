// Package redisclient benchmarks the two well-kept Go Redis clients,
// github.com/redis/rueidis and github.com/redis/go-redis/v9, on the access
// pattern of distillguard's replicated mode against a real redis-server
// (started by internal/redisproc on a free loopback port):
//
//   - Get: the request-path read, one GET of a session blob (~600 bytes)
//     per request from many goroutines at once (every ext_proc stream is a
//     goroutine);
//   - Flush: the write-behind batch, 64 compare-and-set EVALSHA calls and
//     a stream append and read, pipelined in one round trip.
//
// It is its own module so that the main module does not depend on the
// client it did not choose. Run it with
//
//	cd bench/redisclient && go test -run '^$' -bench . -benchmem -count 5
//
// The choice and the figures are in README (Replicated mode) and
// scoring/replica.go.
package redisclient
