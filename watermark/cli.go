package watermark

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"

	"github.com/distillguard/distillguard/internal/textcut"
)

// subcommand is what every watermark subcommand starts with: its flag
// set, which prints usage (the synopsis, then the flags) on a bad flag,
// and fail, which reports an error under the command's name and returns
// exit status 2.
func subcommand(name, synopsis string, stderr io.Writer) (*flag.FlagSet, func(error) int) {
	fs := flag.NewFlagSet("watermark "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: distillguard watermark "+name+" "+synopsis)
		fs.PrintDefaults()
	}
	return fs, func(err error) int {
		fmt.Fprintf(stderr, "watermark %s: %v\n", name, err)
		return 2
	}
}

// RunVerify is the command `distillguard watermark verify`:
//
//	verify -key-file F [-mode text|logprobs] [-contexts C] [-served S]... [-served-session ID] [-prompts P] [-reference R] [-decoys N] FILE...
//
// Text mode reads each FILE as JSONL, one response a line ({"text": ...},
// an OpenAI chat.completion / text_completion object whose choices'
// message.content or text are taken, a Responses API response (its
// output_text parts), a Gemini GenerateContentResponse (its candidates'
// text parts) or an Anthropic message (its text blocks); reasoning
// summaries, thought parts and thinking blocks are texts of their own),
// or, when its first non-blank byte is
// not '{', as one plain text; "-" is standard input. Logprobs mode reads
// the suspect's answers to probe prompts with their top alternatives, one
// choice, candidate or response per probe (chat.completion,
// text_completion, response or GenerateContentResponse; see
// ParseLogprobs), -prompts
// the probes themselves, one JSON object a line in the same order
// ({"prompt": TEXT}, an OpenAI chat request's {"messages": [...]}, or
// {"features": [NUMBERS]} for record inputs; see ReadProbeContexts), and
// -reference, optionally, the provider's own unmarked answers to the same
// probes in the same order. Every key of the key
// file is tested; for each FILE one JSON object is written to stdout with
// the best key's test and p_value_any_key, the Bonferroni bound over the
// keys. -decoys N also scores N keys nobody holds (derived from a fixed
// label) and reports how many of them reach the best key's p-value: an
// empirical check of the p-value next to the analytic one. -served S
// (text mode, repeatable; read as FILE is) gives the responses the
// suspected sessions were served: the responses, from the operator's own
// logs, marked or not, or the server's served records (watermark.
// log_served; -served-session takes one session's): the test then weighs
// the groups the suspect can have learned from them (Sample.UseServed),
// which is what finds a smoothed student.
//
// Exit status: 0 when every file was scored, 2 on a usage or input error.
func RunVerify(args []string, stdout, stderr io.Writer) int {
	fs, fail := subcommand("verify", "-key-file F [-mode text|logprobs] [-contexts C] [-served S]... [-served-session ID] [-prompts P] [-reference R] [-decoys N] FILE...", stderr)
	keyFile := fs.String("key-file", "", "watermark key file (hex or raw secret, or key set)")
	mode := fs.String("mode", "text", "text (lexical watermark) or logprobs (logprob watermark)")
	refFile := fs.String("reference", "", "logprobs mode: the provider's own unmarked answers to the same probes")
	promptFile := fs.String("prompts", "", "logprobs mode: the probe prompts, one JSON object a line, in the order of the answers")
	ctxFile := fs.String("contexts", "", "text mode: the context statistics the text was marked with (default: the embedded ones)")
	decoys := fs.Int("decoys", 0, "also score this many decoy keys")
	maxPrompt := fs.Int("max-prompt-bytes", DefaultMaxPromptBytes, "logprobs mode: the server's processing.max_prompt_bytes (the prompt bytes it keyed the mark on)")
	var servedFiles []string
	servedSession := fs.String("served-session", "", "text mode: take only the served records of this session (its id in the log lines)")
	fs.Func("served", "text mode: what the suspected sessions were served: the responses (JSONL or plain text, as FILE) or the server's \"watermark served\" log lines (watermark.log_served); repeatable", func(v string) error {
		if v == "" {
			return errors.New("empty file name")
		}
		servedFiles = append(servedFiles, v)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *keyFile == "" || fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	if *mode != "text" && *mode != "logprobs" {
		return fail(fmt.Errorf("-mode %q: want text or logprobs", *mode))
	}
	if *decoys < 0 || *decoys > 100000 {
		return fail(fmt.Errorf("-decoys %d: want 0 to 100000", *decoys))
	}
	if (*refFile != "" || *promptFile != "") && *mode != "logprobs" {
		return fail(errors.New("-reference and -prompts apply to -mode logprobs"))
	}
	if (*ctxFile != "" || len(servedFiles) > 0 || *servedSession != "") && *mode != "text" {
		return fail(errors.New("-contexts and -served apply to -mode text"))
	}
	if *servedSession != "" && len(servedFiles) == 0 {
		return fail(errors.New("-served-session needs -served"))
	}
	if *mode == "logprobs" && *promptFile == "" {
		return fail(errors.New("-mode logprobs needs -prompts (the probe prompts)"))
	}
	ks, err := LoadKeyFile(*keyFile)
	if err != nil {
		return fail(err)
	}
	dk, err := DecoyKeys(*decoys)
	if err != nil {
		return fail(err)
	}
	var ref []LogprobPosition
	var probes []ProbeContext
	if *promptFile != "" {
		f, err := openInput(*promptFile)
		if err != nil {
			return fail(err)
		}
		probes, err = ReadProbeContexts(f, *maxPrompt)
		f.Close()
		if err != nil {
			return fail(fmt.Errorf("%s: %w", *promptFile, err))
		}
	}
	if *refFile != "" {
		if ref, err = readLogprobFile(*refFile); err != nil {
			return fail(err)
		}
	}
	enc := json.NewEncoder(stdout)
	lex, contexts := DefaultLexicon(), EmbeddedContexts
	if *ctxFile != "" {
		if lex, contexts, err = LoadContextStats(lex, *ctxFile); err != nil {
			return fail(err)
		}
	}
	var served *servedInput
	if len(servedFiles) > 0 {
		if served, err = readServed(lex, ks, servedFiles, *servedSession); err != nil {
			return fail(err)
		}
	}
	for _, name := range fs.Args() {
		var rep any
		if *mode == "text" {
			rep, err = verifyTextFile(lex, contexts, name, ks, dk, served)
		} else {
			rep, err = verifyLogprobFile(name, ref, probes, ks, dk)
		}
		if err != nil {
			return fail(err)
		}
		if err := enc.Encode(rep); err != nil {
			return fail(err)
		}
	}
	return 0
}

// RunContexts is the command `distillguard watermark contexts`:
//
//	contexts -o OUT FILE...
//
// It counts the candidates of the synonym table in the provider's own
// unmarked output (FILE: JSONL or plain text, as verify's text mode reads
// them) and writes the context statistics the frequency-preserving
// assignment works from (ContextStats.Format). Count at least as much text
// as anyone could compare marked output against: the statistics' own
// sampling error is what a large enough comparison would see.
//
// Exit status: 0 on success, 2 on a usage or input error.
func RunContexts(args []string, stdout, stderr io.Writer) int {
	fs, fail := subcommand("contexts", "-o OUT FILE...", stderr)
	out := fs.String("o", "", "output file for the context statistics")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *out == "" || fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	lex := DefaultLexicon()
	var texts [][]byte
	for _, name := range fs.Args() {
		f, err := openInput(name)
		if err != nil {
			return fail(err)
		}
		err = readTexts(f, func(b []byte) { texts = append(texts, append([]byte(nil), b...)) })
		f.Close()
		if err != nil {
			return fail(fmt.Errorf("%s: %w", name, err))
		}
	}
	cs := BuildContextStats(lex, texts)
	if err := os.WriteFile(*out, cs.Format(lex), 0o644); err != nil {
		return fail(err)
	}
	fmt.Fprintf(stdout, "%d texts, %d (set, slot) units\n", len(texts), cs.Sets())
	return 0
}

// EmbeddedContexts names the embedded context statistics (ContextsName).
const EmbeddedContexts = "embedded"

// LoadContextStats reads a context statistics file (RunContexts writes
// one) and returns lex marking with it, and the file's name as the
// evidence export and verify's report give it: "sha256:" and the hex
// SHA-256 of its bytes, so a report and an export made with the same
// statistics say so whatever the file is called.
func LoadContextStats(lex *Lexicon, path string) (*Lexicon, string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("watermark: context statistics: %w", err)
	}
	cs, err := ParseContextStats(lex, b)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w (write it with `distillguard watermark contexts`)", path, err)
	}
	sum := sha256.Sum256(b)
	return lex.WithContextStats(cs), "sha256:" + hex.EncodeToString(sum[:]), nil
}

