package scoring

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"
)

func TestHistoryRecordsFlaggedSessions(t *testing.T) {
	for _, keep := range []int{0, 10} {
		e := newTestEngine(t, nil, Options{EvidencePromptBytes: keep})
		clean := newClient("sk-clean", "198.51.100.41:5000")
		dc := e.Score(clean.req(t0, "hello there, what time is it in tokyo"))
		c := newClient("sk-prober", "198.51.100.40:5000")
		d := run(e, c, t0, time.Second, 30, distinctPrompt, withLogitBias(300), withLogprobs(20), withMaxTokens(1))
		if d.Verdict == Allow {
			t.Fatalf("prober not flagged (score %.3f)", d.Score)
		}
		h, err := e.History(d.Session)
		if err != nil {
			t.Fatal(err)
		}
		if h.Requests != 30 || len(h.History) != historyLen || h.RecordedFrom == 0 || h.Dropped+uint32(len(h.History)) != 30-h.RecordedFrom+1 {
			t.Fatalf("history: %d requests, %d entries, dropped %d, recorded from %d", h.Requests, len(h.History), h.Dropped, h.RecordedFrom)
		}
		last := h.History[len(h.History)-1]
		if last.Verdict != d.Verdict.String() || len(last.Signals) == 0 || last.Score != round3(d.Score) {
			t.Fatalf("last entry %+v, decision %v %.3f", last, d.Verdict, d.Score)
		}
		for i := 1; i < len(h.History); i++ {
			if h.History[i].Time.Before(h.History[i-1].Time) {
				t.Fatal("history out of order")
			}
			if h.History[i].PromptHMAC == h.History[i-1].PromptHMAC {
				t.Fatal("distinct prompts got the same hash")
			}
		}
		for j := 1; j < len(last.Signals); j++ {
			if last.Signals[j].Contribution > last.Signals[j-1].Contribution {
				t.Fatalf("signals not strongest first: %+v", last.Signals)
			}
		}
		// The hash is the keyed HMAC of the prompt, not a plain digest.
		prompt := distinctPrompt(29)
		plain := sha256.Sum256([]byte(prompt))
		if last.PromptHMAC == hex.EncodeToString(plain[:16]) || len(last.PromptHMAC) != 32 {
			t.Fatalf("prompt hash %s is unkeyed", last.PromptHMAC)
		}
		m := hmac.New(sha256.New, mustKeys(t).derive("evidence-prompt"))
		m.Write([]byte(prompt))
		if want := hex.EncodeToString(m.Sum(nil)[:16]); last.PromptHMAC != want {
			t.Fatalf("prompt hash %s, want %s", last.PromptHMAC, want)
		}
		if keep == 0 && last.Prompt != "" || keep > 0 && (last.Prompt != cutUTF8(prompt, keep) || last.Prompt == "") {
			t.Fatalf("kept prompt %q with EvidencePromptBytes %d", last.Prompt, keep)
		}
		// A clean session keeps no history.
		ch, err := e.History(dc.Session)
		if err != nil || len(ch.History) != 0 || ch.Requests != 1 {
			t.Fatalf("clean session history %+v, %v", ch, err)
		}
		if _, err := e.History(strings.Repeat("0", 32)); err == nil {
			t.Fatal("unknown session has a history")
		}
	}
}

func mustKeys(t *testing.T) keyMaterial {
	k, err := newKeyMaterial("test-secret-test-secret-test-secret", nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestCutUTF8(t *testing.T) {
	for _, c := range []struct {
		s    string
		n    int
		want string
	}{{"héllo", 2, "h"}, {"héllo", 3, "hé"}, {"abc", 5, "abc"}, {"日本", 4, "日"}} {
		if got := cutUTF8(c.s, c.n); got != c.want {
			t.Errorf("cutUTF8(%q, %d) = %q", c.s, c.n, got)
		}
	}
}
