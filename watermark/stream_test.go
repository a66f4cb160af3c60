package watermark

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

// markAll marks text with n keys and returns the distinct outputs. The
// lexicon has no context statistics (every member is drawn by table weight
// in every context), so the scanner's choices are what is tested.
func markAll(t *testing.T, text string, n int) map[string]bool {
	t.Helper()
	lex, err := ParseLexicon(synonymTable)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for i := 0; i < n; i++ {
		got, _ := NewMarker(lex, testKey(t, "", uint64(i))).Mark([]byte(text))
		out[string(got)] = true
	}
	return out
}

func TestStreamSubstitutes(t *testing.T) {
	// Under enough keys every member of the set shows up, in the original
	// casing and with every other byte unchanged.
	for _, c := range []struct {
		in   string
		want []string
	}{
		{"Big dog.", []string{"Big dog.", "Large dog."}},
		{"BIG dog!", []string{"BIG dog!", "LARGE dog!"}},
		{"a big dog", []string{"a big dog", "a large dog"}},
		{"the bigger one", []string{"the bigger one", "the larger one"}},
		{"He bought it.", []string{"He bought it.", "He purchased it."}},
		{"kids, (children) and “kids”", nil}, // checked below: in-set only
		{"so therefore: go", []string{"so therefore: go", "so thus: go", "so hence: go", "so consequently: go"}},
		{"**big**", []string{"**big**", "**large**"}},
		{"big\n", []string{"big\n", "large\n"}},
		{"big—and", []string{"big—and", "large—and"}},
	} {
		got := markAll(t, c.in, 64)
		if c.want == nil {
			continue
		}
		want := map[string]bool{}
		for _, w := range c.want {
			want[w] = true
		}
		for g := range got {
			if !want[g] {
				t.Errorf("%q: unexpected output %q", c.in, g)
			}
		}
		if len(got) != len(want) {
			t.Errorf("%q: %d distinct outputs over 64 keys, want %d (%v)", c.in, len(got), len(want), got)
		}
	}
}

func TestStreamLeavesAlone(t *testing.T) {
	// No key ever changes these: compounds, contractions, code, URLs,
	// proper nouns, mixed case, digits, non-ASCII letters, and a set whose
	// members differ in a/an after an article.
	for _, in := range []string{
		"big-ticket", "well-big", "big's", "big’s", "don't-big", "big_var", "x/big", "big/large",
		"`big` and `quickly`", "```\nbig dog\nquickly\n```", "http://example.com/big", "user@big",
		"We walked down Main Street", "and Big Ben", "BiG", "big2", "2big", "bigé", "ébig",
		"an expensive dog", "An expensive dog", "a costly dog", "#big", "$big", "big%", "big=1", "<big>",
	} {
		if got := markAll(t, in, 48); len(got) != 1 || !got[in] {
			t.Errorf("%q changed: %v", in, got)
		}
	}
	// ... while the same words elsewhere do change under some key.
	for _, in := range []string{"very expensive dog", "`x` big dog", "```\ncode\n```\nbig dog", "Note. Main point"} {
		if got := markAll(t, in, 48); len(got) < 2 {
			t.Errorf("%q never changed under 48 keys", in)
		}
	}
}

