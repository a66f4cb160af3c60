package scoring

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"sort"
	"sync"
	"time"
	"unsafe"
)

// Verdict history, the part of a session's state that evidence exports
// quote (package evidence; GET /v1/sessions/{id}/evidence): what the
// engine decided for each of the session's latest requests, when, on which
// signals, and a keyed hash of each prompt, so that a ToS or legal team
// can show what was decided and match prompts they hold without the
// gateway keeping them.
//
// A session gets its history the first time it is at a tier other than
// allow (clean sessions, nearly all of them, pay one pointer); from then on
// every request is recorded in a ring of historyLen records. The ring is
// counted in the session's memory (session.bytes). In replicated mode it
// is part of the session blob (replica_state.go) and merges as a union
// (mergeHistory): every replica's records, deduplicated, the newest
// historyLen kept; the session view and the export read the shared state
// first (syncSession), so an export from any replica shows the session's
// requests whichever replica scored them.

// historyLen is the number of requests a history keeps.
const historyLen = 16

// historySignals is the number of strongest signals kept per request.
const historySignals = 3

// maxHistoryPrompt bounds the prompt bytes a record keeps (the server
// asks for less: evidence.include_prompts keeps 2 KiB).
const maxHistoryPrompt = 4096

// verdictRecord is one request's entry.
type verdictRecord struct {
	at      int64 // request time, nanoseconds
	hash    [16]byte
	score   float32
	contrib [historySignals]float32
	sig     [historySignals]uint8 // signal index + 1; 0: none
	tier    Verdict
	prompt  string // the prompt's first bytes, only with Options.EvidencePromptBytes
}

// history is a session's ring of records.
type history struct {
	ring [historyLen]verdictRecord
	n    uint32 // records written; the newest is ring[(n-1)%historyLen]
	from uint32 // the session's request number of the first record
}

// historyBytes is what a history holds besides retained prompt bytes.
const historyBytes = int64(unsafe.Sizeof(history{}))

func (h *history) bytes() int64 {
	if h == nil {
		return 0
	}
	n := historyBytes
	for i := range h.ring {
		n += int64(len(h.ring[i].prompt))
	}
	return n
}

// promptMAC computes the keyed prompt hashes: HMAC-SHA256 under a key
// derived from scoring.secret ("evidence-prompt"), cut to 16 bytes. The
// operator, who holds the secret, can recompute it for a prompt text; no
// one else can test guesses against it.
type promptMAC struct{ pool sync.Pool }

func newPromptMAC(key []byte) *promptMAC {
	p := &promptMAC{}
	p.pool.New = func() any { return hmac.New(sha256.New, key) }
	return p
}

func (p *promptMAC) sum(prompt string, dst *[16]byte) {
	m := p.pool.Get().(hash.Hash)
	m.Reset()
	m.Write([]byte(prompt))
	var full [sha256.Size]byte
	copy(dst[:], m.Sum(full[:0]))
	p.pool.Put(m)
}

// recordHistory adds the request just observed to s's history. Called
// with the stripe lock held.
func (e *Engine) recordHistory(s *session, r *Request, ev *evaluation, now int64) {
	if s.hist == nil {
		if ev.entry.tier == Allow {
			return
		}
		s.hist = &history{from: s.requests}
	}
	h := s.hist
	rec := &h.ring[h.n%historyLen]
	*rec = verdictRecord{at: now, score: float32(ev.score), tier: ev.entry.tier}
	e.pmac.sum(r.Prompt, &rec.hash)
	if k := min(e.promptBytes, maxHistoryPrompt); k > 0 {
		rec.prompt = cutUTF8(r.Prompt, k)
	}
	// The strongest signals, by contribution.
	for i, c := range ev.contrib {
		if c <= 0 {
			continue
		}
		for j := 0; j < historySignals; j++ {
			if rec.sig[j] == 0 || float32(c) > rec.contrib[j] {
				copy(rec.sig[j+1:], rec.sig[j:historySignals-1])
				copy(rec.contrib[j+1:], rec.contrib[j:historySignals-1])
				rec.sig[j], rec.contrib[j] = uint8(i+1), float32(c)
				break
			}
		}
	}
	h.n++
}

