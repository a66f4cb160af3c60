package watermark

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// suspectTexts are varied answers: pseudo-words (contexts nobody has
// seen) before members of sets whose members are all in common use.
func suspectTexts(n int, seed uint64) []string {
	r := rand.New(rand.NewPCG(seed, 5))
	members := [][]string{{"kids", "children"}, {"big", "large"}, {"maybe", "perhaps"}, {"mom", "mother"}, {"dad", "father"}, {"jail", "prison"}}
	out := make([]string, n)
	for i := range out {
		var b strings.Builder
		for j := 0; j < 8; j++ {
			fmt.Fprintf(&b, "zo%dka ", r.IntN(3000))
			m := members[r.IntN(len(members))]
			b.WriteString(m[r.IntN(2)])
			b.WriteString(" ")
		}
		b.WriteString("end.")
		out[i] = b.String()
	}
	return out
}

// probeIndex reads "probe N" out of the request's last turn.
func probeIndex(t *testing.T, req apiRequest) int {
	i, err := strconv.Atoi(strings.TrimPrefix(req.lastText(), "probe "))
	if err != nil {
		t.Errorf("probe text %q", req.lastText())
		return -1
	}
	return i
}

// chatCompletion is an OpenAI chat.completion carrying text, with three
// top_logprobs alternatives per word when logprobs is set.
func chatCompletion(text string, logprobs bool) []byte {
	if !logprobs {
		return answerIn(APIChat, text, nil)
	}
	return answerIn(APIChat, text, wordAlternatives(text))
}

func writeProbes(t *testing.T, dir string, n int) string {
	t.Helper()
	var b bytes.Buffer
	for i := 0; i < n; i++ {
		line, _ := json.Marshal(map[string]string{"prompt": fmt.Sprintf("probe %d", i)})
		b.Write(append(line, '\n'))
	}
	p := filepath.Join(dir, "probes.jsonl")
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func writeKeyFile(t *testing.T, dir string, k *Key, secret []byte) string {
	t.Helper()
	p := filepath.Join(dir, "keys")
	if err := os.WriteFile(p, []byte(fmt.Sprintf("%x\n", secret)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestProbeRequest checks what a probe sends: the configured fields, the
// API key from the environment as a bearer token, extra headers, a
// {"prompt"} probe as one user message and a {"messages"} probe as
// written; and that asking for logprobs adds the logprobs report.
func TestProbeRequest(t *testing.T) {
	t.Setenv("DG_PROBE_TEST_KEY", "sk-test-123")
	var mu sync.Mutex
	var reqs []apiRequest
	var auth, extra []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req apiRequest
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s with Content-Type %q", r.Method, r.Header.Get("Content-Type"))
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			t.Error(err)
		}
		mu.Lock()
		reqs = append(reqs, req)
		auth = append(auth, r.Header.Get("Authorization"))
		extra = append(extra, r.Header.Get("X-Tenant"))
		mu.Unlock()
		w.Write(chatCompletion("maybe the kids are big", true))
	}))
	defer srv.Close()
	dir := t.TempDir()
	probes := filepath.Join(dir, "p.jsonl")
	os.WriteFile(probes, []byte(`{"prompt": "probe 0"}`+"\n\n"+
		`{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "probe 1"}]}`+"\n"), 0o644)
	secret := bytes.Repeat([]byte{7}, 32)
	key, _ := NewKey("k", secret)
	var stdout, stderr bytes.Buffer
	rc := RunProbe([]string{"-url", srv.URL, "-prompts", probes, "-o", filepath.Join(dir, "a.jsonl"), "-model", "m-1",
		"-max-tokens", "64", "-temperature", "0", "-top-logprobs", "5", "-api-key-env", "DG_PROBE_TEST_KEY",
		"-header", "X-Tenant: lab", "-concurrency", "1", "-key-file", writeKeyFile(t, dir, key, secret)}, &stdout, &stderr)
	if rc != 0 {
		t.Fatalf("exit %d: %s", rc, stderr.String())
	}
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2", len(reqs))
	}
	for i, r := range reqs {
		if r.Model != "m-1" || r.MaxTokens == nil || *r.MaxTokens != 64 || r.Temperature == nil || *r.Temperature != 0 ||
			string(r.Logprobs) != "true" || r.TopLogprobs == nil || *r.TopLogprobs != 5 || r.Stream == nil || *r.Stream {
			t.Errorf("request %d: %+v", i, r)
		}
		if auth[i] != "Bearer sk-test-123" || extra[i] != "lab" {
			t.Errorf("request %d headers: Authorization %q, X-Tenant %q", i, auth[i], extra[i])
		}
	}
	if len(reqs[0].Messages) != 1 || string(reqs[0].Messages[0]) != `{"content":"probe 0","role":"user"}` {
		t.Errorf("prompt probe sent as %s", reqs[0].Messages)
	}
	if len(reqs[1].Messages) != 2 || !strings.Contains(string(reqs[1].Messages[0]), `"be brief"`) {
		t.Errorf("messages probe sent as %s", reqs[1].Messages)
	}
	dec := json.NewDecoder(&stdout)
	var modes []string
	for {
		var rep struct{ Mode string }
		if err := dec.Decode(&rep); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		modes = append(modes, rep.Mode)
	}
	if strings.Join(modes, ",") != "text,logprobs" {
		t.Errorf("reports %v, want text then logprobs", modes)
	}

	// Without the optional fields, none is sent.
	reqs = nil
	rc = RunProbe([]string{"-url", srv.URL, "-prompts", probes, "-o", filepath.Join(dir, "b.jsonl")}, &stdout, &stderr)
	if rc != 0 {
		t.Fatalf("exit %d: %s", rc, stderr.String())
	}
	if len(reqs) != 2 {
		t.Fatalf("%d requests without options, want 2", len(reqs))
	}
	for i, r := range reqs {
		if r.Model != "" || r.MaxTokens != nil || r.Temperature != nil || r.Logprobs != nil || r.TopLogprobs != nil {
			t.Errorf("request %d without options: %+v", i, r)
		}
	}
}

