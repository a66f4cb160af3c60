package scoring

import (
	"math/bits"
	"unicode"
	"unicode/utf8"

	"github.com/distillguard/distillguard/internal/hashmix"
	"github.com/distillguard/distillguard/internal/textcut"
)

// Text analysis: one pass over the prompt produces keyed token hashes, the
// scripts and languages present, and reasoning-demand matches; shingles
// (token 4-grams) are built from the token hashes and sampled.
//
// Normalization: case-folded (unicode.ToLower), every run of digits (with
// inner '.' and ',') is one placeholder token, punctuation and whitespace
// separate tokens. Scripts written without spaces (Han, kana, Thai, Lao,
// Khmer, Myanmar) yield one token per character, so their shingles are
// character 4-grams while spaced scripts give word 4-grams.

const (
	shingleN = 4
	// maxSampled bounds the shingles one prompt contributes to the filters
	// and sketches: enough that the shares computed from them (duplicate,
	// template) are averages over many shingles rather than the luck of a
	// few, small enough to keep per-session filters and the per-request
	// cost bounded.
	maxSampled = 24
	// latinLangTokens bounds the tokens checked against the stopword table.
	latinLangTokens = 64
)

// Languages and scripts, as bits of a mask. Latin-script languages are told
// apart by stopwords; other scripts map to their main language.
const (
	langEN = iota
	langES
	langFR
	langDE
	langPT
	langIT
	langNL
	langTR
	langPL
	langID
	langVI
	langRU // Cyrillic
	langAR // Arabic script
	langHE // Hebrew
	langHI // Devanagari
	langIndic
	langZH // Han without kana
	langJA // kana
	langKO // Hangul
	langTH // Thai and neighbours
	langEL // Greek
	langSW // Swahili
	langCount
)

var langNames = [langCount]string{"en", "es", "fr", "de", "pt", "it", "nl", "tr", "pl", "id", "vi", "ru", "ar", "he", "hi", "indic", "zh", "ja", "ko", "th", "el", "sw"}

type script uint8

const (
	scNone script = iota
	scLatin
	scCyrillic
	scGreek
	scArabic
	scHebrew
	scDevanagari
	scIndic
	scHan
	scKana
	scHangul
	scThai
	scOther
	scCount
)

// classify returns the script of a non-ASCII letter and whether the script
// is written without spaces.
func classify(r rune) (script, bool) {
	switch {
	case r < 0x0250 || (r >= 0x1E00 && r <= 0x1EFF):
		return scLatin, false
	case r >= 0x0370 && r <= 0x03FF:
		return scGreek, false
	case r >= 0x0400 && r <= 0x052F:
		return scCyrillic, false
	case r >= 0x0590 && r <= 0x05FF:
		return scHebrew, false
	case (r >= 0x0600 && r <= 0x077F) || (r >= 0xFB50 && r <= 0xFDFF) || (r >= 0xFE70 && r <= 0xFEFF):
		return scArabic, false
	case r >= 0x0900 && r <= 0x097F:
		return scDevanagari, false
	case r >= 0x0980 && r <= 0x0DFF:
		return scIndic, false
	case r >= 0x0E00 && r <= 0x0EFF, r >= 0x1000 && r <= 0x109F, r >= 0x1780 && r <= 0x17FF:
		return scThai, true
	case (r >= 0x1100 && r <= 0x11FF) || (r >= 0x3130 && r <= 0x318F) || (r >= 0xAC00 && r <= 0xD7AF):
		return scHangul, false
	case (r >= 0x3040 && r <= 0x30FF) || (r >= 0x31F0 && r <= 0x31FF) || (r >= 0xFF66 && r <= 0xFF9F):
		return scKana, true
	case (r >= 0x3400 && r <= 0x4DBF) || (r >= 0x4E00 && r <= 0x9FFF) || (r >= 0xF900 && r <= 0xFAFF) || (r >= 0x20000 && r <= 0x3FFFF):
		return scHan, true
	}
	return scOther, false
}

