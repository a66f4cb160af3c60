package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// series returns the value of the /metrics line that starts with name
// followed by a space or a label set equal to labels ("" for none), and
// whether there is one.
func series(body, name, labels string) (float64, bool) {
	prefix := name + " "
	if labels != "" {
		prefix = name + "{" + labels + "} "
	}
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, prefix); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

// TestReloadGauges: distillguard_config_last_reload_success and
// _timestamp_seconds describe the load at start, then every SIGHUP reload,
// failed or not, next to the distillguard_config_reloads_total count.
func TestReloadGauges(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "c.yaml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(cfgPath, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("log: {level: info}\n")
	before := time.Now()
	h := start(t, "-config", cfgPath)
	after := time.Now()
	scrape := func() (success, ts, okCount, errCount float64) {
		t.Helper()
		code, body := get(t, "http://"+h.addrs.Admin+"/metrics")
		if code != 200 {
			t.Fatalf("/metrics = %d", code)
		}
		var have bool
		if success, have = series(body, "distillguard_config_last_reload_success", ""); !have {
			t.Fatalf("no distillguard_config_last_reload_success in\n%s", body)
		}
		if ts, have = series(body, "distillguard_config_last_reload_timestamp_seconds", ""); !have {
			t.Fatalf("no distillguard_config_last_reload_timestamp_seconds in\n%s", body)
		}
		okCount, _ = series(body, "distillguard_config_reloads_total", `result="ok"`)
		errCount, _ = series(body, "distillguard_config_reloads_total", `result="error"`)
		return
	}
	unix := func(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

	success, ts, okN, errN := scrape()
	if success != 1 || ts < unix(before)-1e-3 || ts > unix(after)+1e-3 || okN != 0 || errN != 0 {
		t.Fatalf("at start: success %v, timestamp %v (start between %v and %v), reloads ok %v error %v", success, ts, unix(before), unix(after), okN, errN)
	}
	steps := []struct {
		file    string
		success float64
		ok, err float64
	}{
		{"log: {level: info}\nnot_a_key: 1\n", 0, 0, 1},
		{"log: {level: info}\nprocessing: {max_held_bytes: 2048}\n", 1, 1, 1},
		{"scoring: [\n", 0, 1, 2},
	}
	last := ts
	for i, st := range steps {
		write(st.file)
		sent := time.Now()
		h.sigs <- syscall.SIGHUP
		var s, okN, errN float64
		waitFor(t, func() bool {
			_, _, okN, errN = scrape()
			return okN+errN == st.ok+st.err
		})
		// The count is recorded last; once it moved, a new scrape sees
		// the whole reload (one collection reads the instruments one by
		// one, so the one above may not have).
		s, ts, okN, errN = scrape()
		if s != st.success || okN != st.ok || errN != st.err || ts <= last || ts < unix(sent)-1e-3 {
			t.Errorf("reload %d: success %v (want %v), reloads ok %v error %v (want %v %v), timestamp %v after %v (sent %v)",
				i, s, st.success, okN, errN, st.ok, st.err, ts, last, unix(sent))
		}
		last = ts
	}
	if err := h.stop(t); err != nil {
		t.Fatal(err)
	}
}
