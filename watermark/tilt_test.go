package watermark

import (
	"bytes"
	"fmt"
	"math"
	"testing"
)

// tiltedUnit finds, in the embedded statistics under key k, a seen context
// the plan tilts (0 < lambda < 1) and returns its unit, row and lambda.
func tiltedUnit(t *testing.T, lex *Lexicon, k *Key) (u uint32, row int, lam float64) {
	t.Helper()
	plans := lex.plans(k, true)
	for id, ss := range lex.ctx.sets {
		plan := &plans[id]
		if plan.off {
			continue
		}
		nm := len(ss.members)
		for j := range ss.ctxs {
			if plan.partner != nil && plan.partner[j] >= 0 {
				continue // paired: TestPairShares
			}
			if c := plan.choice[j]; c != free && plan.thr[j] != full && ss.ctxs[j].key == string([]byte{ctxPunct, '\n'}) {
				return id, j, plan.lam[j*nm+int(c)]
			}
		}
	}
	t.Fatal("no tilted line-feed context in the embedded statistics")
	return 0, 0, 0
}

// TestTiltShare: a tilted context writes the key's member at its lambda
// share of the occurrences whose word was another member, drawn from the
// tokens before the context (so the share holds over varied text), and
// leaves the rest as they were; threshold and lambda agree.
func TestTiltShare(t *testing.T) {
	lex := DefaultLexicon()
	k := testKey(t, "tilt", 11)
	u, row, lam := tiltedUnit(t, lex, k)
	plan := lex.plans(k, false)[u]
	if got := float64(plan.thr[row]) / math.Exp2(64); math.Abs(got-lam) > 1e-9 {
		t.Fatalf("threshold share %v, lambda %v", got, lam)
	}
	set := &lex.sets[u/numSlots]
	slot := u % numSlots
	pick := int(plan.choice[row])
	other := (pick + 1) % len(set.members)
	word := set.members[other].forms[slot]
	// n lines "<w1> <w2>.\n<word> ..." with varied preceding words: each
	// line feed is the tilted context of one occurrence of word.
	var b bytes.Buffer
	const n = 4000
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "zq%d xv%d.\n%s ", i%97, i, word)
	}
	out, st := NewMarker(lex, k).Mark(b.Bytes())
	if st.Candidates < n {
		t.Fatalf("%d candidates, want at least %d", st.Candidates, n)
	}
	moved := bytes.Count(out, []byte("\n"+set.members[pick].forms[slot]+" "))
	kept := bytes.Count(out, []byte("\n"+word+" "))
	if moved+kept != n {
		t.Fatalf("moved %d + kept %d != %d: a line-feed occurrence became a third member", moved, kept, n)
	}
	share := float64(moved) / n
	if se := math.Sqrt(lam * (1 - lam) / n); math.Abs(share-lam) > 4*se {
		t.Errorf("tilted share %.4f, lambda %.4f (4 s.e. = %.4f)", share, lam, 4*se)
	}
	// Marking is idempotent: the history is canonical (a set member is
	// its set), so marked text takes the same decisions again.
	again, _ := NewMarker(lex, k).Mark(out)
	if !bytes.Equal(again, out) {
		t.Error("marking marked text changed it")
	}
	// The same text under another key tilts elsewhere, or by another share.
	if o2, _ := NewMarker(lex, testKey(t, "tilt2", 12)).Mark(b.Bytes()); bytes.Equal(o2, out) {
		t.Error("two keys, one marking")
	}
}

// TestTiltBlockDomain: a tilt block is never a block of a short message
// (their first byte is the length, at most 15), so the tilt PRF and the
// context PRF are independent functions of the key.
func TestTiltBlockDomain(t *testing.T) {
	k := testKey(t, "", 3)
	p := prf{block: k.lexBlock, macKey: k.lexMAC}
	a := p.tilt(unitOf(1, 2), 3, 0x0102030405060708)
	if p.in[0] != tiltTag || tiltTag <= 15 {
		t.Fatalf("tag %x", p.in[0])
	}
	msg := append([]byte(nil), p.in[1:]...)
	if b := p.sum64(msg); b == a {
		t.Error("tilt block equals the plain block of the same bytes")
	}
	if p.tilt(unitOf(1, 2), 3, 0x0102030405060708) != a || p.tilt(unitOf(1, 2), 4, 0x0102030405060708) == a {
		t.Error("tilt PRF is not a function of its inputs")
	}
}

