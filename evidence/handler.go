package evidence

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"time"

	"github.com/distillguard/distillguard/scoring"
)

// HandlerOptions wires the admin endpoint.
type HandlerOptions struct {
	// History returns a session's history (scoring.Engine.History).
	History func(id string) (scoring.SessionHistory, error)
	// Settings returns the settings in force (read per export, so a
	// reloaded key signs the exports after the reload).
	Settings func() Settings
	// Token is admin.token: exports need "Authorization: Bearer <token>";
	// empty refuses every export (an export names what a session sent).
	Token string
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// Handler serves GET /v1/sessions/{id}/evidence: the session's signed
// export (Sign's bytes, application/json). 404 for a session the engine
// does not know, 503 when no evidence.key_file is configured.
func Handler(o HandlerOptions) http.Handler {
	if o.Now == nil {
		o.Now = time.Now
	}
	want := []byte("Bearer " + o.Token)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/sessions/{id}/evidence", func(w http.ResponseWriter, r *http.Request) {
		if o.Token == "" {
			httpError(w, http.StatusForbidden, "evidence exports are disabled: no admin token is configured")
			return
		}
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="distillguard-admin"`)
			httpError(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		s := o.Settings()
		if s.Key == nil {
			httpError(w, http.StatusServiceUnavailable, "no evidence.key_file is configured: exports cannot be signed")
			return
		}
		h, err := o.History(r.PathValue("id"))
		if err != nil {
			if scoring.IsNotFound(err) {
				httpError(w, http.StatusNotFound, "no such session (unknown, expired or evicted)")
			} else {
				httpError(w, http.StatusBadRequest, err.Error())
			}
			return
		}
		b, err := Sign(Build(h, s, o.Now()), s.Key)
		if err != nil {
			httpError(w, http.StatusInternalServerError, err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(b)
	})
	return mux
}

func httpError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