func probeCfg(url string) ProbeConfig {
	return ProbeConfig{URL: url, Concurrency: 3, Timeout: 5 * time.Second, Retries: 3, Backoff: time.Millisecond,
		MaxBackoff: 5 * time.Millisecond, Temperature: -1}
}

func oneProbeSet(n int) []json.RawMessage {
	out := make([]json.RawMessage, n)
	for i := range out {
		out[i] = json.RawMessage(fmt.Sprintf(`[{"role":"user","content":"probe %d"}]`, i))
	}
	return out
}

// TestProbeRetries: 429 and 5xx are retried (Retry-After honoured), up
// to the configured retries; a 4xx is not.
func TestProbeRetries(t *testing.T) {
	for _, c := range []struct {
		name     string
		status   int
		failures int // failing attempts per probe before a 200
		retries  int
		wantErr  string
		attempts int // per probe
	}{
		{"429 then answered", 429, 2, 3, "", 3},
		{"503 then answered", 503, 1, 3, "", 2},
		{"503 beyond the retries", 503, 5, 1, "HTTP 503", 2},
		{"400 is not retried", 400, 5, 3, "HTTP 400", 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			var mu sync.Mutex
			tries := map[int]int{}
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var req apiRequest
				json.NewDecoder(r.Body).Decode(&req)
				i := probeIndex(t, req)
				mu.Lock()
				tries[i]++
				n := tries[i]
				mu.Unlock()
				if n <= c.failures {
					w.Header().Set("Retry-After", "0")
					http.Error(w, `{"error": {"message": "slow down", "type": "rate_limit"}}`, c.status)
					return
				}
				w.Write(chatCompletion(fmt.Sprintf("answer %d", i), false))
			}))
			defer srv.Close()
			cfg := probeCfg(srv.URL)
			cfg.Retries = c.retries
			cfg.Concurrency = 1
			answers, err := Probe(context.Background(), cfg, oneProbeSet(4))
			if c.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				for i, a := range answers {
					if !strings.Contains(string(a), fmt.Sprintf(`"answer %d"`, i)) {
						t.Errorf("answer %d: %s", i, a)
					}
				}
				for i := 0; i < 4; i++ {
					if tries[i] != c.attempts {
						t.Errorf("probe %d: %d attempts, want %d", i, tries[i], c.attempts)
					}
				}
				return
			}
			var pe *ProbeError
			if !errors.As(err, &pe) || !strings.Contains(err.Error(), c.wantErr) || !strings.Contains(err.Error(), "slow down") || pe.Index != 1 {
				t.Fatalf("error %v, want probe 1 with %q and the answer's message", err, c.wantErr)
			}
			if answers != nil {
				t.Error("answers returned with an error")
			}
			if tries[0] != c.attempts {
				t.Errorf("probe 0: %d attempts, want %d", tries[0], c.attempts)
			}
		})
	}
}

