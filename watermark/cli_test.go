package watermark

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestRunVerify(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string { return writeTestFile(t, dir, name, content) }
	oldSecret, newSecret := strings.Repeat("a1", 32), strings.Repeat("b2", 32)
	keys := write("keys", KeySetHeader+"\nold "+oldSecret+"\nnew "+newSecret+" active\n")
	raw, _ := hex.DecodeString(oldSecret)
	oldKey, _ := NewKey("old", raw)
	lex := DefaultLexicon()
	m := NewMarker(lex, oldKey)

	// JSONL with {"text"} and chat completion lines, marked by the old key.
	var jsonl bytes.Buffer
	for i := 0; i < 30; i++ {
		out, _ := m.Mark(synthText(uint64(100+i), 3))
		b, _ := json.Marshal(out)
		s, _ := json.Marshal(string(out))
		_ = b
		if i%2 == 0 {
			fmt.Fprintf(&jsonl, "{\"text\":%s}\n", s)
		} else {
			fmt.Fprintf(&jsonl, "{\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":%s}}]}\n\n", s)
		}
	}
	markedFile := write("marked.jsonl", jsonl.String())
	plainFile := write("plain.txt", string(synthText(7, 60)))

	var stdout, stderr bytes.Buffer
	if code := RunVerify([]string{"-key-file", keys, "-decoys", "20", markedFile, plainFile}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want one JSON object per file, got %q", stdout.String())
	}
	var reps [2]map[string]any
	for i, l := range lines {
		if err := json.Unmarshal([]byte(l), &reps[i]); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"p_value", "statistic", "candidates", "matches", "key_id", "p_value_any_key", "scored", "method"} {
			if _, ok := reps[i][f]; !ok {
				t.Errorf("file %d: no %q in %s", i, f, l)
			}
		}
		if reps[i]["contexts"] != EmbeddedContexts {
			t.Errorf("file %d: statistics %v, want %q", i, reps[i]["contexts"], EmbeddedContexts)
		}
	}
	if reps[0]["key_id"] != "old" || reps[0]["p_value"].(float64) > 1e-6 || reps[0]["texts"].(float64) != 30 || reps[0]["decoys_as_extreme"] != nil {
		t.Errorf("marked file: %s", lines[0])
	}
	if reps[1]["p_value_any_key"].(float64) < 0.01 || len(reps[1]["keys"].([]any)) != 2 {
		t.Errorf("plain file: %s", lines[1])
	}

	// Logprobs mode with a reference.
	k := oldKey
	lm, _ := NewLogprobMark(k, 0.2)
	toJSONL := func(ps []LogprobPosition) string {
		var b bytes.Buffer
		for _, p := range ps {
			doc := map[string]any{"choices": []any{map[string]any{"logprobs": map[string]any{"content": []any{
				map[string]any{"token": p.Top[0].Token, "logprob": p.Top[0].Logprob, "top_logprobs": p.Top}}}}}}
			enc, _ := json.Marshal(doc)
			b.Write(enc)
			b.WriteByte('\n')
		}
		return b.String()
	}
	model := newSynthModel(300, 16)
	probes := synthProbes(400, 16, 3)
	susp := write("suspect.jsonl", toJSONL(model.answers(lm.NewShifter(), probes, 19, 1, 0.3)))
	ref := write("reference.jsonl", toJSONL(model.answers(nil, probes, 19, 1, 0)))
	var pj bytes.Buffer
	for i, p := range probes {
		if i%2 == 0 {
			b, _ := json.Marshal(p)
			pj.Write(append(b, '\n'))
		} else {
			// The chat request form is text; a record API's probes
			// are features, so write those for every probe here.
			b, _ := json.Marshal(map[string]any{"features": p.Features})
			pj.Write(append(b, '\n'))
		}
	}
	prompts := write("prompts.jsonl", pj.String())
	stdout.Reset()
	if code := RunVerify([]string{"-key-file", keys, "-mode", "logprobs", "-prompts", prompts, "-reference", ref, susp}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var lr map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &lr); err != nil {
		t.Fatal(err)
	}
	if lr["key_id"] != "old" || lr["p_value"].(float64) > 1e-6 || lr["tokens"].(float64) < 100 || lr["probes"].(float64) != 400 {
		t.Errorf("logprobs: %s", stdout.String())
	}

	// Errors exit 2 with a message.
	bad := write("bad.jsonl", "{\"text\":\"ok\"}\n{not json}\n")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{markedFile}, "usage"},
		{[]string{"-key-file", keys}, "usage"},
		{[]string{"-key-file", filepath.Join(dir, "none"), markedFile}, "no such file"},
		{[]string{"-key-file", keys, bad}, "line 2"},
		{[]string{"-key-file", keys, "-mode", "x", markedFile}, "-mode"},
		{[]string{"-key-file", keys, "-reference", ref, markedFile}, "-reference"},
		{[]string{"-key-file", keys, "-mode", "logprobs", susp}, "needs -prompts"},
		{[]string{"-key-file", keys, "-mode", "logprobs", "-prompts", write("p.jsonl", "{\"x\":1}\n"), susp}, "no \"prompt\""},
		{[]string{"-key-file", keys, write("empty.jsonl", "{\"id\":1}\n")}, "no \"text\""},
		{[]string{"-key-file", keys, "-mode", "logprobs", "-prompts", prompts, markedFile}, "top_logprobs"},
	} {
		stdout.Reset()
		stderr.Reset()
		if code := RunVerify(c.args, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%v: exit %d, stderr %q, want 2 and %q", c.args, code, stderr.String(), c.want)
		}
	}
}

