package watermark

import (
	"fmt"
	"strconv"
	"strings"
)

// Form slots. A set's members are substituted form for form: "bought" is
// replaced by another member's past form, never its base form.
const (
	slotBase = iota // base form (adverb, adjective, singular noun, verb base)
	slotS           // plural noun, 3rd person singular verb, comparative adjective
	slotPast        // past tense, superlative adjective
	slotPP          // past participle
	slotIng         // present participle
	numSlots
)

// maxWord is the longest word the marker holds back (and the longest
// surface in the table); longer words pass through at once.
const maxWord = 24

// Lexicon is the parsed synonym table: sets of members, and every usable
// surface form mapped to (set, member, slot). Immutable after parsing;
// shared by every Marker and Verifier built from it.
type Lexicon struct {
	sets  []lexSet
	words map[string]lexEntry
	// surfaces counts the substitutable surface forms.
	surfaces int
	// ctx holds the context statistics the frequency-preserving
	// assignment works from (nil: table weights, every context hashed).
	ctx *ContextStats
}

type lexSet struct {
	members []lexMember
	total   uint64 // sum of weights
	// mixedOnset: members differ in a/an onset, so the set is never
	// substituted right after "a" or "an".
	mixedOnset bool
	line       int
}

type lexMember struct {
	forms  [numSlots]string
	weight uint64
	cum    uint64 // sum of weights up to and including this member
}

type lexEntry struct {
	set    uint16
	member uint8
	slot   uint8
}

// DefaultLexicon parses the embedded synonym table and attaches the
// embedded context statistics (contextTable, built from the prompt corpora
// by TestContextTableGolden). Both are constants checked by the tests, so
// a parse error is a programming error.
func DefaultLexicon() *Lexicon {
	l, err := ParseLexicon(synonymTable)
	if err != nil {
		panic(err)
	}
	cs, err := ParseContextStats(l, []byte(contextTable))
	if err != nil {
		panic(err)
	}
	return l.WithContextStats(cs)
}

// WithContextStats returns a lexicon sharing l's sets that marks with the
// frequency-preserving assignment over cs (parsed or built for l); nil
// turns it off: members are drawn by table weight in every context.
func (l *Lexicon) WithContextStats(cs *ContextStats) *Lexicon {
	c := *l
	c.ctx = cs
	return &c
}

// ContextStats returns the statistics the lexicon marks with (nil: none).
func (l *Lexicon) ContextStats() *ContextStats { return l.ctx }

// Sets is the number of synonym sets with at least one substitutable form.
func (l *Lexicon) Sets() int { return len(l.sets) }

// Surfaces is the number of distinct substitutable surface forms.
func (l *Lexicon) Surfaces() int { return l.surfaces }

// Lookup reports whether word (lower case) is a substitutable surface, and
// the forms the same slot takes for every member of its set.
func (l *Lexicon) Lookup(word string) (alternatives []string, ok bool) {
	e, ok := l.words[word]
	if !ok {
		return nil, false
	}
	for _, m := range l.sets[e.set].members {
		alternatives = append(alternatives, m.forms[e.slot])
	}
	return alternatives, true
}

// slotsFor returns the slots a part of speech inflects for, and the names
// the table uses for them.
func slotsFor(pos byte) (slots []int, names []string, ok bool) {
	switch pos {
	case 'r', 'a':
		return []int{slotBase}, []string{"base"}, true
	case 'A':
		return []int{slotBase, slotS, slotPast}, []string{"base", "er", "est"}, true
	case 'n':
		return []int{slotBase, slotS}, []string{"sg", "pl"}, true
	case 'v':
		return []int{slotBase, slotS, slotPast, slotPP, slotIng}, []string{"base", "s", "past", "pp", "ing"}, true
	}
	return nil, nil, false
}

type rawSet struct {
	pos     byte
	allowed [numSlots]bool
	members []lexMember
	line    int
}

