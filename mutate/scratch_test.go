package mutate

import (
	"bytes"
	"sync"
	"testing"
)

// TestScratchPool: rewriters that borrow their patch lists from one pool,
// concurrently, write what a rewriter without one writes, and keep no
// borrowed list once Rewrite has returned.
func TestScratchPool(t *testing.T) {
	big := chatBody(100 << 10)
	small := chatChunk(5)
	broken := append(bytes.Clone(big[:len(big)-1]), ']')
	var want [3][]byte
	ref := NewRewriter(degrade, 7) // noise positions run on across documents
	for i, d := range [][]byte{big, small, broken} {
		want[i], _ = ref.Rewrite(nil, d)
	}
	var pool ScratchPool
	var wg sync.WaitGroup
	errs := make(chan string, 4)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 20; n++ {
				rw := NewRewriter(degrade, 7)
				rw.SetScratchPool(&pool)
				for i, d := range [][]byte{big, small, broken} {
					got, _ := rw.Rewrite(nil, d)
					if !bytes.Equal(got, want[i]) {
						errs <- "pooled output differs"
						return
					}
					if rw.borrowed || (i == 0 && rw.ps != nil) {
						errs <- "a borrowed patch list was kept after Rewrite"
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
}

// BenchmarkRewriteBody100KBFresh: a 100 KB body through a new Rewriter
// each time (one per response, as a server has it), with and without a
// shared scratch pool.
func BenchmarkRewriteBody100KBFresh(b *testing.B) {
	doc := chatBody(100 << 10)
	for _, pooled := range []bool{false, true} {
		name := "alloc"
		if pooled {
			name = "pooled"
		}
		b.Run(name, func(b *testing.B) {
			var pool ScratchPool
			dst := make([]byte, 0, 2*len(doc))
			b.SetBytes(int64(len(doc)))
			b.ReportAllocs()
			for b.Loop() {
				rw := NewRewriter(allow, 1)
				if pooled {
					rw.SetScratchPool(&pool)
				}
				var err error
				if dst, err = rw.Rewrite(dst[:0], doc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
