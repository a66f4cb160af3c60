package watermark

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAddKey(t *testing.T) {
	secret := func(b byte) []byte { return bytes.Repeat([]byte{b}, MinSecretBytes) }
	dir := t.TempDir()
	cases := []struct {
		name    string
		old     string // "" = no file
		id      string
		wantIDs []string // active first
		wantErr string
	}{
		{name: "new file", id: "a", wantIDs: []string{"a"}},
		{name: "add to set, comments kept", old: KeySetHeader + "\n# rotated monthly\nold " + hex.EncodeToString(secret(1)) + " active\n",
			id: "b", wantIDs: []string{"b", "old"}},
		{name: "hex single secret", old: hex.EncodeToString(secret(2)) + "\n", id: "c", wantIDs: []string{"c", Fingerprint(secret(2))}},
		{name: "raw single secret", old: strings.Repeat("x", 40), id: "", wantIDs: []string{Fingerprint(secret(9)), Fingerprint([]byte(strings.Repeat("x", 40)))}},
		{name: "duplicate id", old: KeySetHeader + "\nold " + hex.EncodeToString(secret(1)) + " active\n", id: "old", wantErr: "already"},
		{name: "bad id", id: "no spaces", wantErr: "only letters"},
		{name: "broken file", old: KeySetHeader + "\nold zz active\n", id: "d", wantErr: "not hex"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_"))
			if c.old != "" {
				if err := os.WriteFile(path, []byte(c.old), 0o640); err != nil {
					t.Fatal(err)
				}
			}
			s := secret(byte(10 + i))
			if c.name == "raw single secret" {
				s = secret(9)
			}
			id, err := AddKey(path, c.id, s)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err %v, want %q", err, c.wantErr)
				}
				if b, _ := os.ReadFile(path); string(b) != c.old {
					t.Errorf("a failed add changed the file: %q", b)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if id != c.wantIDs[0] {
				t.Errorf("id %q, want %q", id, c.wantIDs[0])
			}
			ks, err := LoadKeyFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, k := range ks.Keys() {
				ids = append(ids, k.ID())
			}
			if strings.Join(ids, ",") != strings.Join(c.wantIDs, ",") {
				t.Errorf("keys %v, want %v", ids, c.wantIDs)
			}
			// The old keys keep their secrets: a key derived from the
			// old file's secret is the same key.
			if c.old != "" {
				oldKS, _ := ParseKeyFile([]byte(c.old))
				k, _ := ks.Lookup(oldKS.Active().ID())
				if k == nil || k.lpMAC[0] != oldKS.Active().lpMAC[0] || k.lexMAC[0] != oldKS.Active().lexMAC[0] {
					t.Error("the old key changed")
				}
				st, _ := os.Stat(path)
				if st.Mode().Perm() != 0o640 {
					t.Errorf("mode %v, want the old file's 0640", st.Mode().Perm())
				}
				if b, _ := os.ReadFile(path); strings.Contains(c.old, "#") && !strings.Contains(string(b), "# rotated monthly") {
					t.Error("comment lost")
				}
			}
			if ents, _ := filepath.Glob(filepath.Join(dir, ".keyset-*")); len(ents) != 0 {
				t.Errorf("temporary files left: %v", ents)
			}
		})
	}
}

func TestRunKeygenUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if rc := RunKeygen(nil, &out, &errb); rc != 2 || !strings.Contains(errb.String(), "usage") {
		t.Errorf("no args: %d %q", rc, errb.String())
	}
	p := filepath.Join(t.TempDir(), "k")
	if rc := RunKeygen([]string{"-key-file", p}, &out, &errb); rc != 0 {
		t.Fatalf("exit %d: %s", rc, errb.String())
	}
	ks, err := LoadKeyFile(p)
	if err != nil || strings.TrimSpace(out.String()) != ks.Active().ID() {
		t.Errorf("printed %q, file %v %v", out.String(), ks, err)
	}
}
