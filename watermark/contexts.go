package watermark

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"math/bits"
	"slices"
	"strconv"
	"strings"
)

// Context statistics and the frequency-preserving assignment.
//
// CATER (He et al., "CATER: Intellectual Property Protection on Text
// Generation APIs via Conditional Watermarks", NeurIPS 2022) makes a
// conditional lexical watermark invisible to word-frequency analysis by
// choosing the context -> member mapping so that, weighted by how often
// each context occurs, every member keeps its natural share of the set; it
// solves that as an optimisation over the observed contexts. Here the
// optimisation is a keyed sequential assignment over the contexts of each
// set, heaviest first (ContextStats holds their frequencies, estimated from
// unmarked text):
//
//   - caps[m] starts at member m's natural count (the target marginal);
//   - a context of weight w may take only a member with caps[m] >= w; among
//     those it draws m with probability caps[m] / sum of their caps, from a
//     keyed PRF of (set, context), and caps[m] -= w;
//   - a context that fits no member is left unmarked ("free": the original
//     word passes through, so it keeps its natural member mix), and its
//     natural member counts are taken off the caps instead;
//   - every context not in the table (rare and unseen contexts: the hashed
//     tail) draws, by the same PRF, from the caps that are left;
//   - before all of this, the heaviest contexts are set apart in pairs
//     tilted in opposite directions (pairPlan), which keep the members'
//     counts among themselves, and a unit too rare in the statistics is
//     not marked at all (setMinShareNum).
//
// The caps of the seen contexts are exactly used up and the tail fills the
// rest, so over the estimated context distribution each member's marked
// share equals its natural share (in expectation over the tail's hashed
// draws). The draw probabilities are the verifier's null: given the key's
// earlier draws of the same set (which the verifier replays), context j
// matches an observed member o with probability caps[o] / sum of caps at
// step j, a predictable probability (see Sample.Score).

// ContextsHeader is the first line of a context statistics file.
const ContextsHeader = "distillguard-watermark-contexts v1"

// Context table parameters.
const (
	// ctxMinCount is the fewest occurrences for a context to get its own
	// row; rarer contexts are part of the tail.
	ctxMinCount = 2
	// ctxMaxPerSet bounds the rows of one set.
	ctxMaxPerSet = 512
	// ctxUnit scales occurrence counts so the prior below can be a
	// fraction of one occurrence in integer arithmetic.
	ctxUnit = 64
	// ctxPrior is the prior mass, in units (ctxUnit = one occurrence),
	// spread over a set's members by their table weights: a member never
	// seen in the statistics keeps a tiny share instead of none (a
	// sixteenth of an occurrence: more would move the share of members
	// seen in a few occurrences only).
	ctxPrior = ctxUnit / 16
)

// ContextStats holds, for each synonym set and form slot (a "unit": the
// plural "kids/children" is one, the singular "kid/child" another, since
// their members' shares differ), how often each member and each context
// (the token before a candidate, as the marker sees it) occur in unmarked
// text. Immutable after parsing or building.
type ContextStats struct {
	sets map[uint32]*setStats
	// total is the number of candidate occurrences over every unit: the
	// scale minCount compares a unit's occurrences with.
	total uint64
}

// setTotal fills cs.total.
func (cs *ContextStats) setTotal() {
	cs.total = 0
	for _, ss := range cs.sets {
		cs.total += ss.n
	}
}

// minCount is the fewest occurrences a unit needs in the statistics to be
// marked (see setMinShare).
func (cs *ContextStats) minCount() uint64 {
	return cs.total * setMinShareNum / setMinShareDen
}

// unitOf numbers a (set, slot) pair.
func unitOf(set uint16, slot uint8) uint32 { return uint32(set)*numSlots + uint32(slot) }

type setStats struct {
	n       uint64   // occurrences
	members []uint64 // natural count of each member
	ctxs    []ctxStat
	index   map[string]int32 // context bytes -> index in ctxs
}

type ctxStat struct {
	key     string // ctxBuf bytes
	count   uint64
	members []uint64
}