// TestProbeRefusesBadAnswers: an answer that is not a chat completion, has
// no choices, is too large or does not come in time fails its probe, and
// the command writes no answer file.
func TestProbeRefusesBadAnswers(t *testing.T) {
	big := bytes.Repeat([]byte("x"), maxProbeResponse+10)
	for _, c := range []struct {
		name    string
		handler http.HandlerFunc
		wantErr string
		timeout string
	}{
		{"not JSON", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>hello</html>")) }, "not a JSON chat completion", "10s"},
		{"no choices", func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`{"object":"chat.completion","choices":[]}`))
		}, "no choices", "10s"},
		{"too large", func(w http.ResponseWriter, r *http.Request) { w.Write(big) }, "over 16777216 bytes", "10s"},
		{"too slow", func(w http.ResponseWriter, r *http.Request) {
			// The server notices the client leaving only once the body
			// is read; the timer bounds the handler if it never does.
			io.Copy(io.Discard, r.Body)
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
		}, "deadline exceeded", "200ms"},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewServer(c.handler)
			defer srv.Close()
			dir := t.TempDir()
			out := filepath.Join(dir, "a.jsonl")
			var stdout, stderr bytes.Buffer
			rc := RunProbe([]string{"-url", srv.URL, "-prompts", writeProbes(t, dir, 3), "-o", out, "-timeout", c.timeout,
				"-retries", "0"}, &stdout, &stderr)
			if rc != 2 || !strings.Contains(stderr.String(), c.wantErr) || !strings.Contains(stderr.String(), "probe ") {
				t.Fatalf("exit %d, stderr %q; want 2 and %q", rc, stderr.String(), c.wantErr)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("answer file written after a failure: %v", err)
			}
			ents, _ := os.ReadDir(dir)
			if len(ents) != 1 {
				t.Errorf("left behind: %v", ents)
			}
		})
	}
}

// TestProbeStopsAtTheFirstFailure: one probe's permanent error cancels
// the probes not yet sent.
func TestProbeStopsAtTheFirstFailure(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		var req apiRequest
		json.NewDecoder(r.Body).Decode(&req)
		if probeIndex(t, req) == 5 {
			http.Error(w, "model not found", 404)
			return
		}
		w.Write(chatCompletion("fine", false))
	}))
	defer srv.Close()
	cfg := probeCfg(srv.URL)
	cfg.Concurrency = 1 // one request at a time: the count below is exact
	_, err := Probe(context.Background(), cfg, oneProbeSet(200))
	var pe *ProbeError
	if !errors.As(err, &pe) || pe.Index != 6 || pe.Status != 404 || !strings.Contains(err.Error(), "model not found") {
		t.Fatalf("error %v, want probe 6 (the sixth) with HTTP 404", err)
	}
	if n := calls.Load(); n != 6 {
		t.Errorf("%d requests sent, want 6: the rest cancelled after probe 6", n)
	}
}

