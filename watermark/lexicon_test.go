package watermark

import (
	"strings"
	"testing"
)

func TestDefaultLexiconInvariants(t *testing.T) {
	l := DefaultLexicon()
	if l.Sets() < 200 {
		t.Errorf("%d synonym sets, want at least 200", l.Sets())
	}
	for w, e := range l.words {
		s := &l.sets[e.set]
		if len(s.members) < 2 {
			t.Fatalf("set of %q has %d members", w, len(s.members))
		}
		if s.members[e.member].forms[e.slot] != w {
			t.Errorf("%q maps to member %q slot %d = %q", w, s.members[e.member].forms[0], e.slot, s.members[e.member].forms[e.slot])
		}
		// Round trip: every member's form in this slot is a surface of
		// the same set and slot class, so a substitution never changes
		// the next word's context.
		for mi, m := range s.members {
			r := m.forms[e.slot]
			e2, ok := l.words[r]
			if !ok || e2.set != e.set || int(e2.member) != mi {
				t.Errorf("%q -> %q does not map back to set %d member %d (got %+v, %v)", w, r, e.set, mi, e2, ok)
				continue
			}
			for mj, m2 := range s.members {
				if m2.forms[e2.slot] != m2.forms[e.slot] {
					t.Errorf("%q and %q: member %d differs between slots %d and %d", w, r, mj, e.slot, e2.slot)
				}
			}
		}
		if len(w) > maxWord || !isLowerASCII(w) {
			t.Errorf("surface %q", w)
		}
	}
	// a/an onset is flagged where members differ.
	for _, c := range []struct {
		word  string
		mixed bool
	}{{"expensive", true}, {"big", false}, {"honest", true}, {"useful", false}, {"therefore", false}} {
		e, ok := l.words[c.word]
		if !ok {
			t.Fatalf("%q not in lexicon", c.word)
		}
		if got := l.sets[e.set].mixedOnset; got != c.mixed {
			t.Errorf("%q: mixedOnset = %v, want %v", c.word, got, c.mixed)
		}
	}
	// Slot restrictions: noun readings of verbs are not substituted.
	for _, w := range []string{"purchase", "purchases", "buy", "need", "use", "used", "building", "gathering", "understanding", "remains"} {
		if _, ok := l.words[w]; ok {
			t.Errorf("%q must not be substitutable", w)
		}
	}
	for _, w := range []string{"bought", "purchased", "purchasing", "larger", "biggest", "children", "kids", "permitted", "occurring", "trousers"} {
		if _, ok := l.words[w]; !ok {
			t.Errorf("%q should be substitutable", w)
		}
	}
	alts, ok := l.Lookup("bigger")
	if !ok || strings.Join(alts, ",") != "bigger,larger" {
		t.Errorf("Lookup(bigger) = %v, %v", alts, ok)
	}
}

func TestParseLexiconErrors(t *testing.T) {
	for _, c := range []struct{ table, want string }{
		{"x big:1 large:1", "unknown part of speech"},
		{"a big:1", "at least two members"},
		{"a big:0 large:1", "positive integer"},
		{"a big large:1", "no weight"},
		{"a Big:1 large:1", "lower-case"},
		{"v[past,foo] buy:1 purchase:1", "slot \"foo\""},
		{"a big:1 big:2", "twice"},
		{"v[past] put|put|put:1 set|set|set:1 put|put|put:3", "twice"},
		{"r quickly|fast:1 rapidly:1", "one form"},
	} {
		if _, err := ParseLexicon(c.table); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseLexicon(%q) error = %v, want %q", c.table, err, c.want)
		}
	}
	// Ambiguous surfaces are dropped, not errors: "fair" in two sets.
	l, err := ParseLexicon("a fair:1 just:1\na fair:1 blonde:1\na big:1 large:1")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := l.words["fair"]; ok {
		t.Error("a surface in two sets must be dropped")
	}
	if l.Sets() != 1 {
		t.Errorf("Sets() = %d, want 1 (only big/large survives)", l.Sets())
	}
}

func TestInflect(t *testing.T) {
	for _, c := range []struct {
		pos   byte
		spec  string
		forms [numSlots]string
	}{
		{'v', "try", [numSlots]string{"try", "tries", "tried", "tried", "trying"}},
		{'v', "stay", [numSlots]string{"stay", "stays", "stayed", "stayed", "staying"}},
		{'v', "use", [numSlots]string{"use", "uses", "used", "used", "using"}},
		{'v', "reach", [numSlots]string{"reach", "reaches", "reached", "reached", "reaching"}},
		{'v', "see|saw|seen", [numSlots]string{"see", "sees", "saw", "seen", "seeing"}},
		{'v', "tie", [numSlots]string{"tie", "ties", "tied", "tied", "tying"}},
		{'v', "occur|occurred|occurred|occurring", [numSlots]string{"occur", "occurs", "occurred", "occurred", "occurring"}},
		{'n', "baby", [numSlots]string{"baby", "babies"}},
		{'n', "box", [numSlots]string{"box", "boxes"}},
		{'n', "child|children", [numSlots]string{"child", "children"}},
		{'A', "large", [numSlots]string{"large", "larger", "largest"}},
		{'A', "happy", [numSlots]string{"happy", "happier", "happiest"}},
		{'A', "big|bigger|biggest", [numSlots]string{"big", "bigger", "biggest"}},
		{'r', "often", [numSlots]string{"often"}},
	} {
		var got [numSlots]string
		if err := inflect(c.pos, strings.Split(c.spec, "|"), &got); err != nil {
			t.Fatalf("%c %s: %v", c.pos, c.spec, err)
		}
		if got != c.forms {
			t.Errorf("%c %s: %q, want %q", c.pos, c.spec, got, c.forms)
		}
	}
}

func TestTailFollowsWeights(t *testing.T) {
	// Without statistics a set's plan is its table weights: PRF outputs
	// map to members in those proportions.
	l, err := ParseLexicon("a big:3 large:1")
	if err != nil {
		t.Fatal(err)
	}
	plan := buildPlan(nil, nil, unitOf(0, slotBase), &l.sets[0], nil, false)
	if plan.tailMember(0) != 0 || plan.tailMember(^uint64(0)) != 1 {
		t.Error("extreme PRF outputs must pick the first and last member")
	}
	// The boundary sits at 3/4 of the 64-bit range.
	b := uint64(3) << 62
	if plan.tailMember(b-1) != 0 || plan.tailMember(b) != 1 {
		t.Errorf("boundary misplaced: %d %d", plan.tailMember(b-1), plan.tailMember(b))
	}
	if plan.tailProb(0) != 0.75 || plan.tailProb(1) != 0.25 {
		t.Errorf("prob = %v, %v", plan.tailProb(0), plan.tailProb(1))
	}
}
