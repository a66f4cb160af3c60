package watermark

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseKeyFile(t *testing.T) {
	secret := strings.Repeat("ab", 32)
	other := strings.Repeat("cd", 40)
	raw := strings.Repeat("x", 32)
	for _, c := range []struct {
		name, file string
		wantIDs    []string // active first; "" = fingerprint
		wantErr    string
	}{
		{name: "hex", file: secret + "\n", wantIDs: []string{""}},
		{name: "raw", file: raw, wantIDs: []string{""}},
		{name: "short raw", file: "too short", wantErr: "at least 32"},
		{name: "short hex is raw and too short", file: strings.Repeat("ab", 15), wantErr: "at least 32"},
		{name: "key set", file: KeySetHeader + "\n# rotated 2025-01\nold " + other + "\nnew " + secret + " active\n", wantIDs: []string{"new", "old"}},
		{name: "key set, no active", file: KeySetHeader + "\na " + secret + "\n", wantErr: "no key marked active"},
		{name: "key set, two active", file: KeySetHeader + "\na " + secret + " active\nb " + other + " active\n", wantErr: "second active"},
		{name: "key set, duplicate id", file: KeySetHeader + "\na " + secret + " active\na " + other + "\n", wantErr: "twice"},
		{name: "key set, bad hex", file: KeySetHeader + "\na zz" + secret + " active\n", wantErr: "not hex"},
		{name: "key set, short secret", file: KeySetHeader + "\na abcd active\n", wantErr: "at least 32"},
		{name: "key set, bad id", file: KeySetHeader + "\na/b " + secret + " active\n", wantErr: "only letters"},
		{name: "key set, junk", file: KeySetHeader + "\na " + secret + " primary\n", wantErr: "want"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ks, err := ParseKeyFile([]byte(c.file))
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(ks.Keys()) != len(c.wantIDs) || ks.Active() != ks.Keys()[0] {
				t.Fatalf("keys %d, want %d", len(ks.Keys()), len(c.wantIDs))
			}
			for i, id := range c.wantIDs {
				got := ks.Keys()[i].ID()
				if id == "" && (len(got) != 9 || got[0] != 'k') || id != "" && got != id {
					t.Errorf("key %d id = %q, want %q", i, got, id)
				}
			}
		})
	}
}

func TestKeyDerivation(t *testing.T) {
	s1, _ := hex.DecodeString(strings.Repeat("11", 32))
	s2, _ := hex.DecodeString(strings.Repeat("11", 31) + "12")
	a, _ := NewKey("a", s1)
	a2, _ := NewKey("b", s1)
	b, _ := NewKey("a", s2)
	// Same secret, same PRF whatever the id; one bit of secret changes it.
	pa := prf{block: a.lexBlock, macKey: a.lexMAC}
	pa2 := prf{block: a2.lexBlock, macKey: a2.lexMAC}
	pb := prf{block: b.lexBlock, macKey: b.lexMAC}
	short, long := []byte("ctx"), []byte("a context longer than fifteen bytes")
	for _, m := range [][]byte{short, long} {
		if pa.sum64(m) != pa2.sum64(m) {
			t.Error("same secret gave different PRF outputs")
		}
		if pa.sum64(m) == pb.sum64(m) {
			t.Error("different secrets gave the same PRF output")
		}
	}
	// The lexical and logprob keys are independent derivations.
	lp := prf{block: a.lpBlock, macKey: a.lpMAC}
	if lp.sum64(short) == pa.sum64(short) || lp.sum64(long) == pa.sum64(long) {
		t.Error("lexical and logprob PRFs coincide")
	}
	// Length is part of the block encoding: "a" and "a\x00" differ.
	if pa.sum64([]byte("a")) == pa.sum64([]byte("a\x00")) {
		t.Error("block encoding is not injective")
	}
	if Fingerprint(s1) == Fingerprint(s2) || Fingerprint(s1) != a.id[:0]+Fingerprint(s1) {
		t.Error("fingerprints")
	}
}

func TestLoadKeyFileAndRotation(t *testing.T) {
	dir := t.TempDir()
	old, neu := strings.Repeat("01", 32), strings.Repeat("02", 32)
	path := filepath.Join(dir, "keys")
	if err := os.WriteFile(path, []byte(KeySetHeader+"\nv1 "+old+"\nv2 "+neu+" active\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ks, err := LoadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if ks.Active().ID() != "v2" {
		t.Fatalf("active = %s", ks.Active().ID())
	}
	k1, ok := ks.Lookup("v1")
	if !ok {
		t.Fatal("v1 not found")
	}
	if _, ok := ks.Lookup("v3"); ok {
		t.Error("found a key that is not there")
	}
	// Text marked under the old key still verifies with the set.
	text := synthText(1, 40)
	marked, _ := NewMarker(DefaultLexicon(), k1).Mark(text)
	v := NewVerifier(DefaultLexicon())
	sm := v.NewSample()
	sm.Add(marked)
	if r := sm.Score(k1); r.PValue > 1e-3 {
		t.Errorf("old key p = %g on text it marked", r.PValue)
	}
	if _, err := LoadKeyFile(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file accepted")
	}
}

func TestPRFStringMatchesBytes(t *testing.T) {
	k := testKey(t, "", 4)
	p := prf{block: k.lpBlock, macKey: k.lpMAC}
	for _, s := range []string{"", "a", "fifteen bytes!!", "sixteen bytes!!!", strings.Repeat("long token ", 9)} {
		if p.sum64s(s) != p.sum64([]byte(s)) {
			t.Errorf("%q: sum64s != sum64", s)
		}
	}
}
