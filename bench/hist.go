package bench

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// The latency histogram is log-linear (the HdrHistogram layout): values below
// 2*histHalf nanoseconds have a bucket each; above, every power of two is
// split into histHalf buckets, so a bucket's width is under 1/histHalf of its
// value (0.8% here). Memory is fixed whatever the run length, and recording is
// one atomic add, so many workers can share a histogram.
const (
	histSubBits = 8
	histHalf    = 1 << (histSubBits - 1) // 128
	// histMaxExp bounds the range: 2^(histSubBits+histMaxExp) ns is about
	// 18 minutes; larger values land in the last bucket.
	histMaxExp   = 32
	histBuckets  = (histMaxExp+1)*histHalf + histHalf
	histMaxValue = int64(1)<<(histSubBits+histMaxExp) - 1
)

// bucketOf returns the bucket index of v nanoseconds.
func bucketOf(v int64) int {
	if v < 0 {
		v = 0
	}
	if v > histMaxValue {
		v = histMaxValue
	}
	u := uint64(v)
	if u < 2*histHalf {
		return int(u)
	}
	e := bits.Len64(u) - histSubBits // >= 1
	sub := u >> uint(e)              // in [histHalf, 2*histHalf)
	return e*histHalf + int(sub)
}

// bucketRange returns the smallest value of bucket i and its width.
func bucketRange(i int) (lo, width int64) {
	if i < 2*histHalf {
		return int64(i), 1
	}
	e := i/histHalf - 1
	sub := int64(i - e*histHalf)
	return sub << uint(e), int64(1) << uint(e)
}

// bucketValue is the value reported for bucket i: its midpoint.
func bucketValue(i int) int64 {
	lo, w := bucketRange(i)
	return lo + (w-1)/2
}

// histShard is one set of buckets. Shards keep concurrent workers from all
// contending on the same cache lines.
type histShard struct {
	counts [histBuckets]atomic.Uint64
	sum    atomic.Int64
	max    atomic.Int64
	_      [64]byte // keep the next shard's hot fields off this cache line
}

// Recorder is a concurrent latency histogram. Record is safe from any
// goroutine; Snapshot merges the shards.
type Recorder struct {
	shards []histShard
}

// NewRecorder returns a Recorder with n shards (at least 1).
func NewRecorder(n int) *Recorder {
	if n < 1 {
		n = 1
	}
	return &Recorder{shards: make([]histShard, n)}
}

// Record adds one value; shard picks the shard (any int, typically a worker
// index).
func (r *Recorder) Record(shard int, d time.Duration) {
	s := &r.shards[uint(shard)%uint(len(r.shards))]
	v := int64(d)
	if v < 0 {
		v = 0
	}
	s.counts[bucketOf(v)].Add(1)
	s.sum.Add(v)
	for {
		m := s.max.Load()
		if v <= m || s.max.CompareAndSwap(m, v) {
			break
		}
	}
}

// Snapshot returns the merged counts so far.
func (r *Recorder) Snapshot() *Hist {
	h := &Hist{}
	for i := range r.shards {
		s := &r.shards[i]
		for b := range s.counts {
			if c := s.counts[b].Load(); c != 0 {
				h.counts[b] += c
				h.Count += c
			}
		}
		h.Sum += s.sum.Load()
		if m := s.max.Load(); m > h.Max {
			h.Max = m
		}
	}
	return h
}

// Hist is a plain (not concurrent) latency histogram in nanoseconds.
type Hist struct {
	counts [histBuckets]uint64
	Count  uint64
	Sum    int64 // nanoseconds
	Max    int64 // nanoseconds, exact
}

// Add records one value.
func (h *Hist) Add(d time.Duration) {
	v := max(int64(d), 0)
	h.counts[bucketOf(v)]++
	h.Count++
	h.Sum += v
	h.Max = max(h.Max, v)
}

// Merge adds o's counts to h.
func (h *Hist) Merge(o *Hist) {
	if o == nil {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.Count += o.Count
	h.Sum += o.Sum
	h.Max = max(h.Max, o.Max)
}

// Quantile returns the value at quantile q in [0,1] (the nearest-rank
// definition), within the bucket precision; the exact maximum for q = 1.
func (h *Hist) Quantile(q float64) time.Duration {
	if h.Count == 0 {
		return 0
	}
	if q >= 1 {
		return time.Duration(h.Max)
	}
	rank := uint64(math.Ceil(q * float64(h.Count)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(min(bucketValue(i), h.Max))
		}
	}
	return time.Duration(h.Max)
}

// Mean returns the arithmetic mean.
func (h *Hist) Mean() time.Duration {
	if h.Count == 0 {
		return 0
	}
	return time.Duration(h.Sum / int64(h.Count))
}

// CDFPoint is one step of the empirical distribution: the fraction of values
// at or below Value.
type CDFPoint struct {
	Value    time.Duration
	Fraction float64
}

// CDF returns one point per non-empty bucket, in increasing order.
func (h *Hist) CDF() []CDFPoint {
	var pts []CDFPoint
	if h.Count == 0 {
		return pts
	}
	var seen uint64
	for i, c := range h.counts {
		if c == 0 {
			continue
		}
		seen += c
		v := min(bucketValue(i), h.Max)
		pts = append(pts, CDFPoint{Value: time.Duration(v), Fraction: float64(seen) / float64(h.Count)})
	}
	return pts
}

// Buckets returns the non-empty buckets as (value ns, count) pairs, the
// compact form written to the JSON report so a CDF can be redrawn.
func (h *Hist) Buckets() [][2]int64 {
	var out [][2]int64
	for i, c := range h.counts {
		if c != 0 {
			out = append(out, [2]int64{bucketValue(i), int64(c)})
		}
	}
	return out
}
