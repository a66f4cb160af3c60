package bench

import (
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"
)

func TestBucketOfIsWithinRange(t *testing.T) {
	vals := []int64{0, 1, 127, 128, 255, 256, 257, 511, 512, 1000, 4095, 4096, 123456, 1e6, 1e9, 1e12, histMaxValue}
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 10000; i++ {
		vals = append(vals, r.Int64N(histMaxValue))
	}
	for _, v := range vals {
		i := bucketOf(v)
		lo, w := bucketRange(i)
		if v < lo || v >= lo+w {
			t.Fatalf("value %d in bucket %d = [%d,%d)", v, i, lo, lo+w)
		}
		if v >= 256 && float64(w)/float64(v) > 1.0/histHalf {
			t.Fatalf("bucket width %d is more than 1/%d of %d", w, histHalf, v)
		}
		if i < 0 || i >= histBuckets {
			t.Fatalf("bucket %d out of range for %d", i, v)
		}
	}
	if bucketOf(-5) != 0 || bucketOf(histMaxValue*4) != bucketOf(histMaxValue) {
		t.Error("out-of-range values must clamp")
	}
}

func TestBucketsAreContiguous(t *testing.T) {
	for i := 1; i < histBuckets; i++ {
		plo, pw := bucketRange(i - 1)
		lo, _ := bucketRange(i)
		if plo+pw != lo {
			t.Fatalf("bucket %d starts at %d, previous ends at %d", i, lo, plo+pw)
		}
	}
}

func TestQuantiles(t *testing.T) {
	cases := []struct {
		name   string
		values []time.Duration
		q      float64
		want   time.Duration
	}{
		{"single", []time.Duration{5 * time.Microsecond}, 0.5, 5 * time.Microsecond},
		{"median of 1..100", seq(1, 100, time.Microsecond), 0.5, 50 * time.Microsecond},
		{"p99 of 1..100", seq(1, 100, time.Microsecond), 0.99, 99 * time.Microsecond},
		{"p90 of 1..1000 ms", seq(1, 1000, time.Millisecond), 0.9, 900 * time.Millisecond},
		{"max", seq(1, 100, time.Microsecond), 1, 100 * time.Microsecond},
		{"min", seq(1, 100, time.Microsecond), 0, 1 * time.Microsecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var h Hist
			for _, v := range tc.values {
				h.Add(v)
			}
			got := h.Quantile(tc.q)
			diff := got - tc.want
			if diff < 0 {
				diff = -diff
			}
			if float64(diff) > float64(tc.want)/histHalf+1 {
				t.Errorf("Quantile(%v) = %v, want %v within 1/%d", tc.q, got, tc.want, histHalf)
			}
		})
	}
	var empty Hist
	if empty.Quantile(0.5) != 0 || empty.Mean() != 0 || len(empty.CDF()) != 0 {
		t.Error("empty histogram must report zeros")
	}
}

func seq(from, to int, unit time.Duration) []time.Duration {
	var out []time.Duration
	for i := from; i <= to; i++ {
		out = append(out, time.Duration(i)*unit)
	}
	return out
}

// TestQuantileAgainstSort checks the histogram against exact order
// statistics on a skewed distribution like real latencies.
func TestQuantileAgainstSort(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var h Hist
	var vals []float64
	for i := 0; i < 100000; i++ {
		v := 50e3 + r.ExpFloat64()*200e3 // ns
		vals = append(vals, v)
		h.Add(time.Duration(v))
	}
	sort.Float64s(vals)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		exact := vals[int(q*float64(len(vals)))-1]
		got := float64(h.Quantile(q))
		if got < exact*(1-1.0/histHalf)-1 || got > exact*(1+1.0/histHalf)+1 {
			t.Errorf("q%v: got %.0f, exact %.0f", q, got, exact)
		}
	}
}

func TestRecorderMatchesHist(t *testing.T) {
	rec := NewRecorder(4)
	var want Hist
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 9))
			for i := 0; i < 5000; i++ {
				d := time.Duration(r.Int64N(int64(10 * time.Millisecond)))
				rec.Record(w, d)
				mu.Lock()
				want.Add(d)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	got := rec.Snapshot()
	if got.Count != want.Count || got.Sum != want.Sum || got.Max != want.Max {
		t.Fatalf("snapshot count/sum/max %d/%d/%d, want %d/%d/%d", got.Count, got.Sum, got.Max, want.Count, want.Sum, want.Max)
	}
	for _, q := range []float64{0.1, 0.5, 0.99} {
		if got.Quantile(q) != want.Quantile(q) {
			t.Errorf("q%v differs", q)
		}
	}
}

func TestMergeAndCDF(t *testing.T) {
	var a, b Hist
	for _, v := range seq(1, 50, time.Microsecond) {
		a.Add(v)
	}
	for _, v := range seq(51, 100, time.Microsecond) {
		b.Add(v)
	}
	a.Merge(&b)
	a.Merge(nil)
	if a.Count != 100 || a.Max != int64(100*time.Microsecond) {
		t.Fatalf("merged count %d max %d", a.Count, a.Max)
	}
	cdf := a.CDF()
	for i := 1; i < len(cdf); i++ {
		if cdf[i].Value <= cdf[i-1].Value || cdf[i].Fraction < cdf[i-1].Fraction {
			t.Fatalf("CDF not increasing at %d: %+v %+v", i, cdf[i-1], cdf[i])
		}
	}
	if last := cdf[len(cdf)-1]; last.Fraction != 1 {
		t.Errorf("CDF ends at %v", last.Fraction)
	}
	var n int64
	for _, bk := range a.Buckets() {
		n += bk[1]
	}
	if n != 100 {
		t.Errorf("buckets hold %d values", n)
	}
}

func BenchmarkRecorder(b *testing.B) {
	rec := NewRecorder(16)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			rec.Record(i, time.Duration(i*997%1000000))
			i++
		}
	})
}