// DecoyKeys returns n keys derived from a fixed public label: keys nobody
// marks with, whose scores show what chance alone gives.
func DecoyKeys(n int) ([]*Key, error) {
	out := make([]*Key, n)
	for i := range out {
		secret := []byte(fmt.Sprintf("distillguard watermark decoy key %032d", i))
		k, err := NewKey(fmt.Sprintf("decoy-%d", i), secret)
		if err != nil {
			return nil, err
		}
		out[i] = k
	}
	return out, nil
}

// TextReport is the output of text mode for one file.
type TextReport struct {
	File string `json:"file"`
	Mode string `json:"mode"`
	// Contexts names the statistics the mark was replayed with
	// (EmbeddedContexts or LoadContextStats's name): the evidence export's
	// watermark.contexts says which the server marked with.
	Contexts string `json:"contexts,omitempty"`
	// ServedTexts and ServedRecords are the served responses and served
	// records (-served) the test weighed learned groups by.
	ServedTexts   int64 `json:"served_texts,omitempty"`
	ServedRecords int   `json:"served_records,omitempty"`
	Result
	// Statistic repeats Z under the generic name.
	Statistic float64 `json:"statistic"`
	// PValueAnyKey bounds the chance that any of the keys scores this
	// well: min(1, keys * p_value).
	PValueAnyKey float64  `json:"p_value_any_key"`
	Keys         []Result `json:"keys,omitempty"`
	// Decoys and DecoysAsExtreme: decoy keys scored, and how many had a
	// p-value at most the best key's.
	Decoys          int `json:"decoys,omitempty"`
	DecoysAsExtreme int `json:"decoys_as_extreme,omitempty"`
}

