package watermark

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strings"
)

// A served record is what the verifier's served weights (Sample.UseServed)
// need of a response, without its text: the groups (synonym set, form
// slot, context) its candidates fell in, each as a 64-bit digest keyed by
// the marking key (HMAC-SHA256 under a key of its own, derived like the
// mark's: the digests say nothing of which member the key draws, and
// nobody without the key can test a guess of the words behind them).
// The server writes one per marked response when watermark.log_served is
// on (the "watermark served" log line), and `watermark verify -served`
// reads those lines back.
//
// A group's digest does not depend on the text being marked or not
// (TestServedGroupsKeyFree), so the weights stay a function of what was
// served, not of the key's draws: the test stays valid. Two groups share
// a digest with probability about 2^-64 per pair, which the test can
// ignore.

// MaxServedGroups bounds the groups one response records, and so the
// record's memory (a group key is at most 3 + maxCtx bytes: about 25 KiB
// with the map at most, per stream in flight): a response with more distinct
// groups than that (about 2% of words are candidates, so some 12,000
// tokens) records the first ones and says it was truncated. A group not
// recorded weighs as not served, which costs power, never validity.
const MaxServedGroups = 256

// Served collects the served groups of one response (Stream.RecordServed).
// A candidate costs a map lookup (and a copy of its group key the first
// time); the digests are computed when the record is written (String),
// after the response went out, not on the per-event path. Not safe for
// concurrent use.
type Served struct {
	keyID     string
	mac       hash.Hash
	sum       []byte
	buf       []byte
	groups    []string // distinct group keys, in the order first seen
	seen      map[string]struct{}
	truncated bool
}

// NewServed returns an empty record keyed by k.
func (k *Key) NewServed() *Served {
	return &Served{keyID: k.id, mac: hmac.New(sha256.New, k.servedMAC), seen: map[string]struct{}{}}
}

// digest is the keyed digest of a group key (groupKey's bytes).
func (sv *Served) digest(group []byte) uint64 {
	sv.mac.Reset()
	sv.mac.Write(group)
	sv.sum = sv.mac.Sum(sv.sum[:0])
	return binary.BigEndian.Uint64(sv.sum)
}

// add records a candidate's group.
func (sv *Served) add(set uint16, slot uint8, ctx []byte) {
	sv.buf = appendGroupKey(sv.buf[:0], set, slot, ctx)
	if _, ok := sv.seen[string(sv.buf)]; ok {
		return
	}
	if len(sv.groups) >= MaxServedGroups {
		sv.truncated = true
		return
	}
	g := string(sv.buf)
	sv.seen[g] = struct{}{}
	sv.groups = append(sv.groups, g)
}

// KeyID is the key the digests are keyed by.
func (sv *Served) KeyID() string { return sv.keyID }

// Len is the number of groups recorded.
func (sv *Served) Len() int { return len(sv.groups) }

// Truncated reports whether groups were left out (MaxServedGroups).
func (sv *Served) Truncated() bool { return sv.truncated }

// Reset empties the record for another response.
func (sv *Served) Reset() {
	sv.groups = sv.groups[:0]
	clear(sv.seen)
	sv.truncated = false
}

// Digests returns the record's digests, in the order first seen.
func (sv *Served) Digests() []uint64 {
	out := make([]uint64, len(sv.groups))
	for i, g := range sv.groups {
		out[i] = sv.digest([]byte(g))
	}
	return out
}

// String is the record as the log line carries it: the digests in the
// order first seen, 16 hex digits each, comma-separated.
func (sv *Served) String() string { return formatDigests(sv.Digests()) }

// formatDigests is the record form of ds (ParseServedGroups reads it).
func formatDigests(ds []uint64) string {
	var b strings.Builder
	b.Grow(17 * len(ds))
	var d [8]byte
	for i, x := range ds {
		if i > 0 {
			b.WriteByte(',')
		}
		binary.BigEndian.PutUint64(d[:], x)
		b.WriteString(hex.EncodeToString(d[:]))
	}
	return b.String()
}

// ParseServedGroups parses a record's digests as String writes them.
func ParseServedGroups(s string) ([]uint64, error) {
	if s == "" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	out := make([]uint64, 0, len(parts))
	for i, p := range parts {
		if len(p) != 16 {
			return nil, fmt.Errorf("watermark: served group %d: %q is not 16 hex digits", i, p)
		}
		b, err := hex.DecodeString(p)
		if err != nil {
			return nil, fmt.Errorf("watermark: served group %d: %q is not 16 hex digits", i, p)
		}
		out = append(out, binary.BigEndian.Uint64(b))
	}
	return out, nil
}

// appendGroupKey appends a group's key: its set (2 bytes), slot and
// context bytes, as Sample indexes groups.
func appendGroupKey(dst []byte, set uint16, slot uint8, ctx []byte) []byte {
	dst = append(dst, byte(set>>8), byte(set), slot)
	return append(dst, ctx...)
}

// RecordServed makes the stream record the group of every candidate it
// marks into sv (nil: stop). The record survives Reset.
func (s *Stream) RecordServed(sv *Served) { s.served = sv }

// errNoServedKey: a record keyed by a key the verifier does not hold.
var errNoServedKey = errors.New("watermark: served record keyed by a key not in the key file")

// UseServedRecord adds served records (their digests, keyed by k, the key
// their key_id names) to the served weights: a group of the sample whose
// digest under k is among them counts as served (see UseServed). Call it
// after the last Add; it may be called with several records and with
// UseServed, and weighs what any of them held.
func (sm *Sample) UseServedRecord(k *Key, digests []uint64) error {
	if k == nil {
		return errNoServedKey
	}
	set := make(map[uint64]struct{}, len(digests))
	for _, d := range digests {
		set[d] = struct{}{}
	}
	sv := k.NewServed()
	sm.initServed()
	for i := range sm.groups {
		if _, ok := set[sv.digest(sm.groupKey(&sm.groups[i]))]; ok {
			sm.markServed(i)
		}
	}
	return nil
}