// textFeatures is what one prompt contributes to the signals.
type textFeatures struct {
	shingles []uint64 // sampled, distinct, keyed shingle hashes
	norm     uint64   // hash of the whole normalized token sequence
	tokens   int
	langs    uint32 // bit per language detected
	cot      bool   // demands step-by-step reasoning
	cotLangs uint32 // languages of the matched demands
	// cotMixed: the demand is in a language the rest of the prompt is not
	// written in (a harvesting wrapper translated around dataset content).
	cotMixed    bool
	known       bool // a published distillation / instruction-data format
	numbers     int  // number placeholders among the tokens
	invalidUTF8 bool
	binary      bool
	truncated   bool
}

// textScratch holds per-call buffers, pooled by the Engine.
type textScratch struct {
	tok    []byte
	hashes []uint64
	shing  []uint64
	out    []uint64
	mac    []byte // identity MAC input
	// numbers counts the number placeholders tokenize emitted.
	numbers int
	rep     []uint8
	counts  []templateCount
	seen    []bool
	f       textFeatures
}

// grow sizes the per-shingle buffers.
func (sc *textScratch) grow() {
	if len(sc.rep) < maxSampled {
		sc.rep = make([]uint8, maxSampled)
		sc.counts = make([]templateCount, maxSampled)
		sc.seen = make([]bool, maxSampled)
	}
}

// analyzer holds the keyed tables built once per Engine.
type analyzer struct {
	key     hashKey
	maxText int
	// vocab maps token hashes to stopword languages and to the reasoning
	// phrases starting with that token.
	vocab   tokenTable
	phrases []phrase
}

type phrase struct {
	lang   int
	known  bool // a distillation-format phrase rather than a reasoning demand
	tokens []uint64
}

func (a *analyzer) tokenHash(b []byte) uint64 { return a.key.sum(0, b) }

// tokenize appends keyed token hashes of s to sc.hashes and fills script
// counts. It is the single normalization routine, used for prompts and for
// the phrase table alike.
func (a *analyzer) tokenize(s string, sc *textScratch, scripts *[scCount]int) (invalid, binary bool) {
	tok := sc.tok[:0]
	sc.numbers = 0
	flush := func() {
		if len(tok) > 0 {
			sc.hashes = append(sc.hashes, a.tokenHash(tok))
			tok = tok[:0]
		}
	}
	inNumber := false
	controls := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			i++
			switch {
			case c >= 'a' && c <= 'z':
				if inNumber {
					flush()
					inNumber = false
				}
				tok = append(tok, c)
				scripts[scLatin]++
			case c >= 'A' && c <= 'Z':
				if inNumber {
					flush()
					inNumber = false
				}
				tok = append(tok, c+('a'-'A'))
				scripts[scLatin]++
			case c >= '0' && c <= '9':
				if !inNumber {
					flush()
					tok = append(tok, '0')
					inNumber = true
					sc.numbers++
				}
			case (c == '.' || c == ',') && inNumber && i < len(s) && s[i] >= '0' && s[i] <= '9':
				// inside a number: "1,000.50" stays one placeholder
			default:
				if c < 0x20 && c != '\n' && c != '\r' && c != '\t' {
					controls++
				}
				flush()
				inNumber = false
			}
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		if r == utf8.RuneError && size == 1 {
			invalid = true
			flush()
			inNumber = false
			continue
		}
		if unicode.IsDigit(r) {
			if !inNumber {
				flush()
				tok = append(tok, '0')
				inNumber = true
				sc.numbers++
			}
			continue
		}
		if inNumber {
			flush()
			inNumber = false
		}
		if !unicode.IsLetter(r) && !unicode.IsMark(r) {
			flush()
			continue
		}
		scr, unspaced := classify(r)
		scripts[scr]++
		if unspaced {
			flush()
			tok = utf8.AppendRune(tok, r)
			flush()
			continue
		}
		tok = utf8.AppendRune(tok, unicode.ToLower(r))
	}
	flush()
	sc.tok = tok
	return invalid, controls > 8 && controls*16 > len(s)
}