func TestProbeUsageErrors(t *testing.T) {
	dir := t.TempDir()
	probes := writeProbes(t, dir, 2)
	feat := filepath.Join(dir, "f.jsonl")
	os.WriteFile(feat, []byte(`{"features": [1, 2]}`+"\n"), 0o644)
	empty := filepath.Join(dir, "e.jsonl")
	os.WriteFile(empty, []byte("\n\n"), 0o644)
	noRole := filepath.Join(dir, "r.jsonl")
	os.WriteFile(noRole, []byte(`{"messages": [{"role": "user", "content": "a"}, "b"]}`+"\n"), 0o644)
	t.Setenv("DG_PROBE_EMPTY", "")
	out := filepath.Join(dir, "o.jsonl")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-prompts", probes, "-o", out}, "usage:"},
		{[]string{"-url", "http://x", "-o", out}, "usage:"},
		{[]string{"-url", "http://x", "-prompts", probes}, "usage:"},
		{[]string{"-url", "ftp://x/y", "-prompts", probes, "-o", out}, "want an http:// or https:// URL"},
		{[]string{"-url", "http://x", "-prompts", probes, "-o", out, "-concurrency", "0"}, "-concurrency 0"},
		{[]string{"-url", "http://x", "-prompts", probes, "-o", out, "-top-logprobs", "21"}, "-top-logprobs 21"},
		{[]string{"-url", "http://x", "-prompts", probes, "-o", out, "-header", "no colon"}, "want \"Name: value\""},
		{[]string{"-url", "http://x", "-prompts", probes, "-o", out, "-api-key-env", "DG_PROBE_EMPTY"}, "empty or unset"},
		{[]string{"-url", "http://x", "-prompts", probes, "-o", out, "-decoys", "3"}, "-decoys applies with -key-file"},
		{[]string{"-url", "http://x", "-prompts", feat, "-o", out}, "record model"},
		{[]string{"-url", "http://x", "-prompts", empty, "-o", out}, "no probes"},
		{[]string{"-url", "http://x", "-prompts", noRole, "-o", out}, "message 2 is not an object with a \"role\""},
		{[]string{"-url", "http://x", "-prompts", filepath.Join(dir, "missing"), "-o", out}, "no such file"},
	} {
		var stdout, stderr bytes.Buffer
		if rc := RunProbe(c.args, &stdout, &stderr); rc != 2 || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", c.args, rc, stderr.String(), c.want)
		}
	}
}

// FuzzReadProbeMessages: any probe file is read or refused, never a
// panic; what is read is, per probe line, a non-empty JSON array of
// messages with a role, which the request body embeds as valid JSON.
func FuzzReadProbeMessages(f *testing.F) {
	f.Add([]byte("{\"prompt\":\"How many?\"}\n\n{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}\n"))
	f.Add([]byte("{\"features\":[1]}\n"))
	f.Add([]byte("{\"messages\":[]}\n"))
	f.Add([]byte("{\"prompt\":\"\\u00e9\\n\\\"x\\\"\"}"))
	cfg := probeCfg("http://x")
	f.Fuzz(func(t *testing.T, b []byte) {
		ps, err := ReadProbeMessages(bytes.NewReader(b))
		if err != nil {
			if ps != nil {
				t.Fatal("probes returned with an error")
			}
			return
		}
		if len(ps) == 0 || len(ps) > bytes.Count(b, []byte("\n"))+1 {
			t.Fatalf("%d probes from %d lines", len(ps), bytes.Count(b, []byte("\n"))+1)
		}
		for i, p := range ps {
			var msgs []json.RawMessage
			if err := json.Unmarshal(p, &msgs); err != nil || len(msgs) == 0 {
				t.Fatalf("probe %d: %s is not a non-empty array (%v)", i, p, err)
			}
			for _, m := range msgs {
				var msg struct{ Role *string }
				if json.Unmarshal(m, &msg) != nil || msg.Role == nil {
					t.Fatalf("probe %d: message %s has no role", i, m)
				}
			}
			body, err := cfg.body(p)
			if err != nil || !json.Valid(body) {
				t.Fatalf("probe %d: body %s (%v)", i, body, err)
			}
		}
	})
}
