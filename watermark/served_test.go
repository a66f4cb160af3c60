package watermark

import (
	"bytes"
	"encoding/json"
	"maps"
	"path/filepath"
	"strings"
	"testing"
)

// memberRuns is text where synonym-set members follow each other, so a
// member's context is itself a substituted word.
func memberRuns() []byte {
	return []byte("The big huge car. Maybe usually therefore quickly bought children. " +
		"Huge big illegal dangerous car, maybe perhaps tried. Therefore big children usually bought a huge car.")
}

// groupsOf returns the group keys and occurrences of texts.
func groupsOf(v *Verifier, texts [][]byte) map[string]int {
	sm := v.NewSample()
	for _, t := range texts {
		sm.Add(t)
	}
	return sm.GroupCounts()
}

// TestServedGroupsKeyFree: marked text and its original hold the same
// groups, with the same occurrences, whatever the key: the served text's
// weights (Sample.UseServed) cannot depend on the key, which is what
// keeps the served test valid.
func TestServedGroupsKeyFree(t *testing.T) {
	lex := DefaultLexicon()
	v := NewVerifier(lex)
	var texts [][]byte
	for _, c := range loadCorpora(t) {
		for _, s := range c.texts {
			texts = append(texts, []byte(s))
		}
	}
	texts = append(texts, memberRuns())
	for i := uint64(0); i < 8; i++ {
		texts = append(texts, synthText(300+i, 20))
	}
	orig := groupsOf(v, texts)
	if len(orig) < 1000 {
		t.Fatalf("only %d groups: the check needs many", len(orig))
	}
	for seed := uint64(1); seed <= 3; seed++ {
		m := NewMarker(lex, testKey(t, "k", seed))
		marked := make([][]byte, len(texts))
		changed := 0
		for i, s := range texts {
			out, st := m.Mark(s)
			marked[i] = out
			changed += int(st.Substituted)
		}
		if changed == 0 {
			t.Fatalf("key %d changed nothing", seed)
		}
		if got := groupsOf(v, marked); !maps.Equal(got, orig) {
			diff := 0
			for k, n := range orig {
				if got[k] != n {
					diff++
				}
			}
			t.Errorf("key %d: the marked text's groups differ from the original's (%d of %d, %d marked)", seed, diff, len(orig), len(got))
		}
	}
}

// TestServedCalibration: the served weights keep the test valid where
// they weigh most, unmarked text whose every group the served text held
// (its own marked version); and text marked with the key, given what it
// was served, is found.
func TestServedCalibration(t *testing.T) {
	lex := DefaultLexicon()
	v := NewVerifier(lex)
	key := testKey(t, "real", 11)
	m := NewMarker(lex, key)
	var raw, marked [][]byte
	for _, c := range loadCorpora(t)[:2] {
		for i, s := range c.texts {
			if i%2 != 0 {
				continue
			}
			out, _ := m.Mark([]byte(s))
			raw, marked = append(raw, []byte(s)), append(marked, out)
		}
	}
	served := v.NewSample()
	for _, s := range marked {
		served.Add(s)
	}
	sample := func(texts [][]byte) *Sample {
		sm := v.NewSample()
		for _, s := range texts {
			sm.Add(s)
		}
		sm.UseServed(served)
		return sm
	}
	un, mk := sample(raw), sample(marked)
	if r := un.Score(key); r.PValue < 0.01 || r.ServedGroups != served.Groups() {
		t.Errorf("unmarked originals, served their marked version: p = %g, served groups %d (want %d)", r.PValue, r.ServedGroups, served.Groups())
	}
	if r := mk.Score(key); r.PValue > 1e-12 {
		t.Errorf("marked text given what it was served: p = %g", r.PValue)
	}
	const decoys = 200
	below := 0
	for i := 0; i < decoys; i++ {
		k := testKey(t, "decoy", 1000+uint64(i))
		for _, sm := range []*Sample{un, mk} {
			if sm.Score(k).PValue < 0.01 {
				below++
			}
		}
	}
	// Valid: at most 1% expected below 0.01; 2% leaves room for a
	// conservative test's sampling error over 400 trials.
	if below > 2*decoys*2/100 {
		t.Errorf("decoy keys with the served text: %d of %d below 0.01", below, 2*decoys)
	}
}

