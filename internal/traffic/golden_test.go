package traffic

import (
	"bytes"
	"encoding/json"
	"flag"
	"path/filepath"
	"testing"

	"github.com/distillguard/distillguard/internal/golden"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

// TestGolden pins the generator's output format and determinism: the first
// requests of a small run, as JSON lines. Regenerate with -update after an
// intended change to the generator.
func TestGolden(t *testing.T) {
	c := loadCorpus(t)
	reqs, err := GenerateFrom(c, Options{Seed: 42, Scale: 0.05})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	// One request of every family, in time order: every body shape.
	seen := map[string]bool{}
	for _, r := range reqs {
		if seen[r.Family] {
			continue
		}
		seen[r.Family] = true
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	golden.Check(t, filepath.Join("testdata", "families.golden.jsonl"), buf.Bytes(), *update)
}
