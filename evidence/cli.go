package evidence

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// maxExportBytes bounds an export read from a server or a file: the
// history ring keeps it to kilobytes, prompts included.
const maxExportBytes = 8 << 20

// Run is the command `distillguard evidence export|verify`:
//
//	distillguard evidence export -url http://127.0.0.1:9090 -token-file F -session ID [-o FILE]
//	distillguard evidence verify (-key FILE | -public-key KEY) FILE...
//
// export fetches a session's signed export from a running server's admin
// API (GET /v1/sessions/{id}/evidence, bearer admin.token), checks its
// signature and writes it unchanged. verify checks export files against
// the operator's key: -key is evidence.key_file (the public key is
// derived from it), -public-key the public key in base64 or hex (what the
// operator hands a third party). Exit status: 0 when everything verified,
// 1 when a file did not, 2 on a usage or input error.
func Run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: distillguard evidence export -url URL -token-file F -session ID [-o FILE]\n       distillguard evidence verify (-key FILE | -public-key KEY) FILE...")
		return 2
	}
	switch args[0] {
	case "export":
		return runExport(args[1:], stdout, stderr)
	case "verify":
		return runVerify(args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "distillguard evidence: unknown command %q (export, verify)\n", args[0])
	return 2
}

func runExport(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("evidence export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	base := fs.String("url", "http://127.0.0.1:9090", "admin API base URL of the running server")
	token := fs.String("token", "", "admin.token (prefer -token-file: arguments are visible to other users)")
	tokenFile := fs.String("token-file", "", "file holding admin.token")
	session := fs.String("session", "", "session id (as the admin API lists them)")
	out := fs.String("o", "", "write the export here (default: standard output)")
	timeout := fs.Duration("timeout", 30*time.Second, "request timeout")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *session == "" || fs.NArg() != 0 {
		fmt.Fprintln(stderr, "distillguard evidence export: -session is required, and no arguments")
		return 2
	}
	tok := *token
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			fmt.Fprintf(stderr, "distillguard evidence export: %v\n", err)
			return 2
		}
		tok = strings.TrimSpace(string(b))
	}
	u, err := url.Parse(strings.TrimSuffix(*base, "/") + "/v1/sessions/" + url.PathEscape(*session) + "/evidence")
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		fmt.Fprintf(stderr, "distillguard evidence export: bad -url %q\n", *base)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		fmt.Fprintf(stderr, "distillguard evidence export: %v\n", err)
		return 2
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "distillguard evidence export: %v\n", err)
		return 2
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxExportBytes+1))
	if err != nil || len(body) > maxExportBytes {
		fmt.Fprintf(stderr, "distillguard evidence export: reading the answer: %v\n", err)
		return 2
	}
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "distillguard evidence export: %s: %s\n", resp.Status, bytes.TrimSpace(body))
		return 2
	}
	_, sig, err := Verify(body, nil)
	if err != nil {
		fmt.Fprintf(stderr, "distillguard evidence export: the server's answer does not verify: %v\n", err)
		return 1
	}
	if *out == "" {
		_, _ = stdout.Write(body)
	} else if err := os.WriteFile(*out, body, 0o600); err != nil {
		fmt.Fprintf(stderr, "distillguard evidence export: %v\n", err)
		return 2
	}
	fmt.Fprintf(stderr, "export of session %s signed by key %s\n", *session, sig.KeyID)
	return 0
}

func runVerify(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("evidence verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyFile := fs.String("key", "", "evidence.key_file of the server that signed")
	pubArg := fs.String("public-key", "", "the signer's public key, base64 or hex")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if (*keyFile == "") == (*pubArg == "") || fs.NArg() == 0 {
		fmt.Fprintln(stderr, "distillguard evidence verify: give exactly one of -key and -public-key, and one or more files")
		return 2
	}
	var pub ed25519.PublicKey
	if *keyFile != "" {
		k, err := LoadKey(*keyFile)
		if err != nil {
			fmt.Fprintf(stderr, "distillguard evidence verify: %v\n", err)
			return 2
		}
		pub = k.Public()
	} else {
		p, err := parsePublic(*pubArg)
		if err != nil {
			fmt.Fprintf(stderr, "distillguard evidence verify: %v\n", err)
			return 2
		}
		pub = p
	}
	status := 0
	for _, name := range fs.Args() {
		b, err := readBounded(name)
		if err != nil {
			fmt.Fprintf(stderr, "distillguard evidence verify: %v\n", err)
			return 2
		}
		ex, sig, err := Verify(b, pub)
		if err != nil {
			fmt.Fprintf(stdout, "%s: FAILED: %v\n", name, err)
			status = 1
			continue
		}
		wm := "none"
		if w := ex.Watermark; w != nil {
			wm = "key " + w.KeyID
			if w.Period != nil {
				wm += fmt.Sprintf(", marked %s to %s", w.Period.From.Format(time.RFC3339), w.Period.To.Format(time.RFC3339))
			}
			if w.MaxPromptBytes > 0 {
				wm += fmt.Sprintf(", logprob mark keyed on prompts cut to %d bytes", w.MaxPromptBytes)
			}
			if w.ServedRecords {
				wm += ", served records logged"
			}
		}
		fmt.Fprintf(stdout, "%s: OK: signed by %s at %s; session %s, verdict %s, %d requests, %d history entries; watermark %s; config %s\n",
			name, sig.KeyID, ex.Generated.Format(time.RFC3339), ex.Session.ID, ex.Session.Verdict, ex.Session.Requests, len(ex.Session.History), wm, ex.ConfigFingerprint)
	}
	return status
}

func readBounded(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxExportBytes+1))
	if err == nil && len(b) > maxExportBytes {
		err = fmt.Errorf("%s: larger than %d bytes: not an export", name, maxExportBytes)
	}
	return b, err
}

// parsePublic reads a public key in base64 or hex.
func parsePublic(s string) (ed25519.PublicKey, error) {
	s = strings.TrimSpace(s)
	if b, err := hex.DecodeString(s); err == nil && len(b) == ed25519.PublicKeySize {
		return b, nil
	}
	if b, err := base64.StdEncoding.DecodeString(s); err == nil && len(b) == ed25519.PublicKeySize {
		return b, nil
	}
	return nil, errors.New("-public-key: not a 32-byte key in hex or base64")
}