// BuildContextStats counts candidates in texts (unmarked output of the
// model to be marked: the marker's estimate of the natural distribution).
func BuildContextStats(lex *Lexicon, texts [][]byte) *ContextStats {
	st := &Stream{lex: lex, observe: true}
	counts := map[uint32]map[string][]uint64{}
	sizes := map[uint32]int{}
	for _, t := range texts {
		st.Reset()
		st.Write(nil, t)
		st.Flush(nil)
		for _, c := range st.cands {
			u := unitOf(c.set, c.slot)
			m := counts[u]
			if m == nil {
				m = map[string][]uint64{}
				counts[u] = m
				sizes[u] = len(lex.sets[c.set].members)
			}
			k := string(c.ctx.bytes())
			v := m[k]
			if v == nil {
				v = make([]uint64, len(lex.sets[c.set].members))
				m[k] = v
			}
			v[c.member]++
		}
	}
	cs := &ContextStats{sets: map[uint32]*setStats{}}
	for u, m := range counts {
		ss := &setStats{members: make([]uint64, sizes[u])}
		for k, v := range m {
			var n uint64
			for i, c := range v {
				ss.members[i] += c
				n += c
			}
			ss.n += n
			if n >= ctxMinCount {
				ss.ctxs = append(ss.ctxs, ctxStat{key: k, count: n, members: v})
			}
		}
		sortCtxs(ss.ctxs)
		if len(ss.ctxs) > ctxMaxPerSet {
			ss.ctxs = ss.ctxs[:ctxMaxPerSet]
		}
		ss.reindex()
		cs.sets[u] = ss
	}
	cs.setTotal()
	return cs
}

// sortCtxs orders contexts heaviest first, ties by their bytes: the
// assignment order, which must not depend on the key.
func sortCtxs(c []ctxStat) {
	slices.SortFunc(c, func(a, b ctxStat) int {
		if a.count != b.count {
			if a.count > b.count {
				return -1
			}
			return 1
		}
		return strings.Compare(a.key, b.key)
	})
}

func (ss *setStats) reindex() {
	ss.index = make(map[string]int32, len(ss.ctxs))
	for i, c := range ss.ctxs {
		ss.index[c.key] = int32(i)
	}
}

// Sets is the number of (set, slot) units with statistics.
func (cs *ContextStats) Sets() int { return len(cs.sets) }

// Format writes the statistics as text: ContextsHeader, then per unit a
// line "set FORM N c1 c2 ..." (FORM: the first member's form in the unit's
// slot; occurrences and natural member counts, in table order) followed by
// its contexts heaviest first, one a line:
// "CONTEXT COUNT c1 c2 ...". CONTEXT is "^" (start of text), "=WORD" (the
// set whose first member is WORD), "!P" (punctuation P) or a word; bytes
// other than a-z and 0-9 are written %XX.
func (cs *ContextStats) Format(lex *Lexicon) []byte {
	var b bytes.Buffer
	b.WriteString(ContextsHeader + "\n")
	b.WriteString("# Generated from unmarked text; see BuildContextStats. One set per \"set\" line, its contexts below it.\n")
	ids := make([]uint32, 0, len(cs.sets))
	for id := range cs.sets {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		ss := cs.sets[id]
		fmt.Fprintf(&b, "set %s %d", lex.sets[id/numSlots].members[0].forms[id%numSlots], ss.n)
		for _, c := range ss.members {
			fmt.Fprintf(&b, " %d", c)
		}
		b.WriteByte('\n')
		for _, c := range ss.ctxs {
			b.WriteString(encodeCtx(lex, c.key))
			fmt.Fprintf(&b, " %d", c.count)
			for _, v := range c.members {
				fmt.Fprintf(&b, " %d", v)
			}
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

func escapeCtx(b *strings.Builder, s string) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(b, "%%%02x", c)
		}
	}
}

func encodeCtx(lex *Lexicon, key string) string {
	var b strings.Builder
	switch {
	case key == string([]byte{ctxStart}):
		b.WriteByte('^')
	case len(key) == 3 && key[0] == ctxSet:
		b.WriteByte('=')
		b.WriteString(lex.sets[binary.BigEndian.Uint16([]byte(key[1:]))].members[0].forms[slotBase])
	case len(key) > 1 && key[0] == ctxPunct:
		b.WriteByte('!')
		escapeCtx(&b, key[1:])
	default:
		escapeCtx(&b, key)
	}
	return b.String()
}