// analyze computes the features of prompt into sc.f. It never fails: bad
// bytes become separators and are reported in the flags.
func (a *analyzer) analyze(prompt string, sc *textScratch) *textFeatures {
	f := &sc.f
	*f = textFeatures{}
	if len(prompt) > a.maxText {
		prompt = textcut.Prefix(prompt, a.maxText)
		f.truncated = true
	}
	var scripts [scCount]int
	sc.hashes = sc.hashes[:0]
	f.invalidUTF8, f.binary = a.tokenize(prompt, sc, &scripts)
	h := sc.hashes
	f.tokens = len(h)
	f.numbers = sc.numbers
	// The whole normalized turn, for recognising a turn re-sent with other
	// casing, punctuation or numbers.
	f.norm = uint64(len(h))
	for _, x := range h {
		f.norm = hashmix.Mix64(f.norm*0x9e3779b97f4a7c15 + x)
	}

	// Scripts other than Latin name their language directly; a few letters
	// are enough (a mixed prompt counts both).
	letters := 0
	for _, n := range scripts {
		letters += n
	}
	minLetters := max(3, letters/20)
	scriptLang := [scCount]int{scCyrillic: langRU, scGreek: langEL, scArabic: langAR, scHebrew: langHE,
		scDevanagari: langHI, scIndic: langIndic, scHangul: langKO, scThai: langTH}
	for s, l := range scriptLang {
		if l != 0 && scripts[s] >= minLetters {
			f.langs |= 1 << l
		}
	}
	if scripts[scKana] >= minLetters {
		f.langs |= 1 << langJA
	} else if scripts[scHan] >= minLetters {
		f.langs |= 1 << langZH
	}

	// One table lookup per token serves the stopword vote and the
	// reasoning-phrase scan.
	var votes [langCount]int
	for i, th := range h {
		e := a.vocab.get(th)
		if e == nil {
			continue
		}
		if i < latinLangTokens && e.stop != 0 {
			for m := e.stop; m != 0; m &= m - 1 {
				votes[bits.TrailingZeros32(m)]++
			}
		}
		for _, pi := range e.starts {
			p := &a.phrases[pi]
			if i+len(p.tokens) <= len(h) && equalHashes(h[i:i+len(p.tokens)], p.tokens) {
				if p.known {
					f.known = true
					continue
				}
				f.cot = true
				f.cotLangs |= 1 << p.lang
			}
		}
	}
	best := 0
	for _, v := range votes {
		best = max(best, v)
	}
	if scripts[scLatin] >= minLetters {
		for l, v := range votes {
			if v >= 2 && v*3 >= best {
				f.langs |= 1 << l
			}
		}
	}
	f.cotMixed = f.cot && f.langs&^f.cotLangs != 0
	f.langs |= f.cotLangs

	f.shingles = a.sample(h, sc)
	return f
}

