// Package evidence builds signed per-session evidence exports: what a
// terms-of-service enforcement or legal team needs to act on a session
// the gateway flagged, in a form that can be checked later by anyone who
// holds the operator's public key.
//
// An export holds the session's verdict history (time, verdict, score and
// strongest signals of each recorded request, scoring.SessionHistory), its
// request count and first and last times, a keyed hash of each recorded
// prompt (HMAC-SHA256 under a key derived from scoring.secret, so the
// operator can match a prompt text it holds, while nobody else can test
// guesses), which watermark key marked its responses and over which
// period, and the fingerprint of the configuration in force. It never
// holds credentials (sessions are named by their keyed id) and holds
// prompt text only when the operator opted in (evidence.include_prompts).
//
// The export is signed with Ed25519 (RFC 8032; Key). The file is the JSON
// object {"payload": P, "signature": S} exactly as Marshal writes it: P is
// the signed bytes, and Verify rejects a file that differs from the
// canonical form in any byte, so no byte of an export can be changed
// without the check failing.
package evidence

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/distillguard/distillguard/scoring"
)

// FormatV1 names the export format.
const FormatV1 = "distillguard-evidence/v1"

// Export is the signed content.
type Export struct {
	Format    string    `json:"format"`
	Generated time.Time `json:"generated"`
	// ConfigFingerprint identifies the configuration in force (secrets
	// blanked; config.Config.Fingerprint).
	ConfigFingerprint string                 `json:"config_fingerprint"`
	Session           scoring.SessionHistory `json:"session"`
	// PromptsIncluded says whether history entries carry prompt text
	// (evidence.include_prompts).
	PromptsIncluded bool `json:"prompts_included"`
	// Watermark says which key marked the session's responses; nil when
	// no watermark key is configured.
	Watermark *Watermark `json:"watermark,omitempty"`
}

// Watermark is what an export says of the output watermark.
type Watermark struct {
	// KeyID is the key that marks now; VerifyKeyIDs every key the
	// verifier knows (the marking one first), so marks made before a
	// rotation are accounted for.
	KeyID        string   `json:"key_id"`
	VerifyKeyIDs []string `json:"verify_key_ids"`
	// LogprobAmplitude is the logprob mark's amplitude (nats).
	LogprobAmplitude float64 `json:"logprob_amplitude"`
	// MaxPromptBytes is processing.max_prompt_bytes when the export was
	// made: the logprob mark is keyed on the newest user turn cut to this
	// many bytes, so verify -mode logprobs needs it as -max-prompt-bytes
	// (the setting reloads live; an export made after a change quotes the
	// new value, and the config fingerprint tells the two apart).
	MaxPromptBytes int `json:"max_prompt_bytes,omitempty"`
	// ServedRecords says the server logged a served record of every
	// marked response when the export was made (watermark.log_served):
	// the "watermark served" log lines under this session's id, which
	// `watermark verify -served LOG -served-session ID` weighs a suspect
	// model's text by.
	ServedRecords bool `json:"served_records,omitempty"`
	// Contexts names the context statistics the lexical mark works from
	// ("embedded", or "sha256:" and the digest of watermark.contexts_file):
	// verify -contexts needs that file to replay the mark.
	Contexts string `json:"contexts,omitempty"`
	// MarkedVerdicts are the verdicts whose tier marks responses in the
	// default policy set (routes with other sets may differ).
	MarkedVerdicts []string `json:"marked_verdicts"`
	// Period is when the recorded history shows the session at a marked
	// verdict: its responses in that period carry the mark of KeyID
	// (nil: none recorded).
	Period *Period `json:"period,omitempty"`
}

// Period is a closed time interval.
type Period struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
}

// Signature is the export's signature.
type Signature struct {
	Algorithm string `json:"algorithm"` // "ed25519"
	KeyID     string `json:"key_id"`    // KeyID(PublicKey)
	PublicKey string `json:"public_key"`
	Value     string `json:"value"` // over the payload bytes
}

