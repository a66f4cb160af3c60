package main

import (
	"bytes"
	"encoding/json"
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
	sentences := []string{
		"Perhaps the big dog quickly found a huge bone, therefore it was happy.",
		"She usually bought an expensive car and often tried to finish the exam.",
		"Furthermore, the method is basically simple and the error was obvious.",
		"Unfortunately the kid suddenly cried, so mom immediately helped him.",
	}
	for i := 0; i < 400; i++ {
		text := sentences[i%4] + " " + sentences[(i/4)%4] + " " + sentences[(i/16)%4]
		marked, _ := m.Mark([]byte(text))
		b, _ := json.Marshal(map[string]string{"text": string(marked)})
		jsonl.Write(append(b, '\n'))
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
	if rep.KeyID != "first" || rep.PValue > 1e-3 {
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
	if rc := runMain([]string{"watermark", "help"}, &out, &errb); rc != 0 || !strings.Contains(out.String(), "keygen") {
		t.Errorf("help: exit %d, %q", rc, out.String())
	}
}