func equalHashes(a, b []uint64) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// sample builds token 4-gram hashes and keeps at most maxSampled of them,
// chosen by the number of trailing zero bits of the (keyed) hash. The choice
// depends only on the shingle, so two prompts sharing a passage sample the
// same shingles from it whenever their lengths are comparable — what
// near-duplicate and template detection need.
func (a *analyzer) sample(h []uint64, sc *textScratch) []uint64 {
	all := sc.shing[:0]
	// The token hashes are keyed and uniform, so a multiply-add of the four
	// (distinct odd constants keep the order) and one finalizer suffice.
	const k1, k2, k3 = 0x9e3779b97f4a7c15, 0xc2b2ae3d27d4eb4f, 0x165667b19e3779f9
	switch {
	case len(h) == 0:
	case len(h) < shingleN:
		x := uint64(len(h))
		for _, t := range h {
			x = x*k1 + t
		}
		all = append(all, hashmix.Mix64(x))
	default:
		for i := 0; i+shingleN <= len(h); i++ {
			all = append(all, hashmix.Mix64(h[i]*k1+h[i+1]*k2+h[i+2]*k3+h[i+3]))
		}
	}
	sc.shing = all
	var levels [65]int
	for _, x := range all {
		levels[bits.TrailingZeros64(x)]++
	}
	r, n := 64, levels[64]
	// Go down the levels while the selection fits; always take at least one
	// level (repetitive text has few distinct shingles but many copies).
	for r > 0 && (n == 0 || n+levels[r-1] <= maxSampled) {
		r--
		n += levels[r]
	}
	out := sc.out[:0]
	if cap(out) < maxSampled {
		out = make([]uint64, 0, maxSampled)
	}
	defer func() { sc.out = out }()
	for _, x := range all {
		if bits.TrailingZeros64(x) < r || len(out) == maxSampled {
			continue
		}
		dup := false
		for _, y := range out {
			dup = dup || y == x
		}
		if !dup {
			out = append(out, x)
		}
	}
	return out
}

// tokenTable is an open-addressing hash table from token hash to vocabulary
// entry. It is built once and read-only afterwards.
type tokenTable struct {
	keys    []uint64
	entries []vocabEntry
	mask    uint64
}

type vocabEntry struct {
	stop   uint32 // languages whose stopword list holds the token
	starts []int  // phrases starting with the token
}

func (t *tokenTable) slot(k uint64) uint64 {
	for i := hashmix.Mix64(k) & t.mask; ; i = (i + 1) & t.mask {
		if t.keys[i] == k || t.keys[i] == 0 {
			return i
		}
	}
}

func (t *tokenTable) get(k uint64) *vocabEntry {
	if k == 0 {
		return nil
	}
	i := t.slot(k)
	if t.keys[i] == 0 {
		return nil
	}
	return &t.entries[i]
}

func (t *tokenTable) put(k uint64) *vocabEntry {
	i := t.slot(k)
	t.keys[i] = k
	return &t.entries[i]
}

// Stopwords: short, frequent function words, chosen to be specific to one
// language of the table; the vote needs two hits and a third of the best.
var stopwords = [...]struct {
	lang  int
	words []string
}{
	{langEN, []string{"the", "and", "is", "are", "of", "what", "how", "you", "with", "that", "this", "for", "your", "does", "can", "it", "be", "was", "have", "will"}},
	{langES, []string{"el", "los", "las", "del", "y", "una", "por", "para", "con", "es", "tu", "su", "muy", "pero", "cómo", "qué", "cuál", "siguiente"}},
	{langFR, []string{"le", "les", "des", "et", "est", "une", "pour", "avec", "du", "au", "ton", "votre", "pas", "qui", "dans", "avant", "suivant"}},
	{langDE, []string{"der", "die", "das", "und", "ist", "nicht", "ein", "eine", "mit", "für", "du", "zu", "den", "dem", "auf", "deinen", "bevor", "folgende"}},
	{langPT, []string{"o", "os", "um", "uma", "não", "com", "seu", "sua", "do", "da", "dos", "é", "em", "você", "seguir"}},
	{langIT, []string{"il", "gli", "della", "che", "è", "tuo", "prima", "seguente", "sono", "questo", "anche", "perché"}},
	{langNL, []string{"het", "een", "en", "van", "niet", "dat", "voor", "met", "zijn", "je", "de"}},
	{langTR, []string{"ve", "bir", "bu", "için", "ile", "ne", "mi", "önce", "aşağıdaki"}},
	{langPL, []string{"i", "w", "nie", "się", "na", "jest", "że", "do", "przed"}},
	{langID, []string{"dan", "yang", "di", "ini", "itu", "untuk", "dengan", "sebelum"}},
	{langVI, []string{"và", "của", "là", "có", "không", "các", "những", "trước"}},
}