// applySubs rebuilds the output from the input and the substitutions, so
// every byte outside a substituted word must match.
func applySubs(t *testing.T, lex *Lexicon, in, out []byte, subs []Substitution) {
	t.Helper()
	var rebuilt []byte
	var pos int64
	var outPos int64
	for _, s := range subs {
		if s.In.Start < pos || s.In.End > int64(len(in)) || s.Out.End > int64(len(out)) {
			t.Fatalf("substitution %+v out of range (in %d, out %d bytes)", s, len(in), len(out))
		}
		rebuilt = append(rebuilt, in[pos:s.In.Start]...)
		if int64(len(rebuilt)) != s.Out.Start {
			t.Fatalf("substitution %+v: output offset %d, rebuilt %d", s, s.Out.Start, len(rebuilt))
		}
		orig := strings.ToLower(string(in[s.In.Start:s.In.End]))
		repl := string(out[s.Out.Start:s.Out.End])
		alts, ok := lex.Lookup(orig)
		if !ok || !contains(alts, strings.ToLower(repl)) || strings.ToLower(repl) == orig {
			t.Fatalf("%q replaced by %q: not another member of its set (%v)", orig, repl, alts)
		}
		if caseOf([]byte(repl)) != caseOf(in[s.In.Start:s.In.End]) {
			t.Fatalf("%q replaced by %q: casing changed", in[s.In.Start:s.In.End], repl)
		}
		rebuilt = append(rebuilt, repl...)
		pos, outPos = s.In.End, s.Out.End
	}
	_ = outPos
	rebuilt = append(rebuilt, in[pos:]...)
	if !bytes.Equal(rebuilt, out) {
		t.Fatalf("bytes outside substitutions changed:\n in  %q\n out %q\n rebuilt %q", in, out, rebuilt)
	}
}

func contains(s []string, w string) bool {
	for _, x := range s {
		if x == w {
			return true
		}
	}
	return false
}

// streamSplit marks text in random fragments and checks the per-fragment
// contract: held bytes bounded, substitution offsets consistent.
func streamSplit(t *testing.T, m *Marker, text []byte, r *rand.Rand, maxFrag int) ([]byte, []Substitution) {
	t.Helper()
	s := m.NewStream()
	var out []byte
	var subs []Substitution
	var fed int64
	for rest := text; len(rest) > 0; {
		n := min(1+r.IntN(maxFrag), len(rest))
		before := len(out)
		out = s.Write(out, rest[:n])
		fed += int64(n)
		rest = rest[n:]
		subs = append(subs, s.Substitutions()...)
		if h := s.Held(); h > maxWord+utf8.UTFMax-1 {
			t.Fatalf("held %d bytes", h)
		}
		// Everything not held has been emitted (lengths differ only by
		// the substitutions so far).
		var delta int64
		for _, sb := range subs {
			delta += (sb.Out.End - sb.Out.Start) - (sb.In.End - sb.In.Start)
		}
		if int64(len(out)) != fed-int64(s.Held())+delta {
			t.Fatalf("emitted %d bytes, fed %d, held %d, delta %d", len(out), fed, s.Held(), delta)
		}
		for _, sb := range s.Substitutions() {
			if sb.Out.Start < int64(before) {
				t.Fatalf("substitution %+v reported for bytes emitted by an earlier call", sb)
			}
		}
	}
	out = s.Flush(out)
	subs = append(subs, s.Substitutions()...)
	if s.Held() != 0 {
		t.Fatalf("held %d after Flush", s.Held())
	}
	return out, subs
}

func TestStreamFragmentationInvariant(t *testing.T) {
	lex := DefaultLexicon()
	m := NewMarker(lex, testKey(t, "", 7))
	texts := [][]byte{
		synthText(3, 30),
		[]byte("Ünïcödé “big” words—huge ones… and bought ✓ items; 日本語 big 😀 kids.\r\n\tBIG cars!"),
		[]byte("`code big` then big, ```\nfenced big\n``` then big. \xff\xfe invalid big \xe2\x80 cut"),
		[]byte("Therefore the children bought large, expensive cars; thus they usually drove quickly."),
	}
	for _, c := range loadCorporaOrNil(t) {
		for i := 0; i < len(c.texts); i += 1 + len(c.texts)/60 {
			texts = append(texts, []byte(c.texts[i]))
		}
	}
	r := rand.New(rand.NewPCG(11, 12))
	for ti, text := range texts {
		want, _ := m.Mark(text)
		for _, maxFrag := range []int{1, 2, 3, 7, 64} {
			got, subs := streamSplit(t, m, text, r, maxFrag)
			if !bytes.Equal(got, want) {
				t.Fatalf("text %d, fragments <= %d: output differs\n got  %q\n want %q", ti, maxFrag, got, want)
			}
			applySubs(t, lex, text, got, subs)
		}
	}
}