func unescapeCtx(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z' || c >= '0' && c <= '9':
			b.WriteByte(c)
		case c == '%' && i+3 <= len(s):
			v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
			if err != nil {
				return "", fmt.Errorf("bad escape %q", s[i:i+3])
			}
			b.WriteByte(byte(v))
			i += 2
		default:
			return "", fmt.Errorf("byte %q must be escaped", c)
		}
	}
	return b.String(), nil
}

func decodeCtx(first map[string]uint16, s string) (string, error) {
	switch {
	case s == "^":
		return string([]byte{ctxStart}), nil
	case strings.HasPrefix(s, "="):
		id, ok := first[s[1:]]
		if !ok {
			return "", fmt.Errorf("no set starts with %q", s[1:])
		}
		return string([]byte{ctxSet, byte(id >> 8), byte(id)}), nil
	case strings.HasPrefix(s, "!"):
		p, err := unescapeCtx(s[1:])
		if err != nil || p == "" || len(p) > maxCtx-1 {
			return "", fmt.Errorf("bad punctuation context %q", s)
		}
		return string([]byte{ctxPunct}) + p, nil
	}
	w, err := unescapeCtx(s)
	if err != nil || w == "" || len(w) > maxWord {
		return "", fmt.Errorf("bad word context %q", s)
	}
	return w, nil
}

// ParseContextStats parses statistics written by Format for lex. Sets are
// named by their first member, so statistics survive added sets; a set
// name lex does not know is an error (the table and the statistics must be
// regenerated together).
func ParseContextStats(lex *Lexicon, text []byte) (*ContextStats, error) {
	first := map[string]uint16{}
	for i, s := range lex.sets {
		first[s.members[0].forms[slotBase]] = uint16(i)
	}
	cs := &ContextStats{sets: map[uint32]*setStats{}}
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(nil, 1<<20)
	var cur *setStats
	line := 0
	nums := func(f []string, want int) ([]uint64, error) {
		if len(f) != want {
			return nil, fmt.Errorf("want %d numbers, got %d", want, len(f))
		}
		out := make([]uint64, len(f))
		for i, s := range f {
			v, err := strconv.ParseUint(s, 10, 32)
			if err != nil {
				return nil, err
			}
			out[i] = v
		}
		return out, nil
	}
	for sc.Scan() {
		line++
		t := strings.TrimSpace(sc.Text())
		if line == 1 {
			if t != ContextsHeader {
				return nil, fmt.Errorf("watermark: context statistics: first line is not %q", ContextsHeader)
			}
			continue
		}
		if t == "" || t[0] == '#' {
			continue
		}
		f := strings.Fields(t)
		fail := func(err error) error { return fmt.Errorf("watermark: context statistics line %d: %w", line, err) }
		if f[0] == "set" {
			if len(f) < 3 {
				return nil, fail(fmt.Errorf("want \"set FIRST-MEMBER N COUNTS...\""))
			}
			e, ok := lex.words[f[1]]
			if !ok || e.member != 0 {
				return nil, fail(fmt.Errorf("%q is not a first member's form", f[1]))
			}
			id := unitOf(e.set, e.slot)
			if cs.sets[id] != nil {
				return nil, fail(fmt.Errorf("set %q twice", f[1]))
			}
			v, err := nums(f[2:], 1+len(lex.sets[e.set].members))
			if err != nil {
				return nil, fail(err)
			}
			cur = &setStats{n: v[0], members: v[1:]}
			var sum uint64
			for _, c := range cur.members {
				sum += c
			}
			if sum != cur.n {
				return nil, fail(fmt.Errorf("member counts add up to %d, not %d", sum, cur.n))
			}
			cs.sets[id] = cur
			continue
		}
		if cur == nil {
			return nil, fail(fmt.Errorf("context before the first set line"))
		}
		key, err := decodeCtx(first, f[0])
		if err != nil {
			return nil, fail(err)
		}
		v, err := nums(f[1:], 1+len(cur.members))
		if err != nil {
			return nil, fail(err)
		}
		c := ctxStat{key: key, count: v[0], members: v[1:]}
		var sum uint64
		for i, x := range c.members {
			sum += x
			if x > cur.members[i] {
				return nil, fail(fmt.Errorf("context count above the set's member count"))
			}
		}
		if sum != c.count || c.count == 0 {
			return nil, fail(fmt.Errorf("member counts add up to %d, not %d", sum, c.count))
		}
		if n := len(cur.ctxs); n > 0 && (cur.ctxs[n-1].count < c.count || cur.ctxs[n-1].count == c.count && cur.ctxs[n-1].key >= c.key) {
			return nil, fail(fmt.Errorf("contexts must be heaviest first, ties in byte order, each once"))
		}
		if len(cur.ctxs) == ctxMaxPerSet {
			return nil, fail(fmt.Errorf("more than %d contexts", ctxMaxPerSet))
		}
		cur.ctxs = append(cur.ctxs, c)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("watermark: context statistics: %w", err)
	}
	if line == 0 {
		return nil, fmt.Errorf("watermark: context statistics: empty")
	}
	for _, ss := range cs.sets {
		ss.reindex()
	}
	cs.setTotal()
	return cs, nil
}

