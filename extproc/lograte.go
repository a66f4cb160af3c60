package extproc

import (
	"log/slog"
	"sync"
	"time"
)

// logLimiter rate-limits warnings of one kind to one line per interval:
// anything that reaches the gRPC port can send malformed messages, and a
// line per message would let it fill the disk. The line that gets through
// says how many were suppressed since the last one; the metrics still
// count every occurrence.
type logLimiter struct {
	interval time.Duration
	mu       sync.Mutex
	kinds    map[string]*logKind
}

type logKind struct {
	last       time.Time
	suppressed int64
}

// maxLogKinds bounds the kinds tracked; kinds are constants of the code,
// so the bound is never reached in practice.
const maxLogKinds = 64

func newLogLimiter(interval time.Duration) *logLimiter {
	return &logLimiter{interval: interval, kinds: map[string]*logKind{}}
}

// warn logs msg with args unless a line of this kind was logged within the
// interval, in which case it is counted as suppressed.
func (l *logLimiter) warn(log *slog.Logger, now time.Time, kind, msg string, args ...any) {
	l.mu.Lock()
	k := l.kinds[kind]
	if k == nil {
		if len(l.kinds) >= maxLogKinds {
			l.mu.Unlock()
			return
		}
		k = &logKind{}
		l.kinds[kind] = k
	}
	if !k.last.IsZero() && now.Sub(k.last) < l.interval {
		k.suppressed++
		l.mu.Unlock()
		return
	}
	suppressed := k.suppressed
	k.last, k.suppressed = now, 0
	l.mu.Unlock()
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	log.Warn(msg, args...)
}
