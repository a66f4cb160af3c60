package mutate

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func gunzipChunks(t *testing.T, g *Gunzip, in []byte, step int) ([]byte, error) {
	t.Helper()
	var out []byte
	var err error
	for len(in) > 0 {
		n := min(step, len(in))
		if out, err = g.Write(out, in[:n]); err != nil {
			return out, err
		}
		in = in[n:]
	}
	return g.Close(out)
}

func TestGunzip(t *testing.T) {
	long := strings.Repeat("data: {\"choices\":[]}\n\n", 5000)
	tests := []struct {
		name    string
		in      []byte
		want    string
		wantErr bool
	}{
		{"one member", gzipped("hello"), "hello", false},
		{"members", gzipped("a", "", "bc"), "abc", false},
		{"long", gzipped(long), long, false},
		{"empty input", nil, "", false},
		{"truncated", gzipped(long)[:200], "", true},
		{"bad crc", func() []byte { b := gzipped("hello"); b[len(b)-6] ^= 1; return b }(), "", true},
		{"not gzip", []byte("plain text body"), "", true},
		{"trailing garbage", append(gzipped("x"), "garbage!!!"...), "", true},
	}
	for _, tt := range tests {
		for _, step := range []int{1, 7, 4096, 1 << 30} {
			g := NewGunzip(1 << 20)
			out, err := gunzipChunks(t, g, tt.in, step)
			if (err != nil) != tt.wantErr {
				t.Fatalf("%s step %d: err = %v", tt.name, step, err)
			}
			if !tt.wantErr && string(out) != tt.want {
				t.Fatalf("%s step %d: got %d bytes, want %d", tt.name, step, len(out), len(tt.want))
			}
			if _, err2 := g.Close(nil); (err2 != nil) != tt.wantErr {
				t.Fatalf("%s: second Close: %v", tt.name, err2)
			}
		}
	}
}

// Output comes out as soon as the compressor flushed, not at the end.
func TestGunzipFlushedOutputIsPromptlyAvailable(t *testing.T) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	g := NewGunzip(1 << 20)
	defer g.Close(nil)
	var out []byte
	for i := 0; i < 5; i++ {
		ev := "data: {\"n\":" + itoa(i) + "}\n\n"
		zw.Write([]byte(ev))
		zw.Flush()
		var err error
		prev := len(out)
		if out, err = g.Write(out, buf.Bytes()); err != nil {
			t.Fatal(err)
		}
		buf.Reset()
		if string(out[prev:]) != ev {
			t.Fatalf("event %d: got %q after its flush", i, out[prev:])
		}
	}
}

func TestGunzipBomb(t *testing.T) {
	// testdata/bomb_1gib_zeros.gz.gz is gzip -9 of (gzip -9 of 1 GiB of
	// zeros): the outer layer only keeps the file small (2.6 KB); the inner
	// one is the bomb, a single 1 MB gzip member.
	raw, err := os.ReadFile(filepath.Join("testdata", "bomb_1gib_zeros.gz.gz"))
	if err != nil {
		t.Fatal(err)
	}
	single, err := io.ReadAll(must(gzip.NewReader(bytes.NewReader(raw))))
	if err != nil {
		t.Fatal(err)
	}
	// The same 1 GiB as 1024 concatenated members of 1 MiB.
	multi := bytes.Repeat(gzipped(string(make([]byte, 1<<20))), 1024)
	for name, bomb := range map[string][]byte{"single member": single, "1024 members": multi} {
		t.Run(name, func(t *testing.T) { checkBomb(t, bomb) })
	}
}

func checkBomb(t *testing.T, bomb []byte) {
	t.Logf("1 GiB of zeros as %d compressed bytes", len(bomb))
	g := NewGunzip(16 << 20)
	var out []byte
	var err error
	in := bomb
	for len(in) > 0 && err == nil {
		n := min(16<<10, len(in))
		out, err = g.Write(out[:0], in[:n])
		in = in[n:]
	}
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
	if len(in) < len(bomb)/2 {
		t.Fatalf("bomb detected late: %d of %d input bytes consumed", len(bomb)-len(in), len(bomb))
	}
	if _, err := g.Close(nil); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Close after bomb: %v", err)
	}
	if _, err := g.Write(nil, []byte{0}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Write after bomb: %v", err)
	}
}

func TestGunzipNoGoroutineOutlivesClose(t *testing.T) {
	before := runtime.NumGoroutine()
	in := gzipped(strings.Repeat("x", 100000))
	for i := 0; i < 50; i++ {
		g := NewGunzip(1 << 20)
		switch i % 5 {
		case 0: // complete stream
			gunzipChunks(t, g, in, 1000)
		case 1: // closed mid-stream
			g.Write(nil, in[:len(in)/2])
			g.Close(nil)
		case 2: // error mid-stream, then Close
			g.Write(nil, []byte("nope, not gzip"))
			g.Close(nil)
		case 3: // bound exceeded
			small := NewGunzip(10)
			small.Write(nil, in)
			small.Close(nil)
			g.Close(nil)
		case 4: // Close twice, never written
			g.Close(nil)
			g.Close(nil)
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("%d goroutines before, %d after", before, n)
	}
}

func TestGunzipMatchesReference(t *testing.T) {
	in := gzipped("first member\n", strings.Repeat("second ", 3000))
	want, err := io.ReadAll(must(gzip.NewReader(bytes.NewReader(in))))
	if err != nil {
		t.Fatal(err)
	}
	for step := 1; step < 64; step += 9 {
		got, err := gunzipChunks(t, NewGunzip(1<<20), in, step)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("step %d: %v", step, err)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestGunzipChunkLimit: one chunk may not decode beyond LimitChunk, so a
// 64 KiB chunk of a bomb cannot become a 64 MiB reply; a stream that stays
// under the bound per chunk decodes whole.
func TestGunzipChunkLimit(t *testing.T) {
	bomb := gzipped(strings.Repeat("\x00", 64<<20))
	g := NewGunzip(1 << 30)
	g.LimitChunk(4 << 20)
	out, err := g.Write(nil, bomb[:min(len(bomb), 64<<10)])
	if !errors.Is(err, ErrChunkTooLarge) || len(out) > 4<<20 {
		t.Fatalf("bomb chunk: %d bytes, err %v", len(out), err)
	}
	g.Close(nil)
	var sb strings.Builder
	rng := rand.New(rand.NewPCG(5, 6))
	for sb.Len() < 1<<20 {
		fmt.Fprintf(&sb, "data: {\"a\":%d,\"logprob\":-%.6f}\n\n", rng.Uint64(), rng.Float64())
	}
	plain := sb.String()
	in := gzipped(plain)
	g = NewGunzip(1 << 30)
	g.LimitChunk(64 << 10)
	var got []byte
	for i := 0; i < len(in); i += 512 {
		if got, err = g.Write(got, in[i:min(i+512, len(in))]); err != nil {
			t.Fatalf("at %d: %v", i, err)
		}
	}
	if got, err = g.Close(got); err != nil || string(got) != plain {
		t.Fatalf("%d bytes, %v", len(got), err)
	}
}
