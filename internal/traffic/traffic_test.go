package traffic

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/distillguard/distillguard/internal/corpus"
	"github.com/distillguard/distillguard/internal/corpus/corpustest"
)

// loadCorpus returns the corpus or skips (fails under CI=true) when the
// corpus directory is absent.
func loadCorpus(t testing.TB) *Corpus {
	t.Helper()
	c, err := LoadCorpus(corpustest.Require(t))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestLoadCorpusMissingDir(t *testing.T) {
	_, err := LoadCorpus(filepath.Join(t.TempDir(), "nope"))
	if !errors.Is(err, ErrNoCorpus) {
		t.Fatalf("err = %v, want ErrNoCorpus", err)
	}
	if !strings.Contains(err.Error(), "DISTILLGUARD_CORPUS") {
		t.Errorf("error should say how to fix it: %v", err)
	}
}

func TestLoadCorpusMalformedLine(t *testing.T) {
	dir := t.TempDir()
	for _, f := range corpus.Files() {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("{\"turns\": [\"hi\"]}\nnot json\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, err := LoadCorpus(dir)
	if err == nil || errors.Is(err, ErrNoCorpus) || !strings.Contains(err.Error(), ":2:") {
		t.Fatalf("err = %v, want a parse error naming line 2", err)
	}
}

func TestGenerateDeterministic(t *testing.T) {
	c := loadCorpus(t)
	o := Options{Seed: 7, Scale: 0.1}
	a, err := GenerateFrom(c, o)
	if err != nil {
		t.Fatal(err)
	}
	b, err := GenerateFrom(c, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != len(b) {
		t.Fatalf("lengths differ: %d vs %d", len(a), len(b))
	}
	for i := range a {
		ja, _ := json.Marshal(a[i])
		jb, _ := json.Marshal(b[i])
		if !bytes.Equal(ja, jb) {
			t.Fatalf("request %d differs:\n%s\n%s", i, ja, jb)
		}
	}
	o.Seed = 8
	d, err := GenerateFrom(c, o)
	if err != nil {
		t.Fatal(err)
	}
	same := len(d) == len(a)
	for i := 0; same && i < len(a); i++ {
		same = bytes.Equal(a[i].Body, d[i].Body) && a[i].Time.Equal(d[i].Time)
	}
	if same {
		t.Fatal("seeds 7 and 8 generated identical traffic")
	}
}

func TestGenerateProperties(t *testing.T) {
	c := loadCorpus(t)
	reqs, err := GenerateFrom(c, Options{Seed: 1, Scale: 0.2})
	if err != nil {
		t.Fatal(err)
	}
	start := DefaultStart()
	perFamily := map[string]int{}
	accounts := map[string]map[string]bool{}
	nextIndex := map[string]int{}
	paths := map[string]int{}
	for i, r := range reqs {
		if r.Seq != i {
			t.Fatalf("request %d has Seq %d", i, r.Seq)
		}
		if i > 0 && r.Time.Before(reqs[i-1].Time) {
			t.Fatalf("request %d at %v is before request %d at %v", i, r.Time, i-1, reqs[i-1].Time)
		}
		if r.Time.Before(start) || r.Time.After(start.Add(Horizon+2*day)) {
			t.Fatalf("request %d time %v outside the simulated period", i, r.Time)
		}
		if !json.Valid(r.Body) {
			t.Fatalf("request %d (%s) body is not valid JSON: %s", i, r.Family, r.Body)
		}
		var obj map[string]any
		if err := json.Unmarshal(r.Body, &obj); err != nil || obj["model"] == nil {
			t.Fatalf("request %d body is not an OpenAI request object: %s", i, r.Body)
		}
		if r.Header["authorization"] == "" && r.Header["x-api-key"] == "" {
			t.Fatalf("request %d has no credential header", i)
		}
		if r.Header["user-agent"] == "" || r.SourceAddress == "" || r.Method != "POST" {
			t.Fatalf("request %d misses user-agent, address or method: %+v", i, r)
		}
		if r.Index != nextIndex[r.Account] {
			t.Fatalf("account %s: request index %d, want %d (per-account order broken)", r.Account, r.Index, nextIndex[r.Account])
		}
		nextIndex[r.Account]++
		if !strings.HasPrefix(r.Account, r.Family+"/") {
			t.Fatalf("account %q not labelled with its family %q", r.Account, r.Family)
		}
		perFamily[r.Family]++
		if accounts[r.Family] == nil {
			accounts[r.Family] = map[string]bool{}
		}
		accounts[r.Family][r.Account] = true
		paths[r.Path]++
	}
	for _, f := range Families() {
		if perFamily[f.Name] == 0 {
			t.Errorf("family %s generated no request", f.Name)
		}
		attack := strings.HasPrefix(f.Name, "attack-")
		if attack != f.Attack {
			t.Errorf("family %s: Attack=%v disagrees with its name", f.Name, f.Attack)
		}
	}
	for _, p := range []string{PathChat, PathCompletions, PathEmbeddings} {
		if paths[p] == 0 {
			t.Errorf("no request on %s", p)
		}
	}
	if n := len(accounts["attack-distributed"]); n < 20 {
		t.Errorf("distributed campaign has %d accounts, want >= 20", n)
	}
}

func TestReasoningLanguageCoverage(t *testing.T) {
	c := loadCorpus(t)
	reqs, err := GenerateFrom(c, Options{Seed: 3, Scale: 0.1, Families: []string{"attack-reasoning"}})
	if err != nil {
		t.Fatal(err)
	}
	langs := map[string]int{}
	for _, r := range reqs {
		if r.Family != "attack-reasoning" {
			t.Fatalf("family filter leaked %s", r.Family)
		}
		if r.Language == "" {
			t.Fatalf("reasoning request %d has no language label", r.Seq)
		}
		langs[r.Language]++
	}
	if len(langs) < 8 {
		t.Fatalf("reasoning family covers %d languages (%v), want >= 8", len(langs), langs)
	}
	for _, l := range ReasoningLanguages() {
		if langs[l] == 0 {
			t.Errorf("language %s never used", l)
		}
	}
}

func TestDistributedCampaignSharesRange(t *testing.T) {
	c := loadCorpus(t)
	reqs, err := GenerateFrom(c, Options{Seed: 4, Scale: 0.2, Families: []string{"attack-distributed"}})
	if err != nil {
		t.Fatal(err)
	}
	blocks := map[string]bool{}
	perAccount := map[string]int{}
	for _, r := range reqs {
		ip := r.SourceAddress[:strings.LastIndexByte(r.SourceAddress, ':')]
		blocks[ip[:strings.LastIndexByte(ip, '.')]] = true
		perAccount[r.Account]++
	}
	if len(blocks) > len(campaignBlocks) {
		t.Fatalf("campaign used %d /24 blocks, want <= %d", len(blocks), len(campaignBlocks))
	}
	for a, n := range perAccount {
		if n < 3 || n > 10 {
			t.Fatalf("account %s sent %d requests, want 3..10", a, n)
		}
	}
}

func TestScaleAndOptionErrors(t *testing.T) {
	c := loadCorpus(t)
	if _, err := GenerateFrom(c, Options{Scale: -1}); err == nil {
		t.Error("negative scale accepted")
	}
	if _, err := GenerateFrom(c, Options{Families: []string{"nope"}}); err == nil {
		t.Error("unknown family accepted")
	}
	small, err := GenerateFrom(c, Options{Seed: 1, Scale: 0.05, Families: []string{"benign-chat"}})
	if err != nil {
		t.Fatal(err)
	}
	big, err := GenerateFrom(c, Options{Seed: 1, Scale: 0.2, Families: []string{"benign-chat"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(big) <= 2*len(small) {
		t.Fatalf("scale 0.2 gave %d requests, scale 0.05 gave %d: Scale does not multiply", len(big), len(small))
	}
}

func TestChatCarriesGrowingConversation(t *testing.T) {
	c := loadCorpus(t)
	reqs, err := GenerateFrom(c, Options{Seed: 5, Scale: 0.05, Families: []string{"benign-chat"}})
	if err != nil {
		t.Fatal(err)
	}
	last := map[string]int{} // account/conversation -> messages
	multi := 0
	for _, r := range reqs {
		var b struct {
			Messages []struct{ Role string } `json:"messages"`
		}
		if err := json.Unmarshal(r.Body, &b); err != nil {
			t.Fatal(err)
		}
		if b.Messages[len(b.Messages)-1].Role != "user" {
			t.Fatalf("last message is %q, want user", b.Messages[len(b.Messages)-1].Role)
		}
		k := r.Account + "#" + string(rune('0'+r.Conversation))
		if prev, ok := last[k]; ok {
			if len(b.Messages) != prev+2 {
				t.Fatalf("%s: %d messages after %d, want +2", k, len(b.Messages), prev)
			}
			multi++
		}
		last[k] = len(b.Messages)
	}
	if multi == 0 {
		t.Fatal("no multi-turn conversation generated")
	}
}

func TestSlowLowSpansDays(t *testing.T) {
	c := loadCorpus(t)
	reqs, err := GenerateFrom(c, Options{Seed: 6, Scale: 0.3, Families: []string{"attack-slowlow"}})
	if err != nil {
		t.Fatal(err)
	}
	first, last := map[string]time.Time{}, map[string]time.Time{}
	for _, r := range reqs {
		if _, ok := first[r.Account]; !ok {
			first[r.Account] = r.Time
		}
		last[r.Account] = r.Time
	}
	for a := range first {
		if span := last[a].Sub(first[a]); span < 2*day {
			t.Errorf("%s spans %v, want days", a, span)
		}
	}
}