// LogprobReport is the output of logprobs mode for one file.
type LogprobReport struct {
	File string `json:"file"`
	Mode string `json:"mode"`
	LogprobResult
	Statistic       float64         `json:"statistic"`
	PValueAnyKey    float64         `json:"p_value_any_key"`
	Keys            []LogprobResult `json:"keys,omitempty"`
	Decoys          int             `json:"decoys,omitempty"`
	DecoysAsExtreme int             `json:"decoys_as_extreme,omitempty"`
}

func openInput(name string) (io.ReadCloser, error) {
	if name == "-" {
		return io.NopCloser(os.Stdin), nil
	}
	return os.Open(name)
}

// readTextFile reads the texts of file name ("-": standard input) into
// add, as verify's text mode reads them.
func readTextFile(name string, add func([]byte)) error {
	f, err := openInput(name)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := readTexts(f, add); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// servedInput is what -served gave: served texts and served records (by
// the key their digests are keyed with).
type servedInput struct {
	texts   *Sample
	records map[*Key][]uint64
	nrec    int
}

// readServed reads the -served files: texts, and served records (of
// session only, when not empty) whose key ks must hold.
func readServed(lex *Lexicon, ks *KeySet, files []string, session string) (*servedInput, error) {
	in := &servedInput{texts: NewVerifier(lex).NewSample(), records: map[*Key][]uint64{}}
	for _, name := range files {
		f, err := openInput(name)
		if err != nil {
			return nil, fmt.Errorf("-served %w", err)
		}
		err = readInputs(f, in.texts.Add, func(r servedRecord) error {
			if session != "" && r.session != session {
				return nil
			}
			k, ok := ks.Lookup(r.keyID)
			if !ok {
				return fmt.Errorf("served record keyed by %q, which the key file does not hold", r.keyID)
			}
			ds, err := ParseServedGroups(r.groups)
			if err != nil {
				return err
			}
			in.records[k] = append(in.records[k], ds...)
			in.nrec++
			return nil
		})
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("-served %s: %w", name, err)
		}
	}
	if in.texts.Texts() == 0 && in.nrec == 0 {
		return nil, errors.New("-served: no served texts or records found")
	}
	return in, nil
}

// apply weighs sm by what was served.
func (in *servedInput) apply(sm *Sample) {
	if in.texts.Texts() > 0 {
		sm.UseServed(in.texts)
	}
	for k, ds := range in.records {
		_ = sm.UseServedRecord(k, ds) // k is never nil here
	}
}

