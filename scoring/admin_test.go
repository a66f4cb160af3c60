package scoring

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func adminCall(t *testing.T, h http.Handler, method, path, token string) (int, map[string]any) {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	body, _ := io.ReadAll(rec.Body)
	var out map[string]any
	if len(body) > 0 && rec.Code != http.StatusMethodNotAllowed {
		if err := json.Unmarshal(body, &out); err != nil {
			t.Fatalf("%s %s: body is not JSON: %s", method, path, body)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%s %s: content type %q", method, path, ct)
		}
	}
	return rec.Code, out
}

func TestAdminAPI(t *testing.T) {
	e := newTestEngine(t, nil)
	// Five flagged probers in one block, one quiet user.
	var probeIDs []string
	for a := 0; a < 5; a++ {
		c := newClient(fmt.Sprintf("sk-admin-probe-%d", a), fmt.Sprintf("185.220.101.%d:5000", a+1))
		probeIDs = append(probeIDs, run(e, c, t0, time.Second, 10, distinctPrompt, withLogitBias(300), withLogprobs(20), withMaxTokens(1)).Session)
	}
	quiet := run(e, newClient("sk-admin-quiet", "93.184.216.1:5000"), t0, time.Minute, 3, distinctPrompt).Session

	h := e.AdminHandler("s3cret")

	code, body := adminCall(t, h, "GET", "/v1/sessions?top=3", "")
	if code != 200 {
		t.Fatalf("list: %d %v", code, body)
	}
	list := body["sessions"].([]any)
	if len(list) != 3 {
		t.Fatalf("top=3 returned %d sessions", len(list))
	}
	first := list[0].(map[string]any)
	if first["verdict"] != "block" || len(first["top_signals"].([]any)) == 0 {
		t.Fatalf("riskiest session %v", first)
	}
	for _, s := range list {
		if s.(map[string]any)["id"] == quiet {
			t.Fatal("quiet session listed among the riskiest")
		}
	}

	code, body = adminCall(t, h, "GET", "/v1/sessions/"+probeIDs[0], "")
	if code != 200 || body["verdict"] != "block" || body["requests"].(float64) != 10 || body["quarantine_until"] == nil {
		t.Fatalf("get: %d %v", code, body)
	}
	sigs := body["signals"].([]any)
	if sigs[0].(map[string]any)["name"] != "logit_bias" {
		t.Fatalf("top signal %v, want logit_bias", sigs[0])
	}

	code, body = adminCall(t, h, "GET", "/v1/campaigns", "")
	if code != 200 {
		t.Fatalf("campaigns: %d", code)
	}
	found := false
	for _, c := range body["campaigns"].([]any) {
		c := c.(map[string]any)
		if c["link"] == "ip_block" && c["label"] == "185.220.101.0/24" && c["flagged"].(float64) >= 4 && len(c["recent_flagged_members"].([]any)) == 5 {
			found = true
		}
	}
	if !found {
		t.Fatalf("the probers' /24 is not listed as a campaign: %v", body)
	}

	// Errors and authorization.
	cases := []struct {
		method, path, token string
		want                int
	}{
		{"GET", "/v1/sessions?top=0", "", 400},
		{"GET", "/v1/sessions?top=x", "", 400},
		{"GET", "/v1/sessions/nothex", "", 400},
		{"GET", "/v1/sessions/" + strings.Repeat("0", 32), "", 404},
		{"POST", "/v1/sessions/" + probeIDs[1] + "/reset", "", 401},
		{"POST", "/v1/sessions/" + probeIDs[1] + "/reset", "wrong", 401},
		{"DELETE", "/v1/sessions/" + probeIDs[1], "s3cret", 405},
		{"POST", "/v1/sessions/" + probeIDs[1] + "/reset", "s3cret", 200},
		{"GET", "/v1/sessions/" + probeIDs[1], "", 404},
	}
	for _, c := range cases {
		if code, body := adminCall(t, h, c.method, c.path, c.token); code != c.want {
			t.Errorf("%s %s: %d %v, want %d", c.method, c.path, code, body, c.want)
		}
	}
	// After the reset the session starts clean: no quarantine.
	c := newClient("sk-admin-probe-1", "185.220.101.2:5000")
	c.ua = "curl/8.5.0"
	if d := e.Score(c.req(t0.Add(time.Minute), "hello")); d.Verdict == Block {
		t.Errorf("reset session still blocked: %+v", d)
	}

	// An empty token disables mutating calls.
	if code, _ := adminCall(t, e.AdminHandler(""), "POST", "/v1/sessions/"+probeIDs[2]+"/reset", ""); code != 403 {
		t.Errorf("reset without configured token: %d, want 403", code)
	}
	if code, _ := adminCall(t, e.AdminHandler(""), "POST", "/v1/sessions/"+probeIDs[2]+"/reset", "anything"); code != 403 {
		t.Errorf("reset with a token while disabled: %d, want 403", code)
	}
}
