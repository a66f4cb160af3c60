package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/distillguard/distillguard/watermark"
)

// TestWatermarkSubcommand runs keygen and verify through runMain: a key is
// generated, text is marked with it, and verify finds the mark, while the
// server's flags still parse as before.
func TestWatermarkSubcommand(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	var out, errb bytes.Buffer
	if rc := runMain([]string{"watermark", "keygen", "-key-file", keys, "-id", "first"}, &out, &errb); rc != 0 {
		t.Fatalf("keygen: exit %d: %s", rc, errb.String())
	}
	if strings.TrimSpace(out.String()) != "first" {
		t.Errorf("keygen printed %q, want the new id", out.String())
	}
	ks, err := watermark.LoadKeyFile(keys)
	if err != nil {
		t.Fatal(err)
	}
	if ks.Active().ID() != "first" {
		t.Fatalf("active key %q", ks.Active().ID())
	}
	if st, err := os.Stat(keys); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode: %v %v", st.Mode(), err)
	}

	// Mark many short responses with the generated key.
	m := watermark.NewMarker(watermark.DefaultLexicon(), ks.Active())
	var jsonl bytes.Buffer
	// Varied text: pseudo-words (contexts nobody has seen) before members
	// of sets whose members are both in common use.
	r := rand.New(rand.NewPCG(3, 4))
	members := [][]string{{"kids", "children"}, {"big", "large"}, {"maybe", "perhaps"}, {"mom", "mother"}, {"dad", "father"}, {"jail", "prison"}}
	for i := 0; i < 400; i++ {
		var b strings.Builder
		for j := 0; j < 8; j++ {
			fmt.Fprintf(&b, "zo%dka ", r.IntN(3000))
			m := members[r.IntN(len(members))]
			b.WriteString(m[r.IntN(2)])
			b.WriteString(" ")
		}
		b.WriteString("end.")
		marked, _ := m.Mark([]byte(b.String()))
		line, _ := json.Marshal(map[string]string{"text": string(marked)})
		jsonl.Write(append(line, '\n'))
	}
	file := filepath.Join(dir, "suspect.jsonl")
	if err := os.WriteFile(file, jsonl.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	errb.Reset()
	if rc := runMain([]string{"watermark", "verify", "-key-file", keys, file}, &out, &errb); rc != 0 {
		t.Fatalf("verify: exit %d: %s", rc, errb.String())
	}
	var rep struct {
		KeyID  string  `json:"key_id"`
		PValue float64 `json:"p_value"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if rep.KeyID != "first" || rep.PValue > 1e-6 {
		t.Errorf("verify: %s", out.String())
	}

	// Rotation: a second key becomes active, the first still verifies.
	out.Reset()
	if rc := runMain([]string{"watermark", "keygen", "-key-file", keys, "-id", "second"}, &out, &errb); rc != 0 {
		t.Fatalf("keygen: exit %d: %s", rc, errb.String())
	}
	if ks, err = watermark.LoadKeyFile(keys); err != nil || ks.Active().ID() != "second" || len(ks.Keys()) != 2 {
		t.Fatalf("after rotation: %v %v", ks, err)
	}

	for _, c := range []struct {
		args []string
		rc   int
		want string
	}{
		{[]string{"watermark"}, 2, "usage: distillguard watermark"},
		{[]string{"watermark", "nope"}, 2, `unknown command "nope"`},
		{[]string{"watermark", "verify"}, 2, "usage: distillguard watermark verify"},
		{[]string{"watermark", "probe"}, 2, "usage: distillguard watermark probe"},
		{[]string{"watermark", "keygen", "-key-file", keys, "-id", "first"}, 2, "already in the key file"},
		{[]string{"-no-such-flag"}, 2, "distillguard watermark verify|keygen"},
	} {
		out.Reset()
		errb.Reset()
		if rc := runMain(c.args, &out, &errb); rc != c.rc || !strings.Contains(errb.String(), c.want) {
			t.Errorf("%q: exit %d, stderr %q; want exit %d and %q", c.args, rc, errb.String(), c.rc, c.want)
		}
	}
	out.Reset()
	if rc := runMain([]string{"watermark", "help"}, &out, &errb); rc != 0 || !strings.Contains(out.String(), "keygen") || !strings.Contains(out.String(), "contexts") || !strings.Contains(out.String(), "probe") {
		t.Errorf("help: exit %d, %q", rc, out.String())
	}
	// contexts: statistics of the suspect file's own text, then verify
	// with them (the marked text was marked with the embedded ones, so
	// this only checks the plumbing: the file is read and scored).
	stats := filepath.Join(dir, "contexts.txt")
	out.Reset()
	if rc := runMain([]string{"watermark", "contexts", "-o", stats, file}, &out, &errb); rc != 0 || !strings.HasPrefix(out.String(), "400 texts") {
		t.Fatalf("contexts: exit %d, %q %s", rc, out.String(), errb.String())
	}
	out.Reset()
	if rc := runMain([]string{"watermark", "verify", "-key-file", keys, "-contexts", stats, file}, &out, &errb); rc != 0 || !strings.Contains(out.String(), `"texts":400`) {
		t.Errorf("verify -contexts: exit %d, %q %s", rc, out.String(), errb.String())
	}
}