// tiltMaxNum / tiltMaxDen bounds the tilt of a context that no member
// fits whole: a heavy context tilted all the way would spend its member's
// whole remaining share, leaving the set's lighter contexts no keyed draw,
// and the evidence a group gives is at most log(1/r), r its draw
// probability, however often a student repeats it.
const (
	tiltMaxNum = 1
	tiltMaxDen = 1
)

// tiltHeadNum / tiltHeadDen is the share of its member's headroom a
// partially tilted context spends (more only where the other members'
// caps need it; see partialTilt).
//
// A heavy context tilted as far as its member's cap allows spends all of
// the member's headroom, and every lighter context of the set, and the
// hashed tail, is then forced to the other members: they carry no
// evidence, and they are the groups a student reproduces (a group is
// worth at most log(1/r) nats however often a student repeats it, and
// the heavy context is one group). Spending half leaves the lighter
// contexts keyed draws, and moves fewer occurrences of the heavy context,
// which is also what a word-frequency comparison sees of the statistics'
// counting error (measured with the lab's power harness,
// lab/watermark_power.go: a quarter lost power, all of it visibility).
const (
	tiltHeadNum = 1
	tiltHeadDen = 2
)

// partialTilt is the numerator, over den = (w - c_m) units, of the tilt
// of a context (natural counts c, weight w) that member m's headroom h
// (h < den) does not let take whole: half the headroom, but at least one
// unit (a drawn member is written), and at least as much as keeps every
// other member's cap non-negative once it keeps its (1 - lambda) share
// of its natural count (so the caps still account exactly for what is
// written), and at most tiltMaxNum / tiltMaxDen.
func partialTilt(caps []int64, c *ctxStat, m int, h, den int64) int64 {
	num := max(h*tiltHeadNum/tiltHeadDen, 1)
	for i, cp := range caps {
		ci := int64(c.members[i]) * ctxUnit
		if i == m || ci == 0 {
			continue
		}
		// (den - num) / den * ci <= cp  <=>  num >= den - cp * den / ci.
		if need := den - max(cp, 0)*den/ci; need > num {
			num = need
		}
	}
	return min(num, h, den*tiltMaxNum/tiltMaxDen)
}

// setMinShareNum / setMinShareDen is the share of the statistics'
// candidate occurrences a unit needs to be marked at all.
//
// A word-frequency comparison of marked against unmarked text scores every
// set it has enough occurrences of alike (a chi-squared term per set), but
// a set's evidence in a suspect's outputs grows with how often the set
// occurs there. The marginals a set's assignment keeps are those of the
// statistics, which for a rare set are counted in few occurrences: its
// contexts' weights are off by a large share, and a comparison at a fair
// share of the statistics' size sees the error (a rare set's assignment
// swaps whole contexts, so every estimation error in a context's weight
// moves its members' shares). Rare sets are left unmarked: they cost the
// visibility of a frequent one and carry a small share of the evidence.
const (
	setMinShareNum = 1
	setMinShareDen = 400
)

// free marks a context the assignment leaves unmarked.
const free = 0xff

// full is the tilt threshold of a context that always takes its member.
const full = ^uint64(0)