// ctxPrefix is text that ends in the context key (line i of a test text:
// the words before it vary, so every occurrence has its own history), or
// false for a context no plain text ends in here.
func ctxPrefix(key string, i int) (string, bool) {
	switch {
	case key == "" || key[0] == ctxStart || key[0] == ctxSet:
		return "", false
	case key[0] == ctxPunct:
		return fmt.Sprintf("zq%d xv%d%s ", i%97, i, key[1:]), true
	}
	return fmt.Sprintf("zq%d xv%d %s ", i%97, i, key), true
}

// TestPairShares: the two rows of a pair move the same number of
// occurrences in opposite directions. The toward row writes its member
// for a share lambda of the other members' occurrences, the away row
// writes its member's occurrences as the other members at a share mu, and
// lambda (w_t - c_tm) = mu c_wm: over the statistics, the member's count
// is kept.
func TestPairShares(t *testing.T) {
	lex := DefaultLexicon()
	k := testKey(t, "pair", 5)
	plans := lex.plans(k, false)
	checked := 0
	for u, ss := range lex.ctx.sets {
		plan := &plans[u]
		if plan.off || plan.partner == nil {
			continue
		}
		set := &lex.sets[u/numSlots]
		slot := u % numSlots
		nm := len(set.members)
		for j := range ss.ctxs {
			w := plan.partner[j]
			if w < 0 || !plan.away[w] || plan.choice[j] == free {
				continue
			}
			tRow, wRow := &ss.ctxs[j], &ss.ctxs[w]
			m := int(plan.choice[j])
			share := func(thr uint64) float64 {
				if thr == full {
					return 1
				}
				return float64(thr) / math.Exp2(64)
			}
			lam, mu := share(plan.thr[j]), share(plan.thr[w])
			if d := lam*float64(tRow.count-tRow.members[m]) - mu*float64(wRow.members[m]); math.Abs(d) > 1e-6 {
				t.Errorf("unit %d rows %d/%d: toward moves %v, away %v", u, j, w, lam*float64(tRow.count-tRow.members[m]), mu*float64(wRow.members[m]))
			}
			// The away row, in text: occurrences of m after its
			// context become other members at share mu.
			const n = 3000
			var b bytes.Buffer
			ok := true
			for i := 0; i < n && ok; i++ {
				var pre string
				pre, ok = ctxPrefix(wRow.key, i)
				b.WriteString(pre + set.members[m].forms[slot] + " .\n")
			}
			if !ok {
				continue
			}
			out, _ := NewMarker(lex, k).Mark(b.Bytes())
			kept := bytes.Count(out, []byte(" "+set.members[m].forms[slot]+" .\n"))
			moved := 0
			for i := 0; i < nm; i++ {
				if i != m {
					moved += bytes.Count(out, []byte(" "+set.members[i].forms[slot]+" .\n"))
				}
			}
			if kept+moved != n {
				t.Fatalf("unit %d: kept %d + moved %d != %d", u, kept, moved, n)
			}
			got := float64(moved) / n
			if se := math.Sqrt(mu*(1-mu)/n) + 1e-9; math.Abs(got-mu) > 4*se {
				t.Errorf("unit %d away row %q: moved share %.4f, mu %.4f", u, wRow.key, got, mu)
			}
			if again, _ := NewMarker(lex, k).Mark(out); !bytes.Equal(again, out) {
				t.Errorf("unit %d: marking marked text changed it", u)
			}
			checked++
		}
	}
	if checked == 0 {
		t.Fatal("no pair with a plain-text away context in the embedded statistics")
	}
}
