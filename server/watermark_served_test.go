package server

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/distillguard/distillguard/extproc/envoytest"
	"github.com/distillguard/distillguard/watermark"
)

// TestWatermarkServedRecord: with watermark.log_served the server logs one
// served record per marked response, under the session's id and the
// marking key, and the record weighs a suspect's text exactly as the
// responses the client got would (watermark.Sample.UseServed).
func TestWatermarkServedRecord(t *testing.T) {
	leakCheck(t)
	texts := texts20(heldOut(t, 100))
	dir := t.TempDir()
	wmFile := writeWatermarkKey(t, dir, "served-2026", 31)
	cfg := markedConfigWM(t, wmFile, ", log_served: true", "")
	key := cfg.Marks().Keys.Active()
	logs := &syncBuffer{}
	s := start(t, cfg, Options{Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	env := markingEnvoy(t, s, "203.0.113.21:40000")
	up := corpusUpstream{texts: texts}
	v := watermark.NewVerifier(watermark.DefaultLexicon())
	got := v.NewSample()
	sessions := map[string]bool{}
	for i := range texts {
		body := []byte(fmt.Sprintf(`{"model":"m","stream":true,"messages":[{"role":"user","content":"problem %d"}]}`, i))
		res, err := env.Do(context.Background(), &envoytest.Exchange{
			Path: "/v1/chat/completions", Body: body, Upstream: up,
			Header:          http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer sk-served-1"}},
			ResponseChunker: envoytest.Random(uint64(i), 4000, false),
		})
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != 200 || len(res.Violations) > 0 {
			t.Fatalf("text %d: status %d, violations %v", i, res.Status, res.Violations)
		}
		sessions[res.Metadata["distillguard"].GetFields()["session"].GetStringValue()] = true
		var out strings.Builder
		for _, ch := range sseChunks(t, res.Body) {
			if c := ch.Choices[0].Delta.Content; c != nil {
				out.WriteString(*c)
			}
		}
		got.Add([]byte(out.String()))
	}
	if len(sessions) != 1 {
		t.Fatalf("sessions %v, want one", sessions)
	}
	var session string
	for id := range sessions {
		session = id
	}
	// The stream's release logs the record: wait for every stream to end.
	deadline := time.Now().Add(20 * time.Second)
	for strings.Count(logs.String(), `"msg":"watermark served"`) < len(texts) {
		if time.Now().After(deadline) {
			t.Fatalf("%d served records logged, want %d", strings.Count(logs.String(), `"msg":"watermark served"`), len(texts))
		}
		time.Sleep(10 * time.Millisecond)
	}
	var digests []uint64
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if m["msg"] != "watermark served" {
			continue
		}
		if m["session"] != session || m["key_id"] != key.ID() || m["truncated"] != false {
			t.Errorf("record %s: want session %s, key %s", line, session, key.ID())
		}
		ds, err := watermark.ParseServedGroups(m["served_groups"].(string))
		if err != nil || len(ds) == 0 || float64(len(ds)) != m["groups"] {
			t.Fatalf("record %s: %d digests, %v", line, len(ds), err)
		}
		if strings.Contains(line, "problem") {
			t.Errorf("the record carries text: %s", line)
		}
		digests = append(digests, ds...)
	}
	_, metrics := get(t, "http://"+s.AdminAddr()+"/metrics")
	if want := fmt.Sprintf(`distillguard_watermark_served_records_total{key_id=%q,truncated="false"} %d`, key.ID(), len(texts)); !strings.Contains(metrics, want) {
		t.Errorf("/metrics has no %s", want)
	}
	// A suspect that learned from half of it, and wrote text of its own.
	suspect := func() *watermark.Sample {
		sm := v.NewSample()
		for i, tx := range texts {
			if i%2 == 0 {
				sm.Add([]byte(tx))
			}
		}
		sm.Add([]byte(strings.Join(heldOut(t, 130)[100:], "\n\n")))
		return sm
	}
	byText, byRecord := suspect(), suspect()
	byText.UseServed(got)
	if err := byRecord.UseServedRecord(key, digests); err != nil {
		t.Fatal(err)
	}
	rt, rr := byText.Score(key), byRecord.Score(key)
	if rt != rr || rr.ServedGroups == 0 || rr.ServedGroups >= byRecord.Groups() {
		t.Errorf("weighed by the client's text %+v\nby the served records %+v", rt, rr)
	}
}
