package watermark

import (
	"bufio"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/distillguard/distillguard/internal/corpus"
	"github.com/distillguard/distillguard/internal/corpus/corpustest"
)

// testKey derives a deterministic key from a seed.
func testKey(t testing.TB, id string, seed uint64) *Key {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 0x6b6579))
	secret := make([]byte, 32)
	for i := range secret {
		secret[i] = byte(r.Uint32())
	}
	k, err := NewKey(id, secret)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// writeTestFile writes content to dir/name and returns the path.
func writeTestFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// corpusTexts are the corpus texts by corpus name: GSM8K worked solutions
// (assistant-style), HH-RLHF human turns and self-instruct tasks.
type corpusTexts struct {
	name  string
	texts []string
}

func loadCorpora(t testing.TB) []corpusTexts {
	t.Helper()
	dir := corpustest.Require(t)
	read := func(name string, each func(map[string]any) []string) []string {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 4<<20)
		var out []string
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Fatal(err)
			}
			out = append(out, each(m)...)
		}
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	str := func(v any) string { s, _ := v.(string); return s }
	return []corpusTexts{
		{"gsm8k answers", read(corpus.QuestionsFile, func(m map[string]any) []string { return []string{str(m["answer"])} })},
		{"hh-rlhf turns", read(corpus.DialogsFile, func(m map[string]any) []string {
			var out []string
			turns, _ := m["turns"].([]any)
			for _, x := range turns {
				out = append(out, str(x))
			}
			return out
		})},
		{"self-instruct tasks", read(corpus.TasksFile, func(m map[string]any) []string {
			s := str(m["instruction"])
			if in := str(m["input"]); in != "" {
				s += "\n" + in
			}
			return []string{s}
		})},
	}
}

// synthText is varied text full of candidates in distinct contexts:
// pseudo-words (never in the lexicon) followed by synonym-set members.
func synthText(seed uint64, sentences int) []byte {
	r := rand.New(rand.NewPCG(seed, 0x74657874))
	members := []string{"big", "huge", "bought", "usually", "therefore", "quickly", "children", "car", "maybe", "illegal", "tried", "dangerous"}
	syl := []string{"ka", "lo", "mi", "ter", "zon", "pra", "vel", "dus", "ro", "qui"}
	word := func() string {
		w := ""
		for n := 2 + r.IntN(2); n > 0; n-- {
			w += syl[r.IntN(len(syl))]
		}
		return w
	}
	var b []byte
	for i := 0; i < sentences; i++ {
		b = append(b, "The "...)
		for j := 0; j < 6; j++ {
			b = append(b, word()...)
			b = append(b, ' ')
			b = append(b, members[r.IntN(len(members))]...)
			if j < 5 {
				b = append(b, ' ')
			}
		}
		b = append(b, ". "...)
	}
	return b
}
