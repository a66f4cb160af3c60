package lab

import (
	"context"
	"strings"
	"testing"

	"github.com/distillguard/distillguard/internal/corpus/corpustest"
	"github.com/distillguard/distillguard/internal/redisproc"
)

// TestReplicatedReplay replays a small labelled week once through one
// process and once over three servers in replicated mode sharing a real
// redis-server, round-robin per request, and requires the same outcome for
// every family.
func TestReplicatedReplay(t *testing.T) {
	dir := corpustest.Require(t)
	srv := redisproc.Require(t, redisproc.Options{})
	p := DetectionReplicasParams{
		Scale: 0.15, CorpusDir: dir, Replicas: []int{1, 3}, RedisAddr: srv.Addr(), Variant: 1,
		Families: []string{"benign-chat", "benign-persona", "attack-distributed", "attack-slowlow", "attack-adaptive", "benign-batch"},
	}
	sec, err := RunDetectionReplicas(context.Background(), 5, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(sec.Tables) != 1 || len(sec.Tables[0].Rows) != len(p.Families) {
		t.Fatalf("want one row per family, got %+v", sec.Tables)
	}
	flagged := false
	for _, row := range sec.Tables[0].Rows {
		// family, kind, accounts, flagged 1, median 1, flagged 3, median 3
		if row[3] != row[5] {
			t.Errorf("%s: flagged %s with one process, %s with three replicas", row[0], row[3], row[5])
		}
		if row[1] == "attack" && row[5] != "0.0%" {
			flagged = true
		}
	}
	if !flagged {
		t.Error("no attack family flagged: the replay tests nothing")
	}
	if !strings.Contains(strings.Join(sec.Findings, " "), "within the targets") {
		t.Errorf("findings: %v", sec.Findings)
	}
	// The replicas wrote their sessions and the shared log to Redis.
	out, err := srv.CLI("--raw", "DBSIZE")
	if err != nil || strings.TrimSpace(out) == "0" {
		t.Fatalf("nothing in Redis after the replicated replay: %q %v", out, err)
	}
}
