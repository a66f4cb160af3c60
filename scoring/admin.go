package scoring

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"
)

// AdminHandler serves the scoring admin API:
//
//	GET  /v1/sessions?top=N        riskiest sessions (default 50, at most the index size)
//	GET  /v1/sessions/{id}         one session's state, score and signals
//	POST /v1/sessions/{id}/reset   forget a session (and lift its quarantine)
//	GET  /v1/campaigns             clusters of linked sessions with flagged members
//
// Mutating calls need "Authorization: Bearer <token>"; an empty token
// disables them (403). Reads are open: mount the handler on the admin
// listener, which is bound to localhost by default.
func (e *Engine) AdminHandler(token string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/sessions", e.handleList)
	mux.HandleFunc("GET /v1/sessions/{id}", e.handleGet)
	mux.HandleFunc("POST /v1/sessions/{id}/reset", requireToken(token, e.handleReset))
	mux.HandleFunc("GET /v1/campaigns", e.handleCampaigns)
	return mux
}

func requireToken(token string, next http.HandlerFunc) http.HandlerFunc {
	want := []byte("Bearer " + token)
	return func(w http.ResponseWriter, r *http.Request) {
		if token == "" {
			writeError(w, http.StatusForbidden, "mutating admin calls are disabled: no admin token is configured")
			return
		}
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="distillguard-admin"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		next(w, r)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func (e *Engine) handleList(w http.ResponseWriter, r *http.Request) {
	n := 50
	if v := r.URL.Query().Get("top"); v != "" {
		x, err := strconv.Atoi(v)
		if err != nil || x < 1 {
			writeError(w, http.StatusBadRequest, "top must be a positive integer")
			return
		}
		n = x
	}
	writeJSON(w, http.StatusOK, map[string]any{"sessions": e.index.top(n)})
}

// SessionHead is what every view of a session starts with (the session
// list, one session, its evidence): embedded, its fields are the views'
// first JSON members.
type SessionHead struct {
	ID        string    `json:"id"`
	Verdict   string    `json:"verdict"`
	Score     float64   `json:"score"`
	PeakScore float64   `json:"peak_score"`
	Requests  uint32    `json:"requests"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
}

// SessionDetail is the admin view of one session.
type SessionDetail struct {
	SessionHead
	QuarantineUntil *time.Time `json:"quarantine_until,omitempty"`
	Tier            string     `json:"state_tier"` // probation or main
	Languages       []string   `json:"languages"`
	// Signals are recomputed from the state as of the last request.
	Signals []Signal `json:"signals"`
	// Effective (decayed) counts behind the signals.
	Counts map[string]float64 `json:"decayed_counts"`
	// FlaggedOwnEvidence: flagged without help from its clusters.
	FlaggedOwnEvidence bool `json:"flagged_own_evidence"`
	// Explanation says in words which signals contribute and on what
	// evidence.
	Explanation string `json:"explanation"`
	// Standing is the identity's progress out of probation (Config.Standing);
	// absent when standing is off.
	Standing *StandingDetail `json:"standing,omitempty"`
}

// Session returns the admin view of a session by id.
func (e *Engine) Session(idStr string) (SessionDetail, error) {
	id, err := parseSessionID(idStr)
	if err != nil {
		return SessionDetail{}, err
	}
	e.syncSession(idStr, id)
	s, ok := e.cached(idStr)
	if !ok {
		return SessionDetail{}, errNotFound
	}
	st := &e.stripes[id[0]]
	st.Lock()
	defer st.Unlock()
	if s.requests == 0 {
		return SessionDetail{}, errNotFound
	}
	v := e.view(s, s.last, float64(s.spread), e.cohortStrength(s))
	strg := computeStrengths(s, &e.params, &v)
	score, contrib := combine(&strg, &e.weights, e.cfg.AutomationCap, -1)
	d := SessionDetail{
		SessionHead: SessionHead{ID: idStr, Verdict: s.tier.String(), Score: round3(score), PeakScore: round3(float64(s.peak)),
			Requests: s.requests, FirstSeen: time.Unix(0, s.first).UTC(), LastSeen: time.Unix(0, s.last).UTC()},
		Tier: "probation", Languages: langList(s.langCur | s.langPrev), Signals: explain(&strg, &contrib),
		FlaggedOwnEvidence: s.has(fOwnFlag), Explanation: e.explainText(s, &strg, &contrib, nil),
	}
	if s.has(fPromoted) {
		d.Tier = "main"
	}
	d.Standing = e.standingDetail(s)
	if s.quarantineUntil > s.last {
		q := time.Unix(0, s.quarantineUntil).UTC()
		d.QuarantineUntil = &q
	}
	c := &v.c
	d.Counts = map[string]float64{
		"requests": round3(float64(c[cN])), "single_turn": round3(float64(c[cSingle])), "templates": round3(float64(c[cTmpl])),
		"reasoning_demands": round3(float64(c[cCot])), "logit_bias": round3(float64(c[cLbN])), "requests_last_hour": round3(float64(c[vVol])),
		"probes": round3(float64(c[cProbe])), "follow_ups": round3(float64(c[cFol])), "recycled_follow_ups": round3(float64(c[cFolRec])),
		"conversations_last_hour": round3(float64(c[vConv])), "output_tokens": round3(float64(c[cOut])),
		"template_accounts": round3(float64(s.ev.tmplSessions)), "cohort_fresh_accounts": round3(float64(s.ev.cohortFresh)),
		"active_hours_last_day": float64(s.hours.activeWithin(s.last, 24)),
	}
	return d, nil
}

func (e *Engine) handleGet(w http.ResponseWriter, r *http.Request) {
	d, err := e.Session(r.PathValue("id"))
	switch {
	case err == errNotFound:
		writeError(w, http.StatusNotFound, "no such session (unknown, expired or evicted)")
	case err != nil:
		writeError(w, http.StatusBadRequest, err.Error())
	default:
		writeJSON(w, http.StatusOK, d)
	}
}

// Reset forgets a session: its state, index entry and quarantine. It
// reports whether anything was known about it.
func (e *Engine) Reset(idStr string) (bool, error) {
	id, err := parseSessionID(idStr)
	if err != nil {
		return false, err
	}
	st := &e.stripes[id[0]]
	st.Lock()
	found := false
	if s, ok := e.main.Get(idStr); ok {
		found = true
		*s = session{id: id}
		e.main.Del(idStr)
	}
	if s, ok := e.prob.Get(idStr); ok {
		found = true
		*s = session{id: id}
		e.prob.Del(idStr)
	}
	q := e.quarantine.until(id) != 0
	e.quarantine.remove(id)
	e.remembered.remove(id)
	st.Unlock()
	if e.rep != nil {
		// Forget it in Redis too, or the next request would bring it back.
		found = e.rep.remove(idStr) || found
	}
	found = e.index.remove(id) || found || q
	return found, nil
}

func (e *Engine) handleReset(w http.ResponseWriter, r *http.Request) {
	idStr := r.PathValue("id")
	found, err := e.Reset(idStr)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	e.log.LogAttrs(context.Background(), slog.LevelInfo, "scoring session reset",
		slog.String("session", idStr), slog.Bool("found", found),
		slog.String("by", remoteHost(r.RemoteAddr)))
	writeJSON(w, http.StatusOK, map[string]any{"session": idStr, "reset": found})
}

func (e *Engine) handleCampaigns(w http.ResponseWriter, r *http.Request) {
	// Clusters decay on request time: report them as of the newest request
	// seen, so a replay reads the same as live traffic.
	now := e.latest.Load()
	if now == 0 {
		now = e.clock().UnixNano()
	}
	writeJSON(w, http.StatusOK, map[string]any{"campaigns": e.clusters.campaigns(now, 2)})
}

func remoteHost(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// syncSession brings this replica's copy of a session up to the shared
// state in replicated mode (one read, within call_timeout), so that the
// session view and the evidence export show the whole session whichever
// replica scored its requests; a session this replica never served is
// taken from Redis as a request would take it. Redis unreachable: the
// local copy is shown.
func (e *Engine) syncSession(idStr string, id [16]byte) {
	if e.rep == nil {
		return
	}
	f := e.rep.fetch(idStr)
	if !f.ok || !f.found {
		return
	}
	st := &e.stripes[id[0]]
	st.Lock()
	defer st.Unlock()
	s, ok := e.cached(idStr)
	if !ok {
		e.lookup(idStr, id, e.latest.Load(), &f)
		return
	}
	e.rep.reconcile(s, f)
}
