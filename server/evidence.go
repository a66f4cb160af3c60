package server

import (
	"net/http"

	"github.com/distillguard/distillguard/config"
	"github.com/distillguard/distillguard/evidence"
	"github.com/distillguard/distillguard/scoring"
)

// evidencePromptBytes is how much of each prompt the verdict history
// keeps when evidence.include_prompts is on.
const evidencePromptBytes = 2048

// promptBytes is scoring.Options.EvidencePromptBytes for cfg.
func promptBytes(cfg *config.Config) int {
	if cfg.Evidence.IncludePrompts {
		return evidencePromptBytes
	}
	return 0
}

// withEvidence mounts GET /v1/sessions/{id}/evidence (package evidence)
// beside the scoring admin API. Every export reads the configuration in
// force (cfg), so a reloaded evidence or watermark key applies to the
// exports after the reload.
func withEvidence(api http.Handler, eng *scoring.Engine, cfg func() *config.Config, token string) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/v1/", api)
	mux.Handle("GET /v1/sessions/{id}/evidence", evidence.Handler(evidence.HandlerOptions{
		History:  eng.History,
		Settings: func() evidence.Settings { return evidenceSettings(cfg()) },
		Token:    token,
	}))
	return mux
}

// evidenceSettings is what an export quotes of cfg.
func evidenceSettings(cfg *config.Config) evidence.Settings {
	s := evidence.Settings{Key: cfg.EvidenceKey(), ConfigFingerprint: cfg.Fingerprint(), IncludePrompts: cfg.Evidence.IncludePrompts}
	if m := cfg.Marks(); m != nil {
		w := &evidence.Watermark{KeyID: m.KeyID(), LogprobAmplitude: cfg.Watermark.LogprobAmplitude, MaxPromptBytes: cfg.Processing.MaxPromptBytes, ServedRecords: m.LogServed, Contexts: m.Contexts, MarkedVerdicts: cfg.MarkedVerdicts()}
		for _, k := range m.Keys.Keys() {
			w.VerifyKeyIDs = append(w.VerifyKeyIDs, k.ID())
		}
		s.Watermark = w
	}
	return s
}