// setPlan is one key's assignment for one set: the member of each seen
// context (or free) and how hard the context is tilted towards it, the
// tail's cumulative weights, and, for the verifier, each seen context's
// draw probabilities and the tilt each member would have had.
type setPlan struct {
	// off: the unit is left unmarked in every context (too rare in the
	// statistics to be worth its visibility; see setMinShare).
	off    bool
	choice []uint8
	// thr is the tilt of each seen context as a threshold on a 64-bit
	// PRF output: an occurrence takes the context's member when the PRF
	// of (context, the response before it) is below it, and keeps its
	// original word otherwise; full: always.
	thr  []uint64
	prob []float64 // len(choice) * members, verifier only
	lam  []float64 // tilt if member i were drawn, len(choice) * members, verifier only
	tail []uint64  // cumulative
	// Paired contexts (see pairPlan): partner is the other row of a
	// seen row's pair (-1: unpaired); away marks the row of a pair that
	// moves occurrences of its member to the others, in proportion to
	// split (cumulative, len(choice) * members); pairQ holds, for the
	// verifier, the marked distribution of a paired row under each of
	// the pair's 2 * members equally likely draws (len(choice) * 2 *
	// members * members, zero for unpaired rows).
	partner []int32
	away    []bool
	split   []uint64
	pairQ   []float64
}

// tailMember maps a PRF output to a tail member.
func (p *setPlan) tailMember(u uint64) int {
	hi, _ := bits.Mul64(u, p.tail[len(p.tail)-1])
	for i, c := range p.tail {
		if hi < c {
			return i
		}
	}
	return len(p.tail) - 1
}

// tailProb is the probability that a tail context draws member m.
func (p *setPlan) tailProb(m int) float64 {
	lo := uint64(0)
	if m > 0 {
		lo = p.tail[m-1]
	}
	return float64(p.tail[m]-lo) / float64(p.tail[len(p.tail)-1])
}

// ctxPRF is the keyed PRF of (set, context): the one input of every keyed
// choice of the lexical mark.
// The message is (set, slot, context): 3 bytes plus a context of at most
// maxCtx bytes.
func ctxPRF(p *prf, msg []byte, u uint32, ctx []byte) uint64 {
	binary.BigEndian.PutUint16(msg, uint16(u/numSlots))
	msg[2] = byte(u % numSlots)
	n := 3 + copy(msg[3:], ctx)
	return p.sum64(msg[:n])
}

func ctxPRFString(p *prf, msg []byte, u uint32, ctx string) uint64 {
	binary.BigEndian.PutUint16(msg, uint16(u/numSlots))
	msg[2] = byte(u % numSlots)
	n := 3 + copy(msg[3:], ctx)
	return p.sum64(msg[:n])
}

// prfMsgLen is the scratch a message needs.
const prfMsgLen = 3 + maxCtx

// choose is the key's member for unit u in context ctx, or -1 when the
// context is left unmarked; seen is the context's row, or -1 for the tail.
// A seen context may be tilted (plan.thr): the member is then written at a
// keyed share of its occurrences only (see tiltPRF).
func (l *Lexicon) choose(p *prf, msg []byte, plans []setPlan, u uint32, ctx []byte) (m int, seen int32) {
	plan := &plans[u]
	if plan.off {
		return -1, -1
	}
	if ss := l.stats(u); ss != nil {
		if j, ok := ss.index[string(ctx)]; ok {
			if c := plan.choice[j]; c != free {
				return int(c), j
			}
			return -1, j
		}
	}
	return plan.tailMember(ctxPRF(p, msg, u, ctx)), -1
}

// tiltThreshold is floor(2^64 num / den) for 0 <= num < den: the share
// num/den of 64-bit PRF outputs, in integer arithmetic so that every
// platform builds the same plan.
func tiltThreshold(num, den uint64) uint64 {
	q, _ := bits.Div64(num, 0, den)
	return q
}