// ParseLexicon parses a synonym table in the format documented at
// synonymTable and keeps only the slots that are unambiguous: a slot is
// dropped when one of its surface forms also occurs in another set, another
// member, or another slot with a different realisation, so a substituted word
// always maps back to the same (set, slot) and the next word's context is
// unchanged by the substitution.
func ParseLexicon(table string) (*Lexicon, error) {
	var raws []rawSet
	for i, line := range strings.Split(table, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		rs, err := parseSetLine(line)
		if err != nil {
			return nil, fmt.Errorf("watermark: synonym table line %d: %w", i+1, err)
		}
		rs.line = i + 1
		raws = append(raws, rs)
	}
	// occurrences of every surface in an allowed slot
	type occ struct{ set, member, slot int }
	occs := map[string][]occ{}
	for si, rs := range raws {
		for mi, m := range rs.members {
			for slot, ok := range rs.allowed {
				if ok {
					occs[m.forms[slot]] = append(occs[m.forms[slot]], occ{si, mi, slot})
				}
			}
		}
	}
	usable := func(si, slot int) bool {
		rs := raws[si]
		for mi, m := range rs.members {
			for _, o := range occs[m.forms[slot]] {
				if o.set != si || o.member != mi {
					return false
				}
				for _, m2 := range rs.members {
					if m2.forms[o.slot] != m2.forms[slot] {
						return false
					}
				}
			}
		}
		return true
	}
	l := &Lexicon{words: map[string]lexEntry{}}
	for si, rs := range raws {
		var any bool
		id := len(l.sets)
		for slot, ok := range rs.allowed {
			if !ok || !usable(si, slot) {
				continue
			}
			for mi, m := range rs.members {
				w := m.forms[slot]
				if _, dup := l.words[w]; dup {
					continue // same realisation in an equivalent slot
				}
				l.words[w] = lexEntry{set: uint16(id), member: uint8(mi), slot: uint8(slot)}
				l.surfaces++
			}
			any = true
		}
		if !any {
			continue
		}
		s := lexSet{members: rs.members, line: rs.line}
		on := onsetVowel(rs.members[0].forms[slotBase])
		for i := range s.members {
			s.total += s.members[i].weight
			s.members[i].cum = s.total
			if onsetVowel(s.members[i].forms[slotBase]) != on {
				s.mixedOnset = true
			}
		}
		l.sets = append(l.sets, s)
	}
	if len(l.sets) > 1<<16 {
		return nil, fmt.Errorf("watermark: %d synonym sets, at most %d", len(l.sets), 1<<16)
	}
	return l, nil
}

func parseSetLine(line string) (rawSet, error) {
	f := strings.Fields(line)
	head := f[0]
	var rs rawSet
	rs.pos = head[0]
	slots, names, ok := slotsFor(rs.pos)
	if !ok {
		return rs, fmt.Errorf("unknown part of speech %q", head[:1])
	}
	if rest := head[1:]; rest != "" {
		list, ok := strings.CutPrefix(rest, "[")
		list, ok2 := strings.CutSuffix(list, "]")
		if !ok || !ok2 {
			return rs, fmt.Errorf("bad slot list %q", rest)
		}
		for _, name := range strings.Split(list, ",") {
			found := false
			for i, n := range names {
				if n == name {
					rs.allowed[slots[i]] = true
					found = true
				}
			}
			if !found {
				return rs, fmt.Errorf("slot %q is not one of %v", name, names)
			}
		}
	} else {
		for _, s := range slots {
			rs.allowed[s] = true
		}
	}
	if len(f) < 3 {
		return rs, fmt.Errorf("a set needs at least two members")
	}
	if len(f)-1 > 255 {
		return rs, fmt.Errorf("too many members")
	}
	seen := map[string]bool{}
	for _, spec := range f[1:] {
		word, ws, ok := strings.Cut(spec, ":")
		if !ok {
			return rs, fmt.Errorf("member %q has no weight", spec)
		}
		w, err := strconv.ParseUint(ws, 10, 32)
		if err != nil || w == 0 {
			return rs, fmt.Errorf("member %q: weight must be a positive integer", spec)
		}
		m := lexMember{weight: w}
		if err := inflect(rs.pos, strings.Split(word, "|"), &m.forms); err != nil {
			return rs, fmt.Errorf("member %q: %w", spec, err)
		}
		for _, s := range slots {
			form := m.forms[s]
			if len(form) < 2 || len(form) > maxWord || !isLowerASCII(form) {
				return rs, fmt.Errorf("member %q: form %q must be 2-%d lower-case ASCII letters", spec, form, maxWord)
			}
		}
		if seen[m.forms[slotBase]] {
			return rs, fmt.Errorf("member %q appears twice", spec)
		}
		seen[m.forms[slotBase]] = true
		rs.members = append(rs.members, m)
	}
	// Members must differ in every allowed slot.
	for slot, ok := range rs.allowed {
		if !ok {
			continue
		}
		forms := map[string]bool{}
		for _, m := range rs.members {
			if forms[m.forms[slot]] {
				return rs, fmt.Errorf("two members share the form %q", m.forms[slot])
			}
			forms[m.forms[slot]] = true
		}
	}
	return rs, nil
}

func isLowerASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 'a' || s[i] > 'z' {
			return false
		}
	}
	return true
}

// onsetVowel reports whether a word takes "an": a vowel letter, except the
// usual y-sound and w-sound onsets, plus the silent-h words.
func onsetVowel(w string) bool {
	for _, p := range []string{"hon", "hour", "heir"} {
		if strings.HasPrefix(w, p) {
			return true
		}
	}
	for _, p := range []string{"uni", "use", "usu", "uti", "ute", "eu", "one", "once"} {
		if strings.HasPrefix(w, p) {
			return false
		}
	}
	return strings.IndexByte("aeiou", w[0]) >= 0
}