func TestRunVerifyServed(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string { return writeTestFile(t, dir, name, content) }
	secret := strings.Repeat("c3", 32)
	keys := write("key", secret+"\n")
	k, err := ParseKeyFile([]byte(secret + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	m := NewMarker(DefaultLexicon(), k.Active())
	var servedText bytes.Buffer
	for i := 0; i < 20; i++ {
		out, _ := m.Mark(synthText(uint64(500+i), 3))
		s, _ := json.Marshal(string(out))
		servedText.WriteString("{\"text\":" + string(s) + "}\n")
	}
	servedFile := write("served.jsonl", servedText.String())
	suspect := write("suspect.jsonl", servedText.String())
	var stdout, stderr bytes.Buffer
	if code := RunVerify([]string{"-key-file", keys, "-served", servedFile, "-served", servedFile, suspect}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var rep map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if rep["served_texts"] != float64(40) || rep["served_groups"].(float64) <= 0 || rep["p_value"].(float64) > 1e-6 {
		t.Errorf("report: %s", stdout.String())
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-key-file", keys, "-mode", "logprobs", "-prompts", suspect, "-served", servedFile, suspect}, "-served apply to -mode text"},
		{[]string{"-key-file", keys, "-served", filepath.Join(dir, "missing"), suspect}, "-served open"},
		{[]string{"-key-file", keys, "-served=", suspect}, "empty file name"},
	} {
		stdout.Reset()
		stderr.Reset()
		if code := RunVerify(c.args, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%v: exit %d, stderr %q, want %q", c.args, code, stderr.String(), c.want)
		}
	}
}

// markServed marks texts with m, one served record a text (as the server
// keeps one a response), and returns the marked texts and the records'
// digests.
func markServed(t *testing.T, m *Marker, texts [][]byte) ([][]byte, []uint64) {
	t.Helper()
	st := m.NewStream()
	sv := m.Key().NewServed()
	st.RecordServed(sv)
	out := make([][]byte, len(texts))
	var ds []uint64
	for i, tx := range texts {
		st.Reset()
		sv.Reset()
		b := st.Write(nil, tx)
		out[i] = st.Flush(b)
		if sv.Truncated() {
			t.Fatalf("text %d: record truncated at %d groups", i, sv.Len())
		}
		got, err := ParseServedGroups(sv.String())
		if err != nil || len(got) != sv.Len() {
			t.Fatalf("text %d: round trip: %d digests of %d, %v", i, len(got), sv.Len(), err)
		}
		ds = append(ds, got...)
	}
	return out, ds
}

// TestServedRecordIsTheText: the server's served record weighs a sample
// exactly as the served text itself does, and keyed by another key it
// matches nothing.
func TestServedRecordIsTheText(t *testing.T) {
	lex := DefaultLexicon()
	v := NewVerifier(lex)
	key, other := testKey(t, "real", 21), testKey(t, "other", 22)
	var texts [][]byte
	for i := uint64(0); i < 40; i++ {
		texts = append(texts, synthText(700+i, 4))
	}
	texts = append(texts, memberRuns())
	marked, ds := markServed(t, NewMarker(lex, key), texts)
	if len(ds) == 0 {
		t.Fatal("no served groups recorded")
	}
	servedText := v.NewSample()
	for _, b := range marked {
		servedText.Add(b)
	}
	// The suspect: half the served texts, and text never served.
	suspect := func() *Sample {
		sm := v.NewSample()
		for i, b := range marked {
			if i%2 == 0 {
				sm.Add(b)
			}
		}
		sm.Add(synthText(99, 30))
		return sm
	}
	a, b, c := suspect(), suspect(), suspect()
	a.UseServed(servedText)
	if err := b.UseServedRecord(key, ds); err != nil {
		t.Fatal(err)
	}
	ra, rb := a.Score(key), b.Score(key)
	if ra != rb || ra.ServedGroups == 0 || ra.ServedGroups >= a.Groups() {
		t.Errorf("served text %+v\nserved record %+v", ra, rb)
	}
	if err := c.UseServedRecord(other, ds); err != nil {
		t.Fatal(err)
	}
	if r := c.Score(key); r.ServedGroups != 0 {
		t.Errorf("a record checked with another key's digests matched %d groups", r.ServedGroups)
	}
	if err := c.UseServedRecord(nil, ds); err == nil {
		t.Error("a record without its key: no error")
	}
}

func TestServedRecordBounds(t *testing.T) {
	key := testKey(t, "k", 5)
	sv := key.NewServed()
	ctx := make([]byte, 4)
	for i := 0; i < MaxServedGroups+10; i++ {
		ctx[0], ctx[1] = byte(i), byte(i>>8)
		sv.add(1, 0, ctx)
		sv.add(1, 0, ctx) // a repeat is recorded once
	}
	if sv.Len() != MaxServedGroups || !sv.Truncated() {
		t.Errorf("%d groups, truncated %v", sv.Len(), sv.Truncated())
	}
	sv.Reset()
	if sv.Len() != 0 || sv.Truncated() || sv.String() != "" {
		t.Errorf("after Reset: %d, %v, %q", sv.Len(), sv.Truncated(), sv.String())
	}
	for _, bad := range []string{"xyz", "0123456789abcdef,", "0123456789abcdeg", "0123456789abcdef0"} {
		if _, err := ParseServedGroups(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	if ds, err := ParseServedGroups(""); err != nil || ds != nil {
		t.Errorf("empty: %v, %v", ds, err)
	}
}

// TestRunVerifyServedRecords: -served reads the server's log, takes the
// served records (of one session with -served-session) and skips its
// other lines.
func TestRunVerifyServedRecords(t *testing.T) {
	dir := t.TempDir()
	secret := strings.Repeat("d4", 32)
	keys := writeTestFile(t, dir, "keys", KeySetHeader+"\nwm-1 "+secret+" active\n")
	ks, err := LoadKeyFile(keys)
	if err != nil {
		t.Fatal(err)
	}
	k := ks.Active()
	var texts [][]byte
	for i := uint64(0); i < 20; i++ {
		texts = append(texts, synthText(800+i, 3))
	}
	var log, suspect bytes.Buffer
	m := NewMarker(DefaultLexicon(), k)
	for i, tx := range texts {
		outs, ds := markServed(t, m, [][]byte{tx})
		out := outs[0]
		session := "s-a"
		if i%2 == 1 {
			session = "s-b"
		}
		line, _ := json.Marshal(map[string]any{"time": "2026-12-03T12:00:00Z", "level": "INFO", "msg": "watermark served",
			"session": session, "key_id": k.ID(), "groups": len(ds), "truncated": false, "served_groups": formatDigests(ds)})
		log.WriteString(`{"time":"2026-12-03T12:00:00Z","level":"INFO","msg":"scoring verdict changed","session":"s-a"}` + "\n")
		log.Write(append(line, '\n'))
		s, _ := json.Marshal(string(out))
		suspect.WriteString(`{"text":` + string(s) + "}\n")
	}
	logFile, suspectFile := writeTestFile(t, dir, "distillguard.log", log.String()), writeTestFile(t, dir, "suspect.jsonl", suspect.String())
	run := func(args ...string) (map[string]any, string, int) {
		var stdout, stderr bytes.Buffer
		code := RunVerify(append([]string{"-key-file", keys}, args...), &stdout, &stderr)
		var rep map[string]any
		if code == 0 {
			if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
				t.Fatal(err)
			}
		}
		return rep, stderr.String(), code
	}
	all, _, code := run("-served", logFile, suspectFile)
	one, _, code1 := run("-served", logFile, "-served-session", "s-a", suspectFile)
	if code != 0 || code1 != 0 {
		t.Fatalf("exit %d, %d", code, code1)
	}
	if all["served_records"] != float64(20) || one["served_records"] != float64(10) {
		t.Errorf("records: all %v, one session %v", all["served_records"], one["served_records"])
	}
	if a, o := all["served_groups"].(float64), one["served_groups"].(float64); !(a > o && o > 0) {
		t.Errorf("served groups: all %v, one session %v", a, o)
	}
	if _, msg, code := run("-served", logFile, "-served-session", "nobody", suspectFile); code != 2 || !strings.Contains(msg, "no served texts or records") {
		t.Errorf("no session's records: exit %d, %q", code, msg)
	}
	other := writeTestFile(t, dir, "other", strings.Repeat("e5", 32)+"\n")
	var stdout, stderr bytes.Buffer
	if code := RunVerify([]string{"-key-file", other, "-served", logFile, suspectFile}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), `keyed by "wm-1"`) {
		t.Errorf("unknown key id: exit %d, %q", code, stderr.String())
	}
	stderr.Reset()
	if code := RunVerify([]string{"-key-file", keys, logFile}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "are given with -served") {
		t.Errorf("a log as the suspect: exit %d, %q", code, stderr.String())
	}
}

// FuzzServedInputs: the served-record reader (a server log given to
// -served) and the digest parser never panic, a parsed record formats
// back to its input, and no more is read than was given.
func FuzzServedInputs(f *testing.F) {
	f.Add([]byte(`{"msg":"watermark served","session":"s","key_id":"k","served_groups":"0123456789abcdef,fedcba9876543210"}` + "\n" + `{"msg":"other"}` + "\n" + `{"text":"big"}` + "\n"))
	f.Add([]byte(`{"served_groups":""}`))
	f.Add([]byte(`{"served_groups":"0123456789ABCDEF"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, groups := 0, 0
		_ = readInputs(bytes.NewReader(b), func(x []byte) { n += len(x) }, func(r servedRecord) error {
			ds, err := ParseServedGroups(r.groups)
			if err != nil {
				return err
			}
			groups += len(ds)
			if back := formatDigests(ds); !strings.EqualFold(back, r.groups) {
				t.Fatalf("%q parsed and formatted back as %q", r.groups, back)
			}
			return nil
		})
		if n > 4*len(b)+16 || 17*groups > len(b)+17 {
			t.Fatalf("%d text bytes and %d digests from %d input bytes", n, groups, len(b))
		}
	})
}