// Signed is an export file.
type Signed struct {
	Payload   json.RawMessage `json:"payload"`
	Signature Signature       `json:"signature"`
}

// Settings are the gateway settings an export quotes.
type Settings struct {
	Key               *Key
	ConfigFingerprint string
	IncludePrompts    bool
	// Watermark is nil without a watermark key.
	Watermark *Watermark
}

// Build returns the export of h under s, generated at now. The
// watermark period is derived from the history.
func Build(h scoring.SessionHistory, s Settings, now time.Time) Export {
	ex := Export{Format: FormatV1, Generated: now.UTC(), ConfigFingerprint: s.ConfigFingerprint, Session: h, PromptsIncluded: s.IncludePrompts}
	if !s.IncludePrompts {
		// Defence in depth: an engine that kept prompts for another
		// reason still exports none.
		ex.Session.History = append([]scoring.HistoryEntry(nil), h.History...)
		for i := range ex.Session.History {
			ex.Session.History[i].Prompt = ""
		}
	}
	if s.Watermark != nil {
		w := *s.Watermark
		w.Period = nil
		marked := map[string]bool{}
		for _, v := range w.MarkedVerdicts {
			marked[v] = true
		}
		for _, e := range ex.Session.History {
			if !marked[e.Verdict] {
				continue
			}
			if w.Period == nil {
				w.Period = &Period{From: e.Time, To: e.Time}
			}
			w.Period.To = e.Time
		}
		ex.Watermark = &w
	}
	return ex
}

// Sign signs ex with k and returns the export file's bytes.
func Sign(ex Export, k *Key) ([]byte, error) {
	if k == nil {
		return nil, errors.New("evidence: no signing key (evidence.key_file)")
	}
	p, err := json.Marshal(ex)
	if err != nil {
		return nil, err
	}
	s := Signed{Payload: p, Signature: Signature{
		Algorithm: "ed25519", KeyID: k.ID(),
		PublicKey: base64.StdEncoding.EncodeToString(k.pub),
		Value:     base64.StdEncoding.EncodeToString(ed25519.Sign(k.priv, p)),
	}}
	return marshalSigned(&s)
}

func marshalSigned(s *Signed) ([]byte, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Verify checks an export file: canonical form, signature by the public
// key the file names, and, when want is not nil, that this key is want
// (a file signed by someone else's key verifies only against that key:
// pin the operator's). It returns the export.
func Verify(file []byte, want ed25519.PublicKey) (*Export, *Signature, error) {
	var s Signed
	dec := json.NewDecoder(bytes.NewReader(file))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, nil, fmt.Errorf("evidence: not an export file: %w", err)
	}
	canon, err := marshalSigned(&s)
	if err != nil || !bytes.Equal(canon, file) {
		return nil, nil, errors.New("evidence: the file is not in the form it was signed in (changed after export)")
	}
	if s.Signature.Algorithm != "ed25519" {
		return nil, nil, fmt.Errorf("evidence: unknown signature algorithm %q", s.Signature.Algorithm)
	}
	pub, err := base64.StdEncoding.DecodeString(s.Signature.PublicKey)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return nil, nil, errors.New("evidence: malformed public key")
	}
	if KeyID(pub) != s.Signature.KeyID {
		return nil, nil, errors.New("evidence: key id does not match the public key")
	}
	if want != nil && !bytes.Equal(pub, want) {
		return nil, nil, fmt.Errorf("evidence: signed by key %s, not by the expected key %s", s.Signature.KeyID, KeyID(want))
	}
	sig, err := base64.StdEncoding.DecodeString(s.Signature.Value)
	if err != nil || !ed25519.Verify(pub, s.Payload, sig) {
		return nil, nil, errors.New("evidence: signature does not verify")
	}
	var ex Export
	if err := json.Unmarshal(s.Payload, &ex); err != nil {
		return nil, nil, fmt.Errorf("evidence: payload: %w", err)
	}
	if ex.Format != FormatV1 {
		return nil, nil, fmt.Errorf("evidence: unknown format %q", ex.Format)
	}
	return &ex, &s.Signature, nil
}