// buildPlan runs the assignment described at the top of this file for one
// set under the key behind p. ss may be nil (no statistics: the table
// weights are the marginal and every context is in the tail).
//
// Each seen context j (weight w, natural counts c_i) draws its member m
// among the members with headroom h_i = caps[i] - c_i > 0 (room for more
// than the context's natural share), with probability h_i / sum h, and is
// tilted towards it as far as m's cap allows: a share lambda of its
// occurrences take m and the rest keep their natural word, so the context
// writes (1 - lambda) c_i + lambda w [i = m] of member i, with lambda =
// min(1, h_m / (w - c_m)). lambda = 1 is CATER's whole-context
// assignment; heavy contexts, which no member's cap fits whole, get a
// partial one instead of none. Conditional choices may be pushed this hard
// because CATER's invisibility constraint is on the marginals only (He et
// al., NeurIPS 2022, section 3), and the caps account for every written
// occurrence.
func buildPlan(p *prf, msg []byte, u uint32, ls *lexSet, cs *ContextStats, withProb bool) setPlan {
	nm := len(ls.members)
	var plan setPlan
	var ss *setStats
	if cs != nil {
		ss = cs.sets[u]
		if ss == nil || ss.n < cs.minCount() {
			plan.off = true
			return plan
		}
	}
	if ss == nil {
		plan.tail = make([]uint64, nm)
		for i, m := range ls.members {
			plan.tail[i] = m.cum
		}
		return plan
	}
	caps := make([]int64, nm)
	target := make([]int64, nm)
	for i, m := range ls.members {
		target[i] = int64(ss.members[i])*ctxUnit + int64(ctxPrior*m.weight/ls.total)
		caps[i] = target[i]
	}
	plan.choice = make([]uint8, len(ss.ctxs))
	plan.thr = make([]uint64, len(ss.ctxs))
	if withProb {
		plan.prob = make([]float64, len(ss.ctxs)*nm)
		plan.lam = make([]float64, len(ss.ctxs)*nm)
	}
	// lambda of member i in context c, as num/den (num >= den: whole).
	// The start of the text has no history to draw a share from (every
	// response would take the same decision there), so it is assigned
	// whole or not at all, as CATER's rule has it.
	start := string([]byte{ctxStart})
	tilt := func(c *ctxStat, i int) (num, den int64) {
		num, den = caps[i]-int64(c.members[i])*ctxUnit, int64(c.count-c.members[i])*ctxUnit
		if c.key == start && num < den {
			return 0, den
		}
		return num, den
	}
	paired := pairRows(ss, nm, cs.total)
	if len(paired) > 0 {
		plan.partner = make([]int32, len(ss.ctxs))
		for j := range plan.partner {
			plan.partner[j] = -1
		}
		plan.away = make([]bool, len(ss.ctxs))
		plan.split = make([]uint64, len(ss.ctxs)*nm)
		if withProb {
			plan.pairQ = make([]float64, len(ss.ctxs)*2*nm*nm)
		}
		for k := 0; k+1 < len(paired); k += 2 {
			a, b := paired[k], paired[k+1]
			plan.partner[a], plan.partner[b] = b, a
			// A pair keeps its members' counts (pairPlan), so the caps
			// of the other contexts are what is left of the natural
			// counts, as for a free context.
			for _, j := range [2]int32{a, b} {
				for i := range caps {
					caps[i] -= int64(ss.ctxs[j].members[i]) * ctxUnit
				}
			}
			plan.pairPlan(p, msg, u, ss, nm, a, b, withProb)
		}
	}
	for j := range ss.ctxs {
		c := &ss.ctxs[j]
		if plan.partner != nil && plan.partner[j] >= 0 {
			continue
		}
		var sum int64
		for i := range caps {
			if h, _ := tilt(c, i); h > 0 {
				sum += h
			}
		}
		if sum == 0 {
			plan.choice[j] = free
			for i := range caps {
				caps[i] -= int64(c.members[i]) * ctxUnit
			}
			continue
		}
		hi, _ := bits.Mul64(ctxPRFString(p, msg, u, c.key), uint64(sum))
		pick, acc := -1, uint64(0)
		for i := range caps {
			h, d := tilt(c, i)
			if h <= 0 {
				continue
			}
			if withProb {
				plan.prob[j*nm+i] = float64(h) / float64(sum)
				plan.lam[j*nm+i] = 1
				if h < d {
					plan.lam[j*nm+i] = float64(partialTilt(caps, c, i, h, d)) / float64(d)
				}
			}
			acc += uint64(h)
			if pick < 0 && hi < acc {
				pick = i
			}
		}
		plan.choice[j] = uint8(pick)
		num, den := tilt(c, pick)
		if num >= den {
			plan.thr[j] = full
			caps[pick] -= int64(c.count) * ctxUnit
			continue
		}
		num = partialTilt(caps, c, pick, num, den)
		plan.thr[j] = tiltThreshold(uint64(num), uint64(den))
		// The others keep (1 - lambda) of their natural counts; the drawn
		// member takes the rest of the context's weight, exactly its
		// headroom.
		moved := int64(0)
		for i := range caps {
			if i == pick {
				continue
			}
			keep := int64(c.members[i]) * ctxUnit * (den - num) / den
			moved += int64(c.members[i])*ctxUnit - keep
			caps[i] -= keep
		}
		caps[pick] -= int64(c.members[pick])*ctxUnit + moved
	}
	plan.tail = make([]uint64, nm)
	var acc uint64
	for i, cp := range caps {
		acc += uint64(max(cp, 0))
		plan.tail[i] = acc
	}
	if acc == 0 {
		acc = 0
		for i, t := range target {
			acc += uint64(t)
			plan.tail[i] = acc
		}
		if acc == 0 { // no counts and a zero prior: the table weights
			for i, m := range ls.members {
				plan.tail[i] = m.cum
			}
		}
	}
	return plan
}

