package watermark

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// RunKeygen is the command `distillguard watermark keygen`:
//
//	keygen -key-file F [-id ID]
//
// When F does not exist it writes a new key set (KeySetHeader, one fresh
// 256-bit key from crypto/rand, marked active) with mode 0600. When F
// exists it adds a fresh key with id ID and makes it the active one; the
// previous keys stay in the file and keep verifying (rotation). A file
// holding a single hex or raw secret is converted into a key set first, the
// old secret under its fingerprint id. Comments and blank lines are kept.
// The file is replaced atomically (written beside it, then renamed). The
// new key's id is printed on stdout.
//
// Exit status: 0 on success, 2 on a usage or input error.
func RunKeygen(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("watermark keygen", flag.ContinueOnError)
	fl.SetOutput(stderr)
	keyFile := fl.String("key-file", "", "key set file to create or add a key to")
	id := fl.String("id", "", "id of the new key (default: its fingerprint)")
	fl.Usage = func() {
		fmt.Fprintln(stderr, "usage: distillguard watermark keygen -key-file F [-id ID]")
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if *keyFile == "" || fl.NArg() != 0 {
		fl.Usage()
		return 2
	}
	secret := make([]byte, MinSecretBytes)
	if _, err := rand.Read(secret); err != nil {
		fmt.Fprintln(stderr, "watermark keygen:", err)
		return 2
	}
	newID, err := AddKey(*keyFile, *id, secret)
	if err != nil {
		fmt.Fprintln(stderr, "watermark keygen:", err)
		return 2
	}
	fmt.Fprintln(stdout, newID)
	return 0
}

// AddKey adds secret under id to the key file at path (creating it) and
// makes it the active key; see RunKeygen. It returns the key's id.
func AddKey(path, id string, secret []byte) (string, error) {
	k, err := NewKey(id, secret)
	if err != nil {
		return "", err
	}
	old, err := os.ReadFile(path)
	mode := fs.FileMode(0o600)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		old = nil
	case err != nil:
		return "", err
	default:
		if st, err := os.Stat(path); err == nil {
			mode = st.Mode().Perm()
		}
	}
	out, err := addKeyText(old, k.ID(), secret)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if _, err := ParseKeyFile(out); err != nil {
		return "", fmt.Errorf("%s: the new file would not parse: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".keyset-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name()) // after a successful rename, nothing is left to remove
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return "", err
	}
	if _, err := tmp.Write(out); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	return k.ID(), os.Rename(tmp.Name(), path)
}

// addKeyText returns the key file text old with the key (id, secret) added
// as the active one.
func addKeyText(old []byte, id string, secret []byte) ([]byte, error) {
	var b bytes.Buffer
	newLine := id + " " + hex.EncodeToString(secret) + " active\n"
	if len(bytes.TrimSpace(old)) == 0 {
		b.WriteString(KeySetHeader + "\n")
		b.WriteString(newLine)
		return b.Bytes(), nil
	}
	ks, err := ParseKeyFile(old)
	if err != nil {
		return nil, err
	}
	if _, dup := ks.Lookup(id); dup {
		return nil, fmt.Errorf("watermark: key id %q is already in the key file", id)
	}
	rest, isSet := bytes.CutPrefix(old, []byte(KeySetHeader))
	if !isSet {
		// A single secret: keep it under its fingerprint id.
		secretOld := old
		if t := bytes.TrimSpace(old); len(t) >= 2*MinSecretBytes && isHex(t) {
			secretOld, _ = hex.DecodeString(string(t))
		}
		b.WriteString(KeySetHeader + "\n")
		fmt.Fprintf(&b, "%s %s\n", ks.Active().ID(), hex.EncodeToString(secretOld))
		b.WriteString(newLine)
		return b.Bytes(), nil
	}
	b.WriteString(KeySetHeader)
	lines := strings.Split(string(rest), "\n")
	for i, line := range lines {
		if i > 0 {
			b.WriteByte('\n')
		}
		t := strings.TrimSpace(line)
		if f := strings.Fields(t); t != "" && t[0] != '#' && len(f) == 3 && f[2] == "active" {
			line = f[0] + " " + f[1]
		}
		b.WriteString(line)
	}
	if !bytes.HasSuffix(b.Bytes(), []byte("\n")) {
		b.WriteByte('\n')
	}
	b.WriteString(newLine)
	return b.Bytes(), nil
}