// reasoningPhrases demand step-by-step reasoning, per language. Matching is
// on normalized tokens, so case and punctuation do not matter, and CJK
// phrases match character by character.
var reasoningPhrases = [...]struct {
	lang    int
	phrases []string
}{
	{langEN, []string{"step by step", "step-by-step", "show your reasoning", "show your work", "show all of your reasoning", "show your full reasoning",
		"explain your reasoning", "think it through", "reason through", "chain of thought", "walk me through your reasoning", "work through it",
		"show each step", "explain each step", "show every step", "detailed reasoning", "reasoning process", "thought process", "before giving the final answer",
		"before the final answer", "before answering", "lay out your reasoning", "justify each step"}},
	{langES, []string{"paso a paso", "explica tu razonamiento", "muestra tu razonamiento", "muestra todo tu razonamiento", "razona paso",
		"razonamiento detallado", "cada paso", "antes de la respuesta final", "proceso de razonamiento"}},
	{langFR, []string{"étape par étape", "explique ton raisonnement", "expliquez votre raisonnement", "montre ton raisonnement", "pas à pas",
		"raisonnement détaillé", "chaque étape", "avant la réponse finale", "détaille ton raisonnement", "détaillez votre raisonnement"}},
	{langDE, []string{"schritt für schritt", "schritt-für-schritt", "erkläre deinen lösungsweg", "erkläre deine überlegungen", "begründe deine antwort",
		"schrittweise", "jeden schritt", "lösungsweg", "vor der endgültigen antwort", "denkprozess"}},
	{langPT, []string{"passo a passo", "explique seu raciocínio", "mostre seu raciocínio", "explique o seu raciocínio",
		"raciocínio detalhado", "cada etapa", "cada passo", "antes da resposta final"}},
	{langIT, []string{"passo dopo passo", "passo per passo", "spiega il tuo ragionamento", "ragionamento dettagliato", "ogni passaggio", "prima della risposta finale"}},
	{langNL, []string{"stap voor stap", "leg je redenering uit", "elke stap", "voor het definitieve antwoord"}},
	{langTR, []string{"adım adım", "akıl yürütmeni açıkla", "her adımı", "düşünce sürecini"}},
	{langPL, []string{"krok po kroku", "wyjaśnij swoje rozumowanie", "każdy krok", "tok rozumowania"}},
	{langID, []string{"langkah demi langkah", "jelaskan penalaranmu", "langkah per langkah", "setiap langkah", "proses berpikir"}},
	{langVI, []string{"từng bước", "giải thích lập luận", "từng bước một", "quá trình suy luận"}},
	{langRU, []string{"шаг за шагом", "пошагово", "объясни своё рассуждение", "объясни свое рассуждение", "объясните ваше рассуждение", "крок за кроком",
		"подробно объясни", "ход рассуждений", "ход решения", "каждый шаг", "покроково"}},
	{langAR, []string{"خطوة بخطوة", "اشرح طريقة تفكيرك", "اشرح تفكيرك", "گام به گام", "اشرح خطوات", "قدم به قدم"}},
	{langHE, []string{"צעד אחר צעד", "שלב אחר שלב"}},
	{langHI, []string{"चरण दर चरण", "कदम दर कदम", "क़दम दर क़दम", "चरणबद्ध", "अपना तर्क समझाएँ", "अपना तर्क समझाएं", "हर चरण"}},
	{langIndic, []string{"ধাপে ধাপে", "படிப்படியாக", "దశలవారీగా"}},
	{langZH, []string{"一步一步", "逐步", "分步", "推理过程", "解题过程", "详细步骤", "一步步", "思考过程", "详细推理", "每一步", "逐步推理", "一步一步來"}},
	{langJA, []string{"ステップバイステップ", "段階的に", "一歩ずつ", "順を追って", "推論過程", "考え方を説明", "段階を追って", "手順を追って", "推論の過程"}},
	{langKO, []string{"단계별로", "단계적으로", "차근차근", "추론 과정", "풀이 과정", "한 단계씩"}},
	{langTH, []string{"ทีละขั้นตอน", "ทีละขั้น"}},
	{langEL, []string{"βήμα προς βήμα", "βήμα βήμα"}},
	{langSW, []string{"hatua kwa hatua", "eleza hoja yako"}},
}