// verifyTextFile tests the texts of file name against every key of ks
// (and the decoys) with lex, whose statistics contexts names, weighing
// groups by what was served when served is not nil.
func verifyTextFile(lex *Lexicon, contexts, name string, ks *KeySet, decoys []*Key, served *servedInput) (*TextReport, error) {
	sm := NewVerifier(lex).NewSample()
	if err := readTextFile(name, sm.Add); err != nil {
		return nil, err
	}
	rep := &TextReport{File: name, Mode: "text", Contexts: contexts}
	if served != nil {
		served.apply(sm)
		rep.ServedTexts, rep.ServedRecords = served.texts.Texts(), served.nrec
	}
	for i, k := range ks.Keys() {
		r := sm.Score(k)
		if len(ks.Keys()) > 1 {
			rep.Keys = append(rep.Keys, r)
		}
		if i == 0 || r.PValue < rep.PValue {
			rep.Result = r
		}
	}
	rep.Statistic = rep.Z
	rep.PValueAnyKey = math.Min(1, float64(len(ks.Keys()))*rep.PValue)
	rep.Decoys = len(decoys)
	for _, k := range decoys {
		if sm.Score(k).PValue <= rep.PValue {
			rep.DecoysAsExtreme++
		}
	}
	return rep, nil
}