// Pairs of heavy contexts.
//
// A heavy context tilted on its own spends its member's headroom: the
// marginal is kept by the caps, i.e. by forcing later contexts away from
// the member, and those forced contexts carry no evidence (every key
// forces them alike). Heavy contexts are instead tilted in pairs, in
// opposite directions (the pairing of compensating contexts CATER's
// marginal constraint allows: He et al., NeurIPS 2022, section 3): the
// key draws a member m and which row of the pair moves towards it; the
// "toward" row writes m at a share lambda of its other occurrences, the
// "away" row writes its occurrences of m as the other members, at a share
// mu, in the proportions the toward row took them in. Both move the same
// number of occurrences, delta, so every member's count is kept exactly
// (under the statistics), whatever the key drew, and both rows of the pair
// are evidence: two heavy groups, each of a draw among 2 * members equally
// likely outcomes, where a tilt alone gives one and forces others.

// pairShareDen: a context is paired when it holds at least 1/pairShareDen
// of the statistics' candidate occurrences (all units together, so the
// rule does not depend on how much text the statistics were counted in).
// A student must see a context often for the share it writes to show;
// lighter contexts are assigned whole by the caps, each a group of its
// own, which is worth more than a share of a pair (measured with the lab's
// power harness, lab/watermark_power.go: pairing down to 1/1000 lost
// power).
const pairShareDen = 330

// pairRows lists the rows to pair, heaviest first: contexts with at least
// 1/pairShareDen of the statistics' occurrences (total), except the start of the text (no history to
// draw a share from), in a unit of two or more members; an even number.
func pairRows(ss *setStats, nm int, total uint64) []int32 {
	if nm < 2 {
		return nil
	}
	var out []int32
	for j := range ss.ctxs {
		c := &ss.ctxs[j]
		if c.count*pairShareDen < total {
			break // heaviest first
		}
		if c.key == string([]byte{ctxStart}) {
			continue
		}
		out = append(out, int32(j))
	}
	return out[:len(out)&^1]
}