// knownFormats are phrases of published instruction-data formats that
// distillation pipelines wrap harvested content in: Stanford Alpaca's
// prompt (Taori et al. 2023, after Self-Instruct, Wang et al. 2023), its
// input variant, and reference-answer generation prompts. They say little
// in one request; a session sending them all the time is collecting
// training pairs.
var knownFormats = [...]string{
	"instruction that describes a task",
	"appropriately completes the request",
	"paired with an input that provides further context",
	"will be used as a reference",
	"high quality answer for the following instruction",
	"a chat between a curious user and an artificial intelligence assistant",
	"generate a response to the following instruction",
}

// newAnalyzer builds the keyed vocabulary table.
func newAnalyzer(key hashKey, maxText int) *analyzer {
	a := &analyzer{key: key, maxText: maxText}
	n := 0
	for _, s := range stopwords {
		n += len(s.words)
	}
	for _, p := range reasoningPhrases {
		n += len(p.phrases)
	}
	n += len(knownFormats)
	size := 1 << bits.Len(uint(4*n))
	a.vocab = tokenTable{keys: make([]uint64, size), entries: make([]vocabEntry, size), mask: uint64(size - 1)}
	sc := &textScratch{}
	var scripts [scCount]int
	for _, s := range stopwords {
		for _, w := range s.words {
			sc.hashes = sc.hashes[:0]
			a.tokenize(w, sc, &scripts)
			for _, h := range sc.hashes {
				a.vocab.put(h).stop |= 1 << s.lang
			}
		}
	}
	for _, p := range reasoningPhrases {
		for _, text := range p.phrases {
			sc.hashes = sc.hashes[:0]
			a.tokenize(text, sc, &scripts)
			if len(sc.hashes) == 0 {
				continue
			}
			toks := append([]uint64(nil), sc.hashes...)
			a.phrases = append(a.phrases, phrase{lang: p.lang, tokens: toks})
			e := a.vocab.put(toks[0])
			e.starts = append(e.starts, len(a.phrases)-1)
		}
	}
	for _, text := range knownFormats {
		sc.hashes = sc.hashes[:0]
		a.tokenize(text, sc, &scripts)
		toks := append([]uint64(nil), sc.hashes...)
		a.phrases = append(a.phrases, phrase{known: true, tokens: toks})
		e := a.vocab.put(toks[0])
		e.starts = append(e.starts, len(a.phrases)-1)
	}
	return a
}

// langList names the languages in a mask.
func langList(m uint32) []string {
	var out []string
	for l := 0; l < langCount; l++ {
		if m&(1<<l) != 0 {
			out = append(out, langNames[l])
		}
	}
	return out
}

// numericRecord: a turn that is mostly numbers — at least four, and at
// least 30% of its tokens — like a feature vector sent to a classifier
// (named features count: "age 34, income 52000" is half numbers). Prose
// with figures in it, arithmetic questions and short prompts are not.
func (f *textFeatures) numericRecord() bool {
	return f.numbers >= 4 && f.tokens >= 8 && f.numbers*10 >= f.tokens*3
}

// recordAsk reports a numeric record asked with logprobs or logit_bias:
// the query of an equation-solving or distillation attack on a
// classifier (Tramèr et al. 2016), counted for the harvest stream and
// refused to identities in probation.
func recordAsk(f *textFeatures, r *Request) bool {
	return f != nil && f.numericRecord() && (r.Logprobs || r.TopLogprobs > 0 || r.LogitBiasSize > 0)
}