// loadCorporaOrNil returns the corpora when present (they add realistic
// text to the property tests; the synthetic texts suffice without them).
func loadCorporaOrNil(t *testing.T) []corpusTexts {
	var out []corpusTexts
	ok := t.Run("corpora", func(t *testing.T) { out = loadCorpora(t) })
	if !ok {
		t.FailNow()
	}
	return out
}

func TestMarkedTextVerifiesAndChangesLittle(t *testing.T) {
	lex := DefaultLexicon()
	k := testKey(t, "mark", 1)
	m := NewMarker(lex, k)
	v := NewVerifier(lex)
	for _, c := range loadCorpora(t) {
		var st Stats
		var chrf ChrF
		var sentences, changed int
		sm := v.NewSample()
		for _, text := range c.texts {
			out, s := m.Mark([]byte(text))
			st.Words += s.Words
			st.Candidates += s.Candidates
			st.Substituted += s.Substituted
			chrf.Add(out, []byte(text))
			n, ch := SentenceChanges([]byte(text), out)
			sentences += n
			changed += ch
			sm.Add(out)
		}
		rate := float64(st.Substituted) / float64(st.Words)
		r := sm.Score(k)
		t.Logf("%s: %d texts, %d words, candidates %.2f%% of words, changed %.2f%% of words, %.2f%% of sentences, chrF %.2f; verify: %d groups, %d matches, p = %.3g",
			c.name, len(c.texts), st.Words, 100*float64(st.Candidates)/float64(st.Words), 100*rate,
			100*float64(changed)/float64(sentences), chrf.Score(), r.Scored, r.Matches, r.PValue)
		if rate > 0.10 {
			t.Errorf("%s: %.2f%% of words changed, want <= 10%%", c.name, 100*rate)
		}
		if st.Substituted == 0 {
			t.Errorf("%s: nothing substituted", c.name)
		}
		// A tilted context keeps its natural word at most occurrences, so
		// its most frequent member need not be the key's: nearly all
		// groups match, and the count-based test is decisive.
		if float64(r.Matches) < 0.95*float64(r.Scored) || r.PValue > 1e-6 {
			t.Errorf("%s: marked text: %d of %d groups match, p = %g; want >= 95%%, p <= 1e-6", c.name, r.Matches, r.Scored, r.PValue)
		}
	}
}

func FuzzStream(f *testing.F) {
	f.Add([]byte("The big dog bought a huge car."), uint64(1))
	f.Add([]byte("Ünïcödé “big” words—huge\xe2\x80 `big` ```x``` BIG Big bIg"), uint64(2))
	f.Add(synthText(5, 3), uint64(3))
	lex := DefaultLexicon()
	m := NewMarker(lex, testKey(f, "", 99))
	f.Fuzz(func(t *testing.T, text []byte, seed uint64) {
		want, st := m.Mark(text)
		if st.Substituted > st.Candidates || st.Candidates > st.Words {
			t.Fatalf("stats %+v", st)
		}
		r := rand.New(rand.NewPCG(seed, 0))
		got, subs := streamSplit(t, m, text, r, 1+int(seed%17))
		if !bytes.Equal(got, want) {
			t.Fatalf("fragmented output differs:\n got  %q\n want %q", got, want)
		}
		applySubs(t, lex, text, got, subs)
		// The verifier finds the marked positions again, all matching.
		sm := NewVerifier(lex).NewSample()
		sm.Add(got)
		if res := sm.Score(m.Key()); res.Candidates != st.Candidates || res.Matches != res.Scored {
			t.Fatalf("verify of marked text: %+v, marker saw %d candidates", res, st.Candidates)
		}
	})
}