func FuzzReadTexts(f *testing.F) {
	f.Add([]byte("{\"text\":\"big dog\"}\n{\"choices\":[{\"text\":\"x\"}]}\n"))
	f.Add([]byte("plain big text"))
	f.Add([]byte(`{"candidates":[{"content":{"parts":[{"text":"a","thought":true},{"text":"b"}]}}]}` + "\n"))
	f.Add([]byte(`{"output":[{"type":"reasoning","summary":[{"text":"s"}]},{"type":"message","content":[{"type":"output_text","text":"t"}]}]}` + "\n"))
	f.Add([]byte(`{"type":"message","content":[{"type":"thinking","thinking":"h"},{"type":"text","text":"t"}]}` + "\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		n := 0
		_ = readTexts(bytes.NewReader(b), func(x []byte) { n += len(x) })
		if n > 4*len(b)+16 {
			t.Fatalf("texts total %d bytes from %d input bytes", n, len(b))
		}
	})
}

func TestRunContexts(t *testing.T) {
	dir := t.TempDir()
	var own bytes.Buffer
	for i := 0; i < 300; i++ {
		b, _ := json.Marshal(map[string]string{"text": string(synthBalanced(uint64(5000+i), 2))})
		own.Write(append(b, '\n'))
	}
	ownFile := filepath.Join(dir, "own.jsonl")
	if err := os.WriteFile(ownFile, own.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	statsFile := filepath.Join(dir, "contexts.txt")
	var stdout, stderr bytes.Buffer
	if code := RunContexts([]string{"-o", statsFile, ownFile}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.HasPrefix(stdout.String(), "300 texts, ") {
		t.Errorf("stdout %q", stdout.String())
	}
	lex, name, err := LoadContextStats(DefaultLexicon(), statsFile)
	if err != nil {
		t.Fatal(err)
	}
	statsBytes, err := os.ReadFile(statsFile)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(statsBytes); name != "sha256:"+hex.EncodeToString(sum[:]) {
		t.Errorf("statistics named %q", name)
	}
	if lex.ContextStats().Sets() < 10 {
		t.Fatalf("%d units", lex.ContextStats().Sets())
	}
	// Text marked with those statistics verifies with them.
	markedFile := filepath.Join(dir, "marked.jsonl")
	keys := filepath.Join(dir, "keys")
	var marked bytes.Buffer
	secret := bytes.Repeat([]byte{7}, 32)
	if err := os.WriteFile(keys, []byte(KeySetHeader+"\nctx "+hex.EncodeToString(secret)+" active\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fk, _ := NewKey("ctx", secret)
	m := NewMarker(lex, fk)
	for i := 0; i < 40; i++ {
		out, _ := m.Mark(synthBalanced(uint64(9000+i), 3))
		b, _ := json.Marshal(map[string]string{"text": string(out)})
		marked.Write(append(b, '\n'))
	}
	if err := os.WriteFile(markedFile, marked.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout.Reset()
	if code := RunVerify([]string{"-key-file", keys, "-contexts", statsFile, markedFile}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var rep map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if rep["p_value"].(float64) > 1e-4 || rep["method"] != MethodEValue || rep["contexts"] != name {
		t.Errorf("verify with the statistics: %s", stdout.String())
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{ownFile}, "usage"},
		{[]string{"-o", statsFile}, "usage"},
		{[]string{"-o", statsFile, filepath.Join(dir, "none")}, "no such file"},
		{[]string{"-o", filepath.Join(dir, "no", "dir"), ownFile}, "no such file"},
	} {
		stderr.Reset()
		if code := RunContexts(c.args, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%v: exit %d, %q", c.args, code, stderr.String())
		}
	}
	stderr.Reset()
	if code := RunVerify([]string{"-key-file", keys, "-contexts", ownFile, markedFile}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "first line") {
		t.Errorf("bad statistics file: exit %d, %q", code, stderr.String())
	}
	if code := RunVerify([]string{"-key-file", keys, "-mode", "logprobs", "-contexts", statsFile, markedFile}, &stdout, &stderr); code != 2 {
		t.Errorf("-contexts in logprobs mode: exit %d", code)
	}
}

func FuzzParseContextStats(f *testing.F) {
	lex := DefaultLexicon()
	f.Add(lex.ContextStats().Format(lex)[:600])
	f.Add([]byte(ContextsHeader + "\nset big 4 2 2\nthe 2 1 1\n!%2e 2 1 1\n=kid 0 0 0\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cs, err := ParseContextStats(lex, b)
		if err != nil {
			return
		}
		// What parses formats back to text that parses to the same.
		text := cs.Format(lex)
		again, err := ParseContextStats(lex, text)
		if err != nil || !bytes.Equal(again.Format(lex), text) {
			t.Fatalf("round trip: %v", err)
		}
		// And a marker runs on it.
		NewMarker(lex.WithContextStats(cs), testKey(t, "", 1)).Mark([]byte("the big dog and the large cat"))
	})
}

func FuzzReadProbeContexts(f *testing.F) {
	f.Add([]byte("{\"prompt\":\"How many?\"}\n{\"features\":[1,2]}\n{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ps, err := ReadProbeContexts(bytes.NewReader(b), 16)
		if err != nil {
			return
		}
		if len(ps) > len(b) {
			t.Fatalf("%d probes from %d bytes", len(ps), len(b))
		}
		for _, p := range ps {
			// Decoded JSON strings are valid UTF-8, so a cut inside a
			// rune would show.
			if len(p.Text) > 16 || !utf8.ValidString(p.Text) {
				t.Fatalf("context %q: over 16 bytes or cut inside a rune", p.Text)
			}
		}
	})
}

// synthBalanced is synthText with every member of each set used: the
// natural shares are even, so the frequency-preserving assignment has
// room to mark.
func synthBalanced(seed uint64, sentences int) []byte {
	lex := DefaultLexicon()
	r := rand.New(rand.NewPCG(seed, 0x62616c))
	var alts [][]string
	for _, w := range []string{"big", "maybe", "usually", "therefore", "quickly", "car", "illegal", "dangerous", "kid", "mom", "finished", "huge"} {
		a, _ := lex.Lookup(w)
		alts = append(alts, a)
	}
	syl := []string{"ka", "lo", "mi", "ter", "zon", "pra"}
	var b []byte
	for i := 0; i < sentences; i++ {
		b = append(b, "The "...)
		for j := 0; j < 6; j++ {
			b = append(b, syl[r.IntN(len(syl))]...)
			b = append(b, syl[r.IntN(len(syl))]...)
			b = append(b, ' ')
			a := alts[r.IntN(len(alts))]
			b = append(b, a[r.IntN(len(a))]...)
			b = append(b, ' ')
		}
		b = append(b, "end. "...)
	}
	return b
}
