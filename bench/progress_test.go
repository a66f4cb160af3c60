package bench

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestDrawBar(t *testing.T) {
	cases := []struct {
		in, total time.Duration
		msgs      uint64
		want      string
	}{
		{0, 2 * time.Second, 0, "warming up"},
		{time.Second, 2 * time.Second, 1000, "[###############...............]  1.0s/2s     1000 msg/s errors 3"},
		{3 * time.Second, 2 * time.Second, 6000, "[##############################]"},
	}
	for _, tc := range cases {
		var b bytes.Buffer
		drawBar(&b, "x", tc.in, tc.total, tc.msgs, 3)
		if !strings.HasPrefix(b.String(), "\r\x1b[K") || !strings.Contains(b.String(), tc.want) {
			t.Errorf("drawBar(%v) = %q, want %q", tc.in, b.String(), tc.want)
		}
	}
}
