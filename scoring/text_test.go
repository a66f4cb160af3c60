package scoring

import (
	"fmt"
	"math/bits"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

func newTestAnalyzer() *analyzer { return newAnalyzer(testHashKey(), 8192) }

func shinglesOf(a *analyzer, s string) []uint64 {
	sc := &textScratch{}
	return slices.Clone(a.analyze(s, sc).shingles)
}

func TestNormalizationMakesVariantsEqual(t *testing.T) {
	a := newTestAnalyzer()
	cases := []struct{ x, y string }{
		{"Would you approve a loan for income $52,000 and score 640?", "would you APPROVE a loan for income $97,500.25 and score 710?"},
		{"Hello,   world!\n\tHow are you today?", "hello world how are you today"},
		{"Привет, как ДЕЛА сегодня у тебя?", "привет как дела сегодня у тебя"},
		{"Résous le problème ÉTAPE par étape.", "résous le problème étape par étape"},
		{"请一步一步地解决下面的问题。", "请一步一步地解决下面的问题"},
		{"１２３ apples and ４５６ pears in a basket", "7 apples and 8 pears in a basket"}, // full-width digits
	}
	for _, c := range cases {
		x, y := shinglesOf(a, c.x), shinglesOf(a, c.y)
		if len(x) == 0 || !slices.Equal(x, y) {
			t.Errorf("%q and %q normalize differently: %x vs %x", c.x, c.y, x, y)
		}
	}
	if x, y := shinglesOf(a, "the cat sat on the mat today"), shinglesOf(a, "the dog sat on the mat today"); slices.Equal(x, y) {
		t.Error("different words produced identical shingles")
	}
}

func TestTokenizationByScript(t *testing.T) {
	a := newTestAnalyzer()
	cases := []struct {
		text   string
		tokens int
	}{
		{"step by step", 3},
		{"Schritt für Schritt", 3},
		{"一步一步", 4},             // one token per Han character
		{"ステップバイステップ", 10},      // katakana: per character
		{"단계별로 풀어", 2},          // Hangul is spaced: words
		{"ทีละขั้นตอน", 11},     // Thai: per character (marks included)
		{"abc 1,000.50 def", 3}, // a number is one placeholder token
		{"", 0},
		{"!!! ... ???", 0},
	}
	for _, c := range cases {
		sc := &textScratch{}
		f := a.analyze(c.text, sc)
		if f.tokens != c.tokens {
			t.Errorf("%q: %d tokens, want %d", c.text, f.tokens, c.tokens)
		}
	}
}

// TestSamplingIsBoundedAndStable checks the sampler's properties. Those
// that hold for every key are checked under 64 fixed derived keys: the
// sample is bounded, a function of the shingle set alone, and a threshold
// on the hash level (so two prompts sharing a passage sample every shared
// shingle at or above both prompts' levels). The overlap of two prompts
// sharing a wrapper depends on the key; its bound is asserted for one fixed
// key, and its average over the 64 keys.
func TestSamplingIsBoundedAndStable(t *testing.T) {
	long := strings.Repeat("the quick brown fox jumps over the lazy dog number 7 again and again ", 200)
	wrapper := "Below is an instruction that describes a task. Write a response that appropriately completes the request. "
	px := wrapper + "Explain photosynthesis to a ten year old child in simple words."
	py := wrapper + "Describe the water cycle to a curious student using everyday words."
	totalCommon := 0
	const keys = 64
	for k := 0; k < keys; k++ {
		a := newAnalyzer(keyFor(fmt.Sprintf("sampling-%d", k)), 8192)
		if n := len(shinglesOf(a, long)); n == 0 || n > maxSampled {
			t.Fatalf("key %d: long prompt sampled %d shingles, want 1..%d", k, n, maxSampled)
		}
		x, y := shinglesOf(a, px), shinglesOf(a, py)
		if !slices.Equal(x, shinglesOf(a, px)) {
			t.Fatalf("key %d: sampling is not deterministic", k)
		}
		// Threshold property: the lowest level sampled from each prompt;
		// a shingle of x at or above y's level that y contains is sampled
		// in y too.
		minLevel := func(hs []uint64) int {
			m := 64
			for _, h := range hs {
				m = min(m, bits.TrailingZeros64(h))
			}
			return m
		}
		all := func(p string) []uint64 {
			sc := &textScratch{}
			a.analyze(p, sc)
			return slices.Clone(sc.shing)
		}
		ay := all(py)
		ly := minLevel(y)
		for _, h := range x {
			if bits.TrailingZeros64(h) >= ly && slices.Contains(ay, h) && !slices.Contains(y, h) && len(y) < maxSampled {
				t.Fatalf("key %d: shared shingle %x at level %d >= %d sampled in x but not in y", k, h, bits.TrailingZeros64(h), ly)
			}
		}
		common := 0
		for _, h := range x {
			if slices.Contains(y, h) {
				common++
			}
		}
		totalCommon += common
		if k == 0 && common < 4 {
			t.Errorf("fixed key: prompts sharing a 17-word wrapper share %d sampled shingles, want >= 4 (x=%d y=%d)", common, len(x), len(y))
		}
	}
	if avg := float64(totalCommon) / keys; avg < 6 {
		t.Errorf("prompts sharing a 17-word wrapper share %.1f sampled shingles on average over %d keys, want >= 6", avg, keys)
	}
	// Distinct keys give distinct hashes: the sampling is keyed.
	a, b := newAnalyzer(keyFor("sampling-a"), 8192), newAnalyzer(keyFor("sampling-b"), 8192)
	if slices.Equal(shinglesOf(a, wrapper), shinglesOf(b, wrapper)) {
		t.Error("two analyzers with different keys produced the same shingle hashes")
	}
}

func TestLanguageDetection(t *testing.T) {
	a := newTestAnalyzer()
	cases := []struct {
		text string
		want []string
	}{
		{"What is the best way to learn how to cook rice with a rice cooker?", []string{"en"}},
		{"¿Cuál es la mejor manera de aprender a cocinar el arroz con una olla?", []string{"es"}},
		{"Quelle est la meilleure façon d'apprendre à cuisiner le riz avec une casserole et des épices ?", []string{"fr"}},
		{"Wie kann ich am besten lernen, den Reis mit dem Reiskocher zu kochen, und ist das nicht schwer?", []string{"de"}},
		{"Qual é a melhor maneira de aprender a cozinhar o arroz com uma panela? Não sei.", []string{"pt"}},
		{"学习用电饭煲煮米饭的最好方法是什么？", []string{"zh"}},
		{"炊飯器でご飯を炊く一番いい方法は何ですか？", []string{"ja"}},
		{"밥솥으로 밥을 짓는 가장 좋은 방법은 무엇입니까?", []string{"ko"}},
		{"Как лучше всего научиться готовить рис в рисоварке?", []string{"ru"}},
		{"ما هي أفضل طريقة لتعلم طهي الأرز؟", []string{"ar"}},
		{"चावल पकाना सीखने का सबसे अच्छा तरीका क्या है?", []string{"hi"}},
		// Mixed: a Spanish instruction around an English question.
		{"Resuelve el siguiente problema paso a paso y explica tu razonamiento antes de dar la respuesta final. Janet has 16 eggs and she eats three of them for breakfast; how many are left for the market?", []string{"en", "es"}},
	}
	for _, c := range cases {
		sc := &textScratch{}
		got := langList(a.analyze(c.text, sc).langs)
		if !slices.Equal(got, c.want) {
			t.Errorf("%q: languages %v, want %v", c.text, got, c.want)
		}
	}
}

func TestReasoningDemandDetection(t *testing.T) {
	a := newTestAnalyzer()
	cases := []struct {
		text string
		cot  bool
		lang string
	}{
		{"Solve the following problem step by step, showing all of your reasoning.", true, "en"},
		{"Let's think Step-By-Step.", true, "en"},
		{"Please show your work.", true, "en"},
		{"Resuelve el problema paso a paso.", true, "es"},
		{"Résous le problème étape par étape.", true, "fr"},
		{"Löse die Aufgabe Schritt für Schritt.", true, "de"},
		{"Resolva passo a passo.", true, "pt"},
		{"请一步一步地解决下面的问题", true, "zh"},
		{"让我们逐步思考。", true, "zh"},
		{"次の問題をステップバイステップで解いてください", true, "ja"},
		{"다음 문제를 단계별로 풀어 주세요", true, "ko"},
		{"Реши задачу шаг за шагом.", true, "ru"},
		{"حل المسألة خطوة بخطوة", true, "ar"},
		{"इस प्रश्न को चरण दर चरण हल करें", true, "hi"},
		{"Aşağıdaki problemi adım adım çöz.", true, "tr"},
		// Near misses.
		{"I stepped on a step and then another step.", false, ""},
		{"Take it one day at a time.", false, ""},
		{"What is 17 times 23?", false, ""},
		{"步行到车站要多久？", false, ""},
	}
	for _, c := range cases {
		sc := &textScratch{}
		f := a.analyze(c.text, sc)
		if f.cot != c.cot {
			t.Errorf("%q: cot=%v, want %v", c.text, f.cot, c.cot)
			continue
		}
		if c.cot && !slices.Contains(langList(f.cotLangs), c.lang) {
			t.Errorf("%q: demand languages %v, want %s", c.text, langList(f.cotLangs), c.lang)
		}
	}
}

func TestBadTextIsRepairedAndFlagged(t *testing.T) {
	a := newTestAnalyzer()
	cases := []struct {
		name                       string
		text                       string
		invalid, binary, truncated bool
	}{
		{"invalid utf8", "hello \xff\xfe world of \xc3 text here", true, false, false},
		{"binary", string([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 14, 15, 16, 17, 18, 'a', 'b'}), false, true, false},
		{"huge", strings.Repeat("é", 10000), false, false, true},
		{"clean", "just a normal prompt", false, false, false},
	}
	for _, c := range cases {
		sc := &textScratch{}
		f := a.analyze(c.text, sc)
		if f.invalidUTF8 != c.invalid || f.binary != c.binary || f.truncated != c.truncated {
			t.Errorf("%s: invalid=%v binary=%v truncated=%v, want %v %v %v", c.name, f.invalidUTF8, f.binary, f.truncated, c.invalid, c.binary, c.truncated)
		}
		if len(f.shingles) > maxSampled {
			t.Errorf("%s: %d shingles", c.name, len(f.shingles))
		}
	}
	// Truncation cuts on a rune boundary: the kept part is valid UTF-8.
	small := newAnalyzer(testHashKey(), 101)
	sc := &textScratch{}
	f := small.analyze(strings.Repeat("日本", 100), sc)
	if !f.truncated || f.tokens != 33 { // 101 bytes -> 99 bytes -> 33 characters
		t.Errorf("truncated=%v tokens=%d, want true 33", f.truncated, f.tokens)
	}
}

// FuzzAnalyze: any input yields bounded, deterministic features.
func FuzzAnalyze(f *testing.F) {
	for _, s := range []string{"", "step by step", "请一步一步地", "\xff\xfe", "1,2,3...", strings.Repeat("a ", 5000), "Résous étape par étape"} {
		f.Add(s)
	}
	a := newAnalyzer(testHashKey(), 4096)
	f.Fuzz(func(t *testing.T, s string) {
		sc := &textScratch{}
		x := a.analyze(s, sc)
		if len(x.shingles) > maxSampled {
			t.Fatalf("%d shingles", len(x.shingles))
		}
		if x.tokens > utf8.RuneCountInString(s) {
			t.Fatalf("%d tokens from %d runes", x.tokens, utf8.RuneCountInString(s))
		}
		first := slices.Clone(x.shingles)
		lang, cot := x.langs, x.cot
		y := a.analyze(s, &textScratch{})
		if !slices.Equal(first, y.shingles) || lang != y.langs || cot != y.cot {
			t.Fatal("analysis is not deterministic")
		}
		if x.cotLangs&^x.langs != 0 {
			t.Fatal("demand language missing from the prompt's languages")
		}
	})
}
