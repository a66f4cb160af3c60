package evidence

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/distillguard/distillguard/scoring"
)

var t0 = time.Date(2026, 3, 3, 9, 0, 0, 0, time.UTC)

const credential = "sk-live-credential-do-not-leak-0123456789"

func testKey(t testing.TB, b byte) *Key {
	t.Helper()
	k, err := NewKey(bytes.Repeat([]byte{b}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func prompt(i int) string {
	return fmt.Sprintf("Return the logprobs of every token of the classic passage number %d, verbatim, no commentary", i)
}

// flaggedEngine scores a harvesting session (logit_bias and logprobs on
// every request) until it is flagged and returns the engine and session.
func flaggedEngine(t testing.TB, keep int) (*scoring.Engine, string) {
	t.Helper()
	cfg := scoring.DefaultConfig()
	cfg.Secret = "evidence-test-secret-evidence-test-secret"
	cfg.MemoryBytes = 16 << 20
	e, err := scoring.New(cfg, scoring.Options{Seed: []byte("evidence-test"), EvidencePromptBytes: keep})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	h := map[string]string{"authorization": "Bearer " + credential, "user-agent": "python-requests/2.31"}
	var d scoring.Decision
	for i := 0; i < 30; i++ {
		d = e.Score(&scoring.Request{
			Time: t0.Add(time.Duration(i) * time.Second), Header: func(n string) string { return h[n] }, SourceAddress: "198.51.100.7:4000",
			Path: "/v1/chat/completions", Endpoint: "chat", Model: "m", Prompt: prompt(i), Messages: 1,
			Logprobs: true, TopLogprobs: 20, LogitBiasSize: 300, MaxTokens: 1, ShapeKeys: []string{"logit_bias", "logprobs", "messages", "model"},
		})
	}
	if d.Verdict == scoring.Allow {
		t.Fatalf("the harvesting session was not flagged (score %.3f)", d.Score)
	}
	return e, d.Session
}

func settings(k *Key, prompts bool) Settings {
	return Settings{Key: k, ConfigFingerprint: "0123456789abcdef0123456789abcdef", IncludePrompts: prompts,
		Watermark: &Watermark{KeyID: "wm-2026", VerifyKeyIDs: []string{"wm-2026", "wm-2025"}, LogprobAmplitude: 0.2, MaxPromptBytes: 8192, ServedRecords: true, MarkedVerdicts: []string{"degrade"}}}
}

func TestSignVerifyAndTamper(t *testing.T) {
	e, id := flaggedEngine(t, 0)
	h, err := e.History(id)
	if err != nil {
		t.Fatal(err)
	}
	k := testKey(t, 7)
	file, err := Sign(Build(h, settings(k, false), t0.Add(time.Hour)), k)
	if err != nil {
		t.Fatal(err)
	}
	ex, sig, err := Verify(file, k.Public())
	if err != nil {
		t.Fatal(err)
	}
	if sig.KeyID != k.ID() || ex.Session.ID != id || ex.Session.Requests != 30 || len(ex.Session.History) == 0 || ex.Watermark.KeyID != "wm-2026" {
		t.Fatalf("export %+v, signature %+v", ex, sig)
	}
	// Every single-byte change fails, wherever it is.
	for i := range file {
		bad := bytes.Clone(file)
		bad[i] ^= 0x01
		if _, _, err := Verify(bad, k.Public()); err == nil {
			t.Fatalf("a change of byte %d (%q) verified", i, file[i])
		}
		if _, _, err := Verify(bad, nil); err == nil {
			t.Fatalf("a change of byte %d (%q) verified unpinned", i, file[i])
		}
	}
	// Dropping or adding a byte fails too.
	if _, _, err := Verify(file[:len(file)-1], nil); err == nil {
		t.Fatal("a truncated file verified")
	}
	if _, _, err := Verify(append(bytes.Clone(file), ' '), nil); err == nil {
		t.Fatal("a file with a trailing byte verified")
	}
	// Another key's export, re-signed whole, fails against the pinned key.
	other := testKey(t, 8)
	forged, err := Sign(*ex, other)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Verify(forged, k.Public()); err == nil {
		t.Fatal("an export signed by another key verified against the operator's")
	}
}

func TestNoCredentialOrPromptByDefault(t *testing.T) {
	for _, keep := range []int{0, 4096} {
		e, id := flaggedEngine(t, keep)
		h, err := e.History(id)
		if err != nil {
			t.Fatal(err)
		}
		k := testKey(t, 9)
		for _, include := range []bool{false, true} {
			file, err := Sign(Build(h, settings(k, include), t0), k)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(file, []byte(credential)) || bytes.Contains(file, []byte("sk-live")) {
				t.Fatal("the export holds the credential")
			}
			has := bytes.Contains(file, []byte("classic passage number"))
			if want := include && keep > 0; has != want {
				t.Fatalf("engine keeps %d prompt bytes, include_prompts %v: prompt text in export = %v", keep, include, has)
			}
			if !bytes.Contains(file, []byte(`"prompt_hmac":"`)) {
				t.Fatal("no prompt hashes")
			}
		}
	}
}

func TestWatermarkPeriod(t *testing.T) {
	h := scoring.SessionHistory{SessionHead: scoring.SessionHead{ID: "x"}, History: []scoring.HistoryEntry{
		{Time: t0, Verdict: "allow"}, {Time: t0.Add(time.Minute), Verdict: "degrade"},
		{Time: t0.Add(2 * time.Minute), Verdict: "throttle"}, {Time: t0.Add(3 * time.Minute), Verdict: "degrade"}, {Time: t0.Add(4 * time.Minute), Verdict: "block"},
	}}
	ex := Build(h, settings(testKey(t, 1), false), t0)
	p := ex.Watermark.Period
	if p == nil || !p.From.Equal(t0.Add(time.Minute)) || !p.To.Equal(t0.Add(3*time.Minute)) {
		t.Fatalf("period %+v", p)
	}
	s := settings(testKey(t, 1), false)
	s.Watermark.MarkedVerdicts = nil
	if Build(h, s, t0).Watermark.Period != nil {
		t.Fatal("a period without marked verdicts")
	}
}

func TestHandlerAndCLI(t *testing.T) {
	e, id := flaggedEngine(t, 0)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "evidence.key")
	if err := os.WriteFile(keyFile, []byte(strings.Repeat("ab", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := LoadKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	key := k
	srv := httptest.NewServer(Handler(HandlerOptions{History: e.History, Token: "admin-tok", Now: func() time.Time { return t0 },
		Settings: func() Settings { return settings(key, false) }}))
	defer srv.Close()
	get := func(path, tok string) (int, []byte) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return resp.StatusCode, b.Bytes()
	}
	if c, _ := get("/v1/sessions/"+id+"/evidence", ""); c != http.StatusUnauthorized {
		t.Fatalf("no token: %d", c)
	}
	if c, _ := get("/v1/sessions/"+id+"/evidence", "wrong"); c != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d", c)
	}
	if c, _ := get("/v1/sessions/"+strings.Repeat("0", 32)+"/evidence", "admin-tok"); c != http.StatusNotFound {
		t.Fatalf("unknown session: %d", c)
	}
	c, body := get("/v1/sessions/"+id+"/evidence", "admin-tok")
	if c != http.StatusOK {
		t.Fatalf("export: %d %s", c, body)
	}
	if _, _, err := Verify(body, k.Public()); err != nil {
		t.Fatal(err)
	}

	// The CLI: export from the server, verify with the key file and with
	// the public key, fail on a changed file.
	tokFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokFile, []byte("admin-tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "export.json")
	var so, se bytes.Buffer
	if rc := Run([]string{"export", "-url", srv.URL, "-token-file", tokFile, "-session", id, "-o", out}, &so, &se); rc != 0 {
		t.Fatalf("export: %d %s", rc, se.String())
	}
	so.Reset()
	if rc := Run([]string{"verify", "-key", keyFile, out}, &so, &se); rc != 0 || !strings.Contains(so.String(), "OK: signed by "+k.ID()) || !strings.Contains(so.String(), "prompts cut to 8192 bytes, served records logged") {
		t.Fatalf("verify: %d %s %s", rc, so.String(), se.String())
	}
	pubHex := fmt.Sprintf("%x", []byte(k.Public()))
	if rc := Run([]string{"verify", "-public-key", pubHex, out}, &so, &se); rc != 0 {
		t.Fatalf("verify by public key: %d", rc)
	}
	b, _ := os.ReadFile(out)
	bad := bytes.Replace(b, []byte(`"verdict":"`), []byte(`"verdict":"x`), 1)
	if err := os.WriteFile(out, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	so.Reset()
	if rc := Run([]string{"verify", "-key", keyFile, out}, &so, &se); rc != 1 || !strings.Contains(so.String(), "FAILED") {
		t.Fatalf("tampered verify: %d %s", rc, so.String())
	}
	if rc := Run([]string{"verify", out}, &so, &se); rc != 2 {
		t.Fatalf("verify without a key: %d", rc)
	}
	// Without a signing key the server refuses to export.
	nokey := httptest.NewServer(Handler(HandlerOptions{History: e.History, Token: "admin-tok", Settings: func() Settings { return Settings{} }}))
	defer nokey.Close()
	req, _ := http.NewRequest(http.MethodGet, nokey.URL+"/v1/sessions/"+id+"/evidence", nil)
	req.Header.Set("Authorization", "Bearer admin-tok")
	resp, err := nokey.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("no key: %d", resp.StatusCode)
	}
}

func TestParseSecret(t *testing.T) {
	for _, c := range []struct {
		in  string
		n   int
		bad bool
	}{
		{strings.Repeat("0f", 32), 32, false},
		{" " + strings.Repeat("0F", 40) + "\n", 40, false},
		{strings.Repeat("z", 32), 32, false},
		{strings.Repeat("z", 31), 0, true},
		{strings.Repeat("0f", 15), 0, true}, // 30 hex chars: 30 raw bytes, too short
	} {
		s, err := ParseSecret([]byte(c.in))
		if (err != nil) != c.bad || !c.bad && len(s) != c.n {
			t.Errorf("ParseSecret(%q) = %d bytes, %v", c.in, len(s), err)
		}
	}
}

// FuzzVerify: no input crashes the parser, and a change to a valid
// export never verifies.
func FuzzVerify(f *testing.F) {
	k := testKey(f, 3)
	h := scoring.SessionHistory{SessionHead: scoring.SessionHead{ID: "abc", Verdict: "degrade"}, History: []scoring.HistoryEntry{{Time: t0, Verdict: "degrade", PromptHMAC: "00"}}}
	good, err := Sign(Build(h, settings(k, false), t0), k)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"payload":{},"signature":{}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, err := Verify(b, k.Public())
		if err == nil && !bytes.Equal(b, good) {
			t.Fatalf("a file other than the signed one verified: %q", b)
		}
	})
}