func readLogprobFile(name string) ([]LogprobPosition, error) {
	f, err := openInput(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	pos, err := ParseLogprobs(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return pos, nil
}

func verifyLogprobFile(name string, ref []LogprobPosition, probes []ProbeContext, ks *KeySet, decoys []*Key) (*LogprobReport, error) {
	pos, err := readLogprobFile(name)
	if err != nil {
		return nil, err
	}
	ls, err := NewLogprobSample(pos, ref, probes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	rep := &LogprobReport{File: name, Mode: "logprobs"}
	for i, k := range ks.Keys() {
		r := ls.Score(k)
		if len(ks.Keys()) > 1 {
			rep.Keys = append(rep.Keys, r)
		}
		if i == 0 || r.PValue < rep.PValue {
			rep.LogprobResult = r
		}
	}
	rep.Statistic = rep.Z
	rep.PValueAnyKey = math.Min(1, float64(len(ks.Keys()))*rep.PValue)
	rep.Decoys = len(decoys)
	for _, k := range decoys {
		if ls.Score(k).PValue <= rep.PValue {
			rep.DecoysAsExtreme++
		}
	}
	return rep, nil
}

// ReadProbeContexts reads probe prompts, one JSON object a line (blank
// lines skipped): {"prompt": TEXT}, {"features": [NUMBERS]}, or an OpenAI
// chat request, whose context is its newest user message: its string
// content, or its text parts joined by line feeds. That is the prompt the
// server keys the logprob mark on (mutate.ParseRequest's Prompt), so a
// probe's system prompt or earlier turns do not change its context. The
// server keeps at most processing.max_prompt_bytes of that prompt (cut at
// a UTF-8 boundary) and keys the mark on what it kept; maxPrompt is that
// setting (<= 0 keeps the prompt whole), so a long probe gets the context
// the server gave it.
func ReadProbeContexts(r io.Reader, maxPrompt int) ([]ProbeContext, error) {
	var out []ProbeContext
	err := eachJSONLine(r, func(doc *struct {
		Prompt   *string        `json:"prompt"`
		Features []float64      `json:"features"`
		Messages []probeMessage `json:"messages"`
	}) error {
		var c ProbeContext
		switch {
		case doc.Features != nil:
			c.Features = doc.Features
		case doc.Prompt != nil:
			c.Text = *doc.Prompt
		case doc.Messages != nil:
			i := len(doc.Messages) - 1
			for i >= 0 && doc.Messages[i].Role != "user" {
				i--
			}
			if i < 0 {
				return errors.New("a \"messages\" probe without a user message has no prompt")
			}
			t, err := doc.Messages[i].text()
			if err != nil {
				return err
			}
			c.Text = t
		default:
			return errors.New("no \"prompt\", \"features\" or \"messages\"")
		}
		if maxPrompt > 0 {
			c.Text = textcut.Prefix(c.Text, maxPrompt) // the cut mutate.ParseRequest makes
		}
		out = append(out, c)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DefaultMaxPromptBytes is the server's default processing.max_prompt_bytes
// (config/default.yaml): the prompt bytes it keys the logprob mark on.
const DefaultMaxPromptBytes = 8192

// answerText collects one answer's text parts in order, and its thoughts
// (Gemini thought parts, Responses reasoning summaries, Anthropic thinking
// blocks) apart: a text of their own, so that no word pair spans the two.
type answerText struct{ answer, thought []byte }

func (a *answerText) add(text string, thought bool) {
	if thought {
		a.thought = append(a.thought, text...)
	} else {
		a.answer = append(a.answer, text...)
	}
}

// emit hands the thoughts, then the answer, to add (those not empty) and
// says how many it handed.
func (a *answerText) emit(add func([]byte)) int {
	n := 0
	for _, t := range [][]byte{a.thought, a.answer} {
		if len(t) > 0 {
			add(t)
			n++
		}
	}
	return n
}

// readTexts calls add for every text of r (see RunVerify for the forms).
func readTexts(r io.Reader, add func([]byte)) error { return readInputs(r, add, nil) }

// servedRecord is a served record line (watermark.log_served).
type servedRecord struct{ session, keyID, groups string }

// readInputs reads texts as readTexts does and, with record not nil,
// served records too (log lines with served_groups); other log lines
// (a "msg" and no text) are skipped then, so a whole server log can be
// given.
func readInputs(r io.Reader, add func([]byte), record func(servedRecord) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	head, _ := br.Peek(512)
	if t := bytes.TrimLeft(head, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		b, err := io.ReadAll(io.LimitReader(br, maxLineBytes+1))
		if err != nil {
			return err
		}
		if len(b) > maxLineBytes {
			return fmt.Errorf("plain text larger than %d bytes", maxLineBytes)
		}
		add(b)
		return nil
	}
	return eachJSONLine(br, func(doc *struct {
		Text    *string `json:"text"`
		Choices []struct {
			Text    *string `json:"text"`
			Message *struct {
				Content *string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
		// https://ai.google.dev/api/generate-content#generatecontentresponse
		Candidates []struct {
			Content *struct {
				Parts []struct {
					Text    *string `json:"text"`
					Thought bool    `json:"thought"`
				} `json:"parts"`
			} `json:"content"`
		} `json:"candidates"`
		// https://platform.openai.com/docs/api-reference/responses/object
		Output []struct {
			Type    string `json:"type"`
			Content []struct {
				Type string  `json:"type"`
				Text *string `json:"text"`
			} `json:"content"`
			Summary []struct {
				Text *string `json:"text"`
			} `json:"summary"`
		} `json:"output"`
		// https://docs.anthropic.com/en/api/messages#response-content
		Type    string `json:"type"`
		Content []struct {
			Type     string  `json:"type"`
			Text     *string `json:"text"`
			Thinking *string `json:"thinking"`
		} `json:"content"`
		// A server log line; a served record has served_groups.
		Msg          *string `json:"msg"`
		Session      string  `json:"session"`
		KeyID        string  `json:"key_id"`
		ServedGroups *string `json:"served_groups"`
	}) error {
		if doc.ServedGroups != nil {
			if record == nil {
				return errors.New("a served record (the \"watermark served\" log line), not a response: served records are given with -served")
			}
			return record(servedRecord{session: doc.Session, keyID: doc.KeyID, groups: *doc.ServedGroups})
		}
		n := 0
		if doc.Text != nil {
			add([]byte(*doc.Text))
			n++
		}
		for _, c := range doc.Choices {
			switch {
			case c.Message != nil && c.Message.Content != nil:
				add([]byte(*c.Message.Content))
				n++
			case c.Text != nil:
				add([]byte(*c.Text))
				n++
			}
		}
		for _, c := range doc.Candidates {
			if c.Content == nil {
				continue
			}
			var at answerText // each candidate is an answer of its own
			for _, p := range c.Content.Parts {
				if p.Text != nil {
					at.add(*p.Text, p.Thought)
				}
			}
			n += at.emit(add)
		}
		// A response: its messages' output_text parts, its reasoning
		// summaries. An Anthropic message: its text and thinking blocks.
		var at answerText
		for _, o := range doc.Output {
			switch o.Type {
			case "message":
				for _, c := range o.Content {
					if c.Type == "output_text" && c.Text != nil {
						at.add(*c.Text, false)
					}
				}
			case "reasoning":
				for _, c := range o.Summary {
					if c.Text != nil {
						at.add(*c.Text, true)
					}
				}
			}
		}
		if doc.Type == "message" {
			for _, c := range doc.Content {
				switch {
				case c.Type == "text" && c.Text != nil:
					at.add(*c.Text, false)
				case c.Type == "thinking" && c.Thinking != nil:
					at.add(*c.Thinking, true)
				}
			}
		}
		n += at.emit(add)
		if n == 0 && doc.Msg != nil {
			if record != nil {
				return nil // another log line
			}
			return fmt.Errorf("a server log line (msg %q), not a response: served records are given with -served", *doc.Msg)
		}
		if n == 0 {
			return errors.New("no \"text\", and no choices, candidates, output or content with text")
		}
		return nil
	})
}