// mergeHistory is the union of two histories of one session (replicated
// mode): their records deduplicated by time and prompt hash, in time
// order, the newest historyLen kept. Records written is the larger of the
// two or the union's size, so Dropped stays a lower bound of the records
// no longer held. It returns a history of its own.
func mergeHistory(a, b *history) *history {
	if a == nil && b == nil {
		return nil
	}
	var recs [2 * historyLen]verdictRecord
	k := 0
	var n, from uint32
	for _, h := range [...]*history{a, b} {
		if h == nil {
			continue
		}
		n = max(n, h.n)
		if from == 0 || h.from != 0 && h.from < from {
			from = h.from
		}
		for i := h.n - min(h.n, historyLen); i < h.n; i++ {
			rec := h.ring[i%historyLen]
			dup := false
			for j := range k {
				if recs[j].at == rec.at && recs[j].hash == rec.hash {
					dup = true
					break
				}
			}
			if !dup {
				recs[k] = rec
				k++
			}
		}
	}
	sorted := recs[:k]
	sort.SliceStable(sorted, func(i, j int) bool {
		if sorted[i].at != sorted[j].at {
			return sorted[i].at < sorted[j].at
		}
		return bytes.Compare(sorted[i].hash[:], sorted[j].hash[:]) < 0
	})
	n = max(n, uint32(k))
	out := &history{n: n, from: from}
	keep := sorted[max(0, k-historyLen):]
	for i, rec := range keep {
		out.ring[(n-uint32(len(keep))+uint32(i))%historyLen] = rec
	}
	return out
}

// cutUTF8 returns at most n bytes of s, cut at a rune boundary.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xc0 == 0x80 {
		n--
	}
	return s[:n]
}

// SessionHistory is what an evidence export says of one session.
type SessionHistory struct {
	SessionHead
	// Signals are the session's current signals (as GET /v1/sessions/{id}
	// shows them).
	Signals []Signal `json:"signals"`
	// History holds the latest recorded requests, oldest first; Dropped
	// counts recorded requests the ring no longer holds (in replicated
	// mode at least this many), and
	// RecordedFrom is the session's request number (1-based) of the
	// first request recorded at all (the first at a tier other than
	// allow).
	History      []HistoryEntry `json:"history"`
	Dropped      uint32         `json:"dropped"`
	RecordedFrom uint32         `json:"recorded_from,omitempty"`
}

// HistoryEntry is one recorded request.
type HistoryEntry struct {
	Time    time.Time `json:"time"`
	Verdict string    `json:"verdict"`
	Score   float64   `json:"score"`
	Signals []Signal  `json:"signals"`
	// PromptHMAC is HMAC-SHA256 of the newest user turn under a key
	// derived from scoring.secret, first 16 bytes, hex.
	PromptHMAC string `json:"prompt_hmac"`
	// Prompt is the turn's first bytes, only when the operator opted in
	// (evidence.include_prompts).
	Prompt string `json:"prompt,omitempty"`
}

// History returns the evidence view of the session idStr.
func (e *Engine) History(idStr string) (SessionHistory, error) {
	d, err := e.Session(idStr)
	if err != nil {
		return SessionHistory{}, err
	}
	out := SessionHistory{SessionHead: d.SessionHead, Signals: d.Signals, History: []HistoryEntry{}}
	id, _ := parseSessionID(idStr)
	s, ok := e.cached(idStr)
	if !ok {
		return out, nil
	}
	st := &e.stripes[id[0]]
	st.Lock()
	defer st.Unlock()
	h := s.hist
	if h == nil {
		return out, nil
	}
	out.RecordedFrom = h.from
	start := uint32(0)
	if h.n > historyLen {
		start = h.n - historyLen
		out.Dropped = start
	}
	for i := start; i < h.n; i++ {
		rec := &h.ring[i%historyLen]
		en := HistoryEntry{Time: time.Unix(0, rec.at).UTC(), Verdict: rec.tier.String(), Score: round3(float64(rec.score)),
			PromptHMAC: hex.EncodeToString(rec.hash[:]), Prompt: rec.prompt, Signals: []Signal{}}
		for j, sg := range rec.sig {
			if sg != 0 {
				en.Signals = append(en.Signals, Signal{Name: signalNames[sg-1], Contribution: round3(float64(rec.contrib[j]))})
			}
		}
		out.History = append(out.History, en)
	}
	return out, nil
}

// IsNotFound reports whether err says the session is not known (unknown,
// expired or evicted).
func IsNotFound(err error) bool { return errors.Is(err, errNotFound) }