// pairPlan draws the key's tilt of the pair (a, b).
func (plan *setPlan) pairPlan(p *prf, msg []byte, u uint32, ss *setStats, nm int, a, b int32, withProb bool) {
	draws := uint64(2 * nm)
	hi, _ := bits.Mul64(ctxPRFString(p, msg, u, ss.ctxs[a].key), draws)
	// delta of draw d = (member d/2, toward row a when d is even).
	shares := func(d int) (m int, t, w int32, capT, capW uint64) {
		m, t, w = d/2, a, b
		if d%2 == 1 {
			t, w = b, a
		}
		ct, cw := &ss.ctxs[t], &ss.ctxs[w]
		return m, t, w, ct.count - ct.members[m], cw.members[m]
	}
	if withProb {
		for d := 0; d < int(draws); d++ {
			m, t, w, capT, capW := shares(d)
			delta := min(capT, capW)
			for _, row := range [2]int32{t, w} {
				c := &ss.ctxs[row]
				q := plan.pairQ[(int(row)*int(draws)+d)*nm:][:nm]
				for i := range q {
					q[i] = float64(c.members[i]) / float64(c.count)
				}
				if delta == 0 {
					continue
				}
				if row == t {
					lam := float64(delta) / float64(capT)
					nat := q[m]
					for i := range q {
						q[i] *= 1 - lam
					}
					q[m] = nat + lam*float64(capT)/float64(c.count)
				} else {
					ct := &ss.ctxs[t]
					moved := float64(delta) / float64(c.count)
					q[m] -= moved
					for i := range q {
						if i != m {
							q[i] += moved * float64(ct.members[i]) / float64(capT)
						}
					}
				}
			}
		}
		for _, row := range [2]int32{a, b} {
			for i := 0; i < nm; i++ {
				plan.prob[int(row)*nm+i] = 1 / float64(nm)
			}
		}
	}
	m, t, w, capT, capW := shares(int(hi))
	delta := min(capT, capW)
	if delta == 0 {
		plan.choice[t], plan.choice[w] = free, free
		return
	}
	plan.choice[t], plan.choice[w] = uint8(m), uint8(m)
	plan.away[w] = true
	share := func(num, den uint64) uint64 {
		if num >= den {
			return full
		}
		return tiltThreshold(num, den)
	}
	plan.thr[t], plan.thr[w] = share(delta, capT), share(delta, capW)
	var acc uint64
	ct := &ss.ctxs[t]
	for i := 0; i < nm; i++ {
		if i != m {
			acc += ct.members[i]
		}
		plan.split[int(w)*nm+i] = acc
	}
}

// awayMember maps a PRF output to the member an away row writes for an
// occurrence of its member (row j).
func (plan *setPlan) awayMember(j int32, nm int, u uint64) int {
	cum := plan.split[int(j)*nm:][:nm]
	hi, _ := bits.Mul64(u, cum[nm-1])
	for i, c := range cum {
		if hi < c {
			return i
		}
	}
	return nm - 1
}

// plans builds a key's plan for every unit of lex, indexed by unitOf.
func (l *Lexicon) plans(k *Key, withProb bool) []setPlan {
	p := prf{block: k.lexBlock, macKey: k.lexMAC}
	var msg [prfMsgLen]byte
	out := make([]setPlan, len(l.sets)*numSlots)
	for u := range out {
		out[u] = buildPlan(&p, msg[:], uint32(u), &l.sets[u/numSlots], l.ctx, withProb)
	}
	return out
}

func (l *Lexicon) stats(u uint32) *setStats {
	if l.ctx == nil {
		return nil
	}
	return l.ctx.sets[u]
}

// Assignment describes a key's frequency-preserving assignment over the
// lexicon's context statistics, as shares of the candidate occurrences
// counted there: in contexts left unmarked (Free), in contexts where only
// one member fits its weight (Forced: marked, but the same for every key),
// in contexts whose member is a keyed draw among two or more (Keyed), and
// in the hashed tail (Tail). Keyed and Tail carry the evidence. Tilted is
// the part of Keyed whose contexts take their member at a share of their
// occurrences only (heavy contexts no member fits whole).
type Assignment struct {
	Units                     int
	Free, Forced, Keyed, Tail float64
	Tilted                    float64
}

// Assignment summarises the marker's assignment.
func (m *Marker) Assignment() Assignment {
	var a Assignment
	if m.lex.ctx == nil {
		a.Tail = 1
		return a
	}
	plans := m.lex.plans(m.key, true)
	var total float64
	for u, ss := range m.lex.ctx.sets {
		a.Units++
		plan := &plans[u]
		if plan.off {
			a.Free += float64(ss.n)
			total += float64(ss.n)
			continue
		}
		nm := len(ss.members)
		seen := 0.0
		for j, c := range ss.ctxs {
			w := float64(c.count)
			seen += w
			if plan.choice[j] == free {
				a.Free += w
				continue
			}
			allowed := 0
			for i := 0; i < nm; i++ {
				if plan.prob[j*nm+i] > 0 {
					allowed++
				}
			}
			if allowed > 1 {
				a.Keyed += w
				if plan.thr[j] != full {
					a.Tilted += w
				}
			} else {
				a.Forced += w
			}
		}
		a.Tail += float64(ss.n) - seen
		total += float64(ss.n)
	}
	if total > 0 {
		a.Free, a.Forced, a.Keyed, a.Tail, a.Tilted = a.Free/total, a.Forced/total, a.Keyed/total, a.Tail/total, a.Tilted/total
	}
	return a
}
