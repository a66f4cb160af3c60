package bench

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// drawBar redraws a one-line progress bar in place (for a terminal).
func drawBar(w io.Writer, label string, in, total time.Duration, msgs, errs uint64) {
	const width = 30
	frac := 0.0
	if total > 0 {
		frac = min(float64(in)/float64(total), 1)
	}
	n := int(frac * width)
	rate := 0.0
	if in > 0 {
		rate = float64(msgs) / in.Seconds()
	}
	if in == 0 {
		fmt.Fprintf(w, "\r\x1b[K%-34s warming up", label)
		return
	}
	fmt.Fprintf(w, "\r\x1b[K%-34s [%s%s] %4.1fs/%.0fs %8.0f msg/s errors %d",
		label, strings.Repeat("#", n), strings.Repeat(".", width-n), in.Seconds(), total.Seconds(), rate, errs)
}

func clearBar(w io.Writer) { fmt.Fprint(w, "\r\x1b[K") }
