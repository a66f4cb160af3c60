// Package traffic generates labelled API traffic — benign workloads and model
// extraction attacks — for calibrating and evaluating distillguard's scoring.
//
// The generator is deterministic for a seed: the same Options give the same
// requests, byte for byte. Requests carry a simulated clock (a week starting
// at Start), ground-truth labels (family, account, attack), the headers and
// source address the gateway would see, and an OpenAI-format JSON body. They
// are returned sorted by time, every account's requests interleaved with
// everyone else's, so replaying them in order is a faithful simulation of a
// gateway's view.
//
// Every family's parameters live in one table (see Families); Options.Scale
// multiplies the number of accounts so tests can run a small version.
package traffic

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/distillguard/distillguard/internal/corpus"
)

// Request is one generated API call. It is self-describing: everything the
// gateway sees (Header, SourceAddress, Method, Path, Body) plus the ground
// truth (Family, Account, Attack, Language, Conversation).
type Request struct {
	// Seq is the index in the time-ordered output.
	Seq int `json:"seq"`
	// Time is the simulated arrival time.
	Time time.Time `json:"time"`
	// Family is the name of the Family that produced the request.
	Family string `json:"family"`
	// Attack is true for extraction traffic.
	Attack bool `json:"attack"`
	// Account is the ground-truth account label ("attack-reasoning/007").
	// Each account uses one credential, so it is also the scoring session
	// a correct gateway should derive.
	Account string `json:"account"`
	// Index is the request's position within its account (0-based).
	Index int `json:"index"`
	// Conversation numbers the account's chat conversations (0-based); -1
	// for requests that are not part of a conversation.
	Conversation int `json:"conversation"`
	// Language is the BCP-47 code of the harvesting instruction for
	// reasoning-trace requests, "" otherwise.
	Language string `json:"language,omitempty"`
	// Header holds the request headers, lower-case names.
	Header map[string]string `json:"header"`
	// SourceAddress is the client "ip:port" ("[ipv6]:port" for IPv6), as in
	// Envoy's source.address attribute.
	SourceAddress string `json:"source_address"`
	Method        string `json:"method"`
	// Path is /v1/chat/completions, /v1/completions or /v1/embeddings.
	Path string `json:"path"`
	// Body is the JSON request body (OpenAI API format). It is a
	// json.RawMessage so a dump of Requests shows bodies as JSON.
	Body json.RawMessage `json:"body"`
}

// Paths used by the generator.
const (
	PathChat        = "/v1/chat/completions"
	PathCompletions = "/v1/completions"
	PathEmbeddings  = "/v1/embeddings"
)

// Family describes one kind of traffic. All numbers are at Scale 1.
type Family struct {
	Name   string
	Attack bool
	// Accounts is the number of accounts (credentials); Scale multiplies it.
	Accounts int
	// Requests bounds the requests one account sends, drawn uniformly.
	Requests [2]int
	// StartWithin is the span, from the family's first start, in which
	// accounts begin; FirstStart offsets the family from the simulation start.
	FirstStart  time.Duration
	StartWithin time.Duration
	// Gap is the median time between an account's consecutive requests and
	// Jitter the sigma of its lognormal noise (0 is a metronome; 1 is
	// burstier than Poisson).
	Gap    time.Duration
	Jitter float64
	// ConversationGap is the median pause between two conversations of a
	// chat account (lognormal, sigma 1); 0 for non-chat families.
	ConversationGap time.Duration
	Description     string

	gen func(b *builder, a *account)
}

// families is THE table of family parameters.
var families = [...]Family{
	{Name: "benign-chat", Accounts: 400, Requests: [2]int{2, 20}, StartWithin: 5 * day,
		Gap: 40 * time.Second, Jitter: 0.8, ConversationGap: 8 * time.Hour,
		Description: "people chatting: HH-RLHF human turns, each request carries the growing conversation; users return over days",
		gen:         genChat},
	{Name: "benign-batch", Accounts: 2, Requests: [2]int{2000, 3000}, StartWithin: 5 * day,
		Gap: 500 * time.Millisecond, Jitter: 0.1,
		Description: "batch classification job: one template, thousands of distinct inputs, temperature 0, top_logprobs 1-2 for confidence",
		gen:         genBatch},
	{Name: "benign-eval", Accounts: 2, Requests: [2]int{1315, 1315}, StartWithin: 5 * day,
		Gap: time.Second, Jitter: 0.05,
		Description: "evaluation harness running GSM8K once: single-turn, temperature 0, steady rate",
		gen:         genEval},
	{Name: "benign-app", Accounts: 4, Requests: [2]int{400, 800}, StartWithin: 4 * day,
		Gap: 3 * time.Minute, Jitter: 1.0,
		Description: "application backend serving many end users through one key: support chat, embeddings, occasional top_logprobs 1-3",
		gen:         genApp},
	{Name: "attack-selfinstruct", Attack: true, Accounts: 20, Requests: [2]int{200, 500}, StartWithin: 6 * day,
		Gap: 3 * time.Second, Jitter: 0.2,
		Description: "Alpaca-style harvesting: diverse seed tasks, questions and chat turns in instruction wrappers, single-turn, steady rate",
		gen:         genSelfInstruct},
	{Name: "attack-reasoning", Attack: true, Accounts: 20, Requests: [2]int{150, 400}, StartWithin: 6 * day,
		Gap: 4 * time.Second, Jitter: 0.3,
		Description: "reasoning-trace harvesting: GSM8K questions with step-by-step demands in 13 languages",
		gen:         genReasoning},
	{Name: "attack-sweep", Attack: true, Accounts: 15, Requests: [2]int{100, 300}, StartWithin: 6 * day,
		Gap: 1500 * time.Millisecond, Jitter: 0.1,
		Description: "template sweep probing a decision boundary with tiny variations, temperature 0, short answers",
		gen:         genSweep},
	{Name: "attack-logitbias", Attack: true, Accounts: 10, Requests: [2]int{200, 600}, StartWithin: 6 * day,
		Gap: 200 * time.Millisecond, Jitter: 0.1,
		Description: "logit-bias probing (Carlini et al. 2024): max_tokens 1, top_logprobs 20, logit_bias up to 300 entries",
		gen:         genLogitBias},
	{Name: "attack-distributed", Attack: true, Accounts: 300, Requests: [2]int{3, 10}, FirstStart: 2 * day, StartWithin: 12 * time.Hour,
		Gap: 2 * time.Minute, Jitter: 0.8,
		Description: "distributed campaign: hundreds of accounts, few requests each, shared wrapper templates, one IP range, one client",
		gen:         genDistributed},
	{Name: "attack-slowlow", Attack: true, Accounts: 10, Requests: [2]int{100, 200}, StartWithin: day,
		Gap: 45 * time.Minute, Jitter: 0.5,
		Description: "slow-and-low harvesting spread over days, one wrapper template per account",
		gen:         genSlowLow},
	{Name: "attack-adaptive", Attack: true, Accounts: 10, Requests: [2]int{150, 300}, StartWithin: 5 * day,
		Gap: 30 * time.Second, Jitter: 0.9, ConversationGap: 2 * time.Hour,
		Description: "adaptive harvester: irregular timing, half of its requests are benign-looking multi-turn chat",
		gen:         genAdaptive},
	// Production-like families (production.go).
	{Name: "benign-agent", Accounts: 40, Requests: [2]int{80, 400}, StartWithin: 4 * day,
		Description: "developers using coding assistants: many accounts share one long system prompt and tool schema; tool loops re-send the same user turn with tool calls and results",
		gen:         genAgent},
	{Name: "benign-rag", Accounts: 3, Requests: [2]int{1500, 2500}, StartWithin: 2 * day,
		Gap: 25 * time.Second, Jitter: 1.0,
		Description: "retrieval applications: one key, many end users, one fixed context template filled with retrieved passages, around the clock",
		gen:         genRAG},
	{Name: "benign-persona", Accounts: 150, Requests: [2]int{6, 30}, StartWithin: 5 * day,
		Gap: 45 * time.Second, Jitter: 0.8, ConversationGap: 10 * time.Hour,
		Description: "people starting conversations from popular \"I want you to act as ...\" prompts, then chatting; returning over days",
		gen:         genPersona},
	{Name: "benign-office", Accounts: 60, Requests: [2]int{8, 40}, FirstStart: day, StartWithin: 3 * time.Hour,
		Gap: 50 * time.Second, Jitter: 0.8, ConversationGap: 3 * time.Hour,
		Description: "employees behind one corporate NAT with one managed browser, onboarded the same morning, chatting on workdays",
		gen:         genOffice},
	{Name: "benign-confidence", Accounts: 4, Requests: [2]int{300, 900}, StartWithin: 4 * day,
		Gap: 40 * time.Second, Jitter: 1.0,
		Description: "applications displaying the model's confidence: top_logprobs 3 on every request",
		gen:         genConfidence},
	{Name: "benign-evalcot", Accounts: 2, Requests: [2]int{1319, 1319}, StartWithin: 5 * day,
		Gap: 1500 * time.Millisecond, Jitter: 0.1,
		Description: "evaluation harness running GSM8K with the zero-shot chain-of-thought prompt, in English, once",
		gen:         genEvalCoT},
	{Name: "attack-diffuse", Attack: true, Accounts: 300, Requests: [2]int{2, 4}, FirstStart: 3 * day, StartWithin: 18 * time.Hour,
		Gap: 3 * time.Minute, Jitter: 0.9,
		Description: "diffuse campaign: hundreds of fresh accounts, 2-4 requests each, own addresses and user-agents, wrappers paraphrased per account, reasoning demands in a dozen languages",
		gen:         genDiffuse},
	{Name: "attack-dressed", Attack: true, Accounts: 8, Requests: [2]int{600, 1200}, StartWithin: 4 * day,
		Description: "harvesting dressed as chat: a dataset question, then generic follow-ups, at a human pace around the clock for days",
		gen:         genDressed},
	{Name: "attack-softlabel", Attack: true, Accounts: 10, Requests: [2]int{150, 500}, StartWithin: 5 * day,
		Gap: 8 * time.Second, Jitter: 0.7,
		Description: "soft-label harvesting: top_logprobs 5-20 on every request over dataset prompts",
		gen:         genSoftLabel},
	{Name: "attack-lbdist", Attack: true, Accounts: 120, Requests: [2]int{3, 10}, FirstStart: 2 * day, StartWithin: day,
		Gap: 20 * time.Second, Jitter: 0.8,
		Description: "distributed logit-bias probing: many accounts, a handful of max_tokens-1 probes each with hundreds of biased tokens",
		gen:         genLogitBiasDist},
}

const day = 24 * time.Hour

// Horizon is the simulated period: chat users stop returning after it; a
// few long-running accounts (slow-and-low) may finish up to a day later.
const Horizon = 7 * day

// Families returns a copy of the family table.
func Families() []Family { return append([]Family(nil), families[:]...) }

// Options configure Generate.
type Options struct {
	// CorpusDir holds the corpus files; "" means corpus.Dir().
	CorpusDir string
	// Seed makes the output deterministic.
	Seed uint64
	// Scale multiplies every family's account count (rounded, at least 1;
	// the distributed campaign keeps at least 20 accounts so it remains a
	// campaign). 0 means 1.
	Scale float64
	// Start is the beginning of the simulated week; zero means DefaultStart.
	Start time.Time
	// Families restricts generation to the named families; empty means all.
	Families []string
	// MinAttackAccounts raises every attack family to at least this many
	// accounts, and the campaign families (distributed, diffuse, logit-bias
	// probes: their detection depends on their size) to their full size,
	// so a small-scale run keeps meaningful attack statistics. 0 keeps the
	// scaled counts (campaigns at least 40).
	MinAttackAccounts int
	// Variant selects the content tables and timing of the production-like
	// families: 0 is the variant the scoring defaults were tuned on, 1 is
	// held out (never tuned on; reported separately).
	Variant int
}

// DefaultStart is the simulated clock's origin: Monday 2025-03-03 00:00 UTC.
func DefaultStart() time.Time { return time.Date(2025, 3, 3, 0, 0, 0, 0, time.UTC) }

// Generate loads the corpus and generates the traffic, sorted by time.
func Generate(o Options) ([]Request, error) {
	dir := o.CorpusDir
	if dir == "" {
		dir = corpus.Dir()
	}
	c, err := LoadCorpus(dir)
	if err != nil {
		return nil, err
	}
	return GenerateFrom(c, o)
}

// GenerateFrom generates traffic from an already loaded corpus.
func GenerateFrom(c *Corpus, o Options) ([]Request, error) {
	if o.Scale < 0 || math.IsNaN(o.Scale) || math.IsInf(o.Scale, 0) {
		return nil, fmt.Errorf("traffic: scale %v must be a positive number", o.Scale)
	}
	if o.Scale == 0 {
		o.Scale = 1
	}
	if o.Start.IsZero() {
		o.Start = DefaultStart()
	}
	want := map[string]bool{}
	for _, n := range o.Families {
		found := false
		for i := range families {
			found = found || families[i].Name == n
		}
		if !found {
			return nil, fmt.Errorf("traffic: unknown family %q", n)
		}
		want[n] = true
	}
	b := &builder{corpus: c, start: o.Start, variant: o.Variant}
	// One shuffled pass over the dialogs shared by all chat-like families,
	// so a dialog is reused only after all others have been used once.
	b.dialogOrder = rand.New(rand.NewPCG(o.Seed, 0xd1a1)).Perm(len(c.Dialogs))
	for fi := range families {
		f := &families[fi]
		if len(want) > 0 && !want[f.Name] {
			continue
		}
		n := int(math.Round(float64(f.Accounts) * o.Scale))
		if n < 1 {
			n = 1
		}
		campaign := f.Name == "attack-distributed" || f.Name == "attack-diffuse" || f.Name == "attack-lbdist"
		if campaign && n < 40 {
			n = 40 // a campaign stays a campaign at small scales
		}
		if f.Attack && o.MinAttackAccounts > 0 {
			n = max(n, o.MinAttackAccounts)
			if campaign {
				n = max(n, f.Accounts)
			}
		}
		for i := 0; i < n; i++ {
			a := b.newAccount(f, fi, i, o.Seed)
			f.gen(b, a)
		}
	}
	out := b.out
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].Time.Equal(out[j].Time) {
			return out[i].Time.Before(out[j].Time)
		}
		if out[i].Account != out[j].Account {
			return out[i].Account < out[j].Account
		}
		return out[i].Index < out[j].Index
	})
	for i := range out {
		out[i].Seq = i
	}
	return out, nil
}

// builder accumulates requests.
type builder struct {
	corpus      *Corpus
	start       time.Time
	dialogOrder []int
	dialogNext  int
	variant     int
	out         []Request
}

// account is one credential's generation state.
type account struct {
	fam     *Family
	index   int // position within the family
	label   string
	rng     *rand.Rand
	header  map[string]string
	addr    string
	t       time.Time
	n       int // requests budget
	emitted int
}

func (b *builder) newAccount(f *Family, fi, i int, seed uint64) *account {
	rng := rand.New(rand.NewPCG(seed, uint64(fi)<<32|uint64(i)))
	a := &account{
		fam:   f,
		index: i,
		label: fmt.Sprintf("%s/%03d", f.Name, i),
		rng:   rng,
		n:     f.Requests[0] + rng.IntN(f.Requests[1]-f.Requests[0]+1),
	}
	a.t = b.start.Add(f.FirstStart + time.Duration(rng.Int64N(int64(f.StartWithin)+1)))
	a.header = map[string]string{
		"content-type":  "application/json",
		"authorization": "Bearer sk-proj-" + hexToken(rng, 24),
	}
	return a
}

// next advances the account clock by one lognormal gap.
func (a *account) next() { a.t = a.t.Add(lognormal(a.rng, a.fam.Gap, a.fam.Jitter)) }

func lognormal(rng *rand.Rand, median time.Duration, sigma float64) time.Duration {
	d := time.Duration(float64(median) * math.Exp(sigma*rng.NormFloat64()))
	if d < 10*time.Millisecond {
		d = 10 * time.Millisecond
	}
	return d
}

func hexToken(rng *rand.Rand, n int) string {
	const hexd = "0123456789abcdef"
	b := make([]byte, n)
	for i := range b {
		b[i] = hexd[rng.IntN(16)]
	}
	return string(b)
}

func (b *builder) emit(a *account, path string, body any, conv int, lang string) {
	raw, err := json.Marshal(body)
	if err != nil {
		// Bodies are built from plain structs; failing here is a bug.
		panic("traffic: marshal: " + err.Error())
	}
	h := make(map[string]string, len(a.header))
	for k, v := range a.header {
		h[k] = v
	}
	b.out = append(b.out, Request{
		Time:          a.t,
		Family:        a.fam.Name,
		Attack:        a.fam.Attack,
		Account:       a.label,
		Index:         a.emitted,
		Conversation:  conv,
		Language:      lang,
		Header:        h,
		SourceAddress: a.addr,
		Method:        "POST",
		Path:          path,
		Body:          raw,
	})
	a.emitted++
}

func (b *builder) nextDialog() []string {
	d := b.corpus.Dialogs[b.dialogOrder[b.dialogNext%len(b.dialogOrder)]]
	b.dialogNext++
	return d
}

func pick[T any](rng *rand.Rand, xs []T) T { return xs[rng.IntN(len(xs))] }

func fptr(f float64) *float64 { return &f }
func iptr(i int) *int         { return &i }

// Request bodies. Field order follows the OpenAI API reference
// (https://platform.openai.com/docs/api-reference/chat/create).
type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type chatBody struct {
	Model       string         `json:"model"`
	Messages    []message      `json:"messages"`
	Temperature *float64       `json:"temperature,omitempty"`
	MaxTokens   int            `json:"max_tokens,omitempty"`
	N           int            `json:"n,omitempty"`
	Stream      bool           `json:"stream,omitempty"`
	Logprobs    bool           `json:"logprobs,omitempty"`
	TopLogprobs *int           `json:"top_logprobs,omitempty"`
	LogitBias   map[string]int `json:"logit_bias,omitempty"`
	Stop        []string       `json:"stop,omitempty"`
	User        string         `json:"user,omitempty"`
}

// completionBody is the legacy completions request
// (https://platform.openai.com/docs/api-reference/completions/create):
// logprobs is an integer there.
type completionBody struct {
	Model       string         `json:"model"`
	Prompt      string         `json:"prompt"`
	MaxTokens   int            `json:"max_tokens,omitempty"`
	Temperature *float64       `json:"temperature,omitempty"`
	N           int            `json:"n,omitempty"`
	Logprobs    *int           `json:"logprobs,omitempty"`
	Echo        bool           `json:"echo,omitempty"`
	LogitBias   map[string]int `json:"logit_bias,omitempty"`
	Stop        []string       `json:"stop,omitempty"`
}

type embeddingBody struct {
	Model          string `json:"model"`
	Input          string `json:"input"`
	EncodingFormat string `json:"encoding_format,omitempty"`
}

// Client pools.
var (
	browserUAs = [...]string{
		"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.0.0 Safari/537.36",
		"Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
	}
	sdkUAs = [...]string{
		"OpenAI/Python 1.51.0",
		"OpenAI/Python 1.40.8",
		"OpenAI/NodeJS/4.67.1",
		"python-requests/2.32.3",
	}
	scriptUAs = [...]string{
		"OpenAI/Python 1.51.0",
		"python-httpx/0.27.0",
		"python-requests/2.32.3",
		"aiohttp/3.9.5",
		"curl/8.5.0",
	}
	chatModels = [...]string{"gpt-4o-mini", "gpt-4o", "llama-3.1-70b-instruct", "qwen2.5-72b-instruct"}
	// residential/ISP-like and cloud-like first octets; all generated
	// addresses stay out of private and reserved ranges.
	residentialOctets = [...]int{24, 31, 37, 46, 62, 71, 73, 77, 81, 86, 91, 94, 98, 109, 176, 178, 188, 212, 217}
	cloudOctets       = [...]int{3, 13, 18, 34, 35, 52, 54, 104, 137, 138, 139, 157, 159, 161, 165, 167}
	// officeNAT is a handful of shared egress addresses: people behind one
	// corporate NAT share an IP (and a /24).
	officeNAT = [...]string{"81.2.69.142", "81.2.69.160", "212.58.244.20"}
)

func ipv4(rng *rand.Rand, octets []int) string {
	return fmt.Sprintf("%d.%d.%d.%d", pick(rng, octets), rng.IntN(256), rng.IntN(256), 1+rng.IntN(254))
}

func withPort(rng *rand.Rand, ip string) string {
	port := 1024 + rng.IntN(64000)
	if strings.Contains(ip, ":") {
		return fmt.Sprintf("[%s]:%d", ip, port)
	}
	return fmt.Sprintf("%s:%d", ip, port)
}

func residentialAddr(rng *rand.Rand) string {
	switch r := rng.Float64(); {
	case r < 0.08:
		return withPort(rng, pick(rng, officeNAT[:]))
	case r < 0.18:
		return withPort(rng, fmt.Sprintf("2a02:%x:%x:%x::%x", 0x1000+rng.IntN(0xe000), rng.IntN(0x10000), rng.IntN(0x10000), 1+rng.IntN(0xfff)))
	default:
		return withPort(rng, ipv4(rng, residentialOctets[:]))
	}
}

func cloudAddr(rng *rand.Rand) string { return withPort(rng, ipv4(rng, cloudOctets[:])) }

var assistantReplies = [...]string{
	"Sure, here is what I can tell you about that.",
	"I'm not sure I understand. Could you tell me a bit more?",
	"Here are a few ideas you could try.",
	"That depends on a few things; here is a short overview.",
	"I can't help with that, but here is something related that might be useful.",
	"Good question. The short answer is that it varies.",
}

// genChat: a person returning over days for several conversations.
func genChat(b *builder, a *account) {
	rng := a.rng
	if rng.Float64() < 0.7 {
		a.header["user-agent"] = pick(rng, browserUAs[:])
	} else {
		a.header["user-agent"] = pick(rng, sdkUAs[:])
	}
	home := residentialAddr(rng)
	model := pick(rng, chatModels[:])
	system := rng.Float64() < 0.3
	stream := rng.Float64() < 0.5
	var temp *float64
	if rng.Float64() < 0.5 {
		temp = fptr(pick(rng, []float64{0.7, 1.0}))
	}
	for conv := 0; a.emitted < a.n; conv++ {
		if conv > 0 {
			a.t = a.t.Add(lognormal(rng, a.fam.ConversationGap, 1.0))
		}
		if a.t.After(b.start.Add(Horizon)) {
			return // people stop coming back at the end of the simulated week
		}
		// Mobile users change addresses between conversations now and then.
		a.addr = home
		if rng.Float64() < 0.15 {
			a.addr = residentialAddr(rng)
		}
		b.chatConversation(a, b.nextDialog(), conv, model, system, stream, temp, a.n-a.emitted)
	}
}

// chatConversation emits up to limit turns of dialog d, each request carrying
// the whole conversation so far.
func (b *builder) chatConversation(a *account, d []string, conv int, model string, system, stream bool, temp *float64, limit int) {
	var msgs []message
	if system {
		msgs = append(msgs, message{"system", "You are a helpful assistant."})
	}
	for ti, turn := range d {
		if ti >= limit {
			return
		}
		if ti > 0 {
			a.next()
		}
		msgs = append(msgs, message{"user", turn})
		body := chatBody{Model: model, Messages: append([]message(nil), msgs...), Temperature: temp, Stream: stream}
		b.emit(a, PathChat, body, conv, "")
		msgs = append(msgs, message{"assistant", pick(a.rng, assistantReplies[:])})
	}
}

// batchInputs returns short texts to classify: human turns and questions.
func (b *builder) batchInputs(rng *rand.Rand) []string {
	var in []string
	for _, d := range b.corpus.Dialogs {
		in = append(in, d...)
	}
	in = append(in, b.corpus.Questions...)
	rng.Shuffle(len(in), func(i, j int) { in[i], in[j] = in[j], in[i] })
	return in
}

var batchTemplates = [...]string{
	"Classify the following customer message into exactly one of these categories: billing, technical, account, safety, other. Reply with the category name only.\n\nMessage: %s",
	"Does the following text contain a question about mathematics? Answer yes or no.\n\nText: %s",
}

func genBatch(b *builder, a *account) {
	rng := a.rng
	a.header["user-agent"] = pick(rng, sdkUAs[:2])
	a.addr = cloudAddr(rng)
	tmpl := batchTemplates[rng.IntN(len(batchTemplates))]
	inputs := b.batchInputs(rng)
	top := 1 + rng.IntN(2)
	useLogprobs := rng.Float64() < 0.8
	for i := 0; i < a.n; i++ {
		if i > 0 {
			a.next()
		}
		body := chatBody{
			Model:       "gpt-4o-mini",
			Messages:    []message{{"user", fmt.Sprintf(tmpl, inputs[i%len(inputs)])}},
			Temperature: fptr(0),
			MaxTokens:   3,
		}
		if useLogprobs {
			body.Logprobs = true
			body.TopLogprobs = iptr(top)
		}
		b.emit(a, PathChat, body, -1, "")
	}
}

// fewShot is an 8-shot-style GSM8K prompt prefix in the style of Wei et al.
// 2022 (worked exemplars, no explicit step-by-step instruction), shortened
// to four exemplars.
const fewShot = `Q: There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are done, there will be 21 trees. How many trees did the grove workers plant today?
A: There are 15 trees originally. Then there were 21 trees after some more were planted. So there must have been 21 - 15 = 6. The answer is 6.

Q: If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?
A: There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5.

Q: Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in total?
A: Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. After eating 35, they had 74 - 35 = 39. The answer is 39.

Q: Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many lollipops did Jason give to Denny?
A: Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave Denny 20 - 12 = 8. The answer is 8.

`

// genEval: a harness runs the benchmark once, in order.
func genEval(b *builder, a *account) {
	rng := a.rng
	a.header["user-agent"] = "OpenAI/Python 1.40.8"
	a.addr = cloudAddr(rng)
	completions := rng.Float64() < 0.5
	qs := b.corpus.Questions
	for i := 0; i < a.n; i++ {
		if i > 0 {
			a.next()
		}
		q := qs[i%len(qs)]
		if completions {
			b.emit(a, PathCompletions, completionBody{
				Model: "llama-3.1-70b", Prompt: fewShot + "Q: " + q + "\nA:",
				MaxTokens: 256, Temperature: fptr(0), Stop: []string{"Q:", "\n\n"},
			}, -1, "")
		} else {
			b.emit(a, PathChat, chatBody{
				Model:       "gpt-4o",
				Messages:    []message{{"user", "Solve the following grade school math problem. End your reply with a line of the form \"The answer is N\".\n\n" + q}},
				Temperature: fptr(0), MaxTokens: 512,
			}, -1, "")
		}
	}
}

var appSystems = [...]string{
	"You are the support assistant for Northwind Cloud. Answer briefly and politely. If the question is unrelated to our products, steer the user back.",
	"You are a friendly tutor inside a language-learning app. Keep answers short and encouraging.",
	"You are a writing assistant embedded in a note-taking app. Help the user with their request in under 120 words.",
}

// genApp: an application backend serving many end users through one key.
func genApp(b *builder, a *account) {
	rng := a.rng
	delete(a.header, "authorization")
	a.header["x-api-key"] = "nwk_" + hexToken(rng, 32)
	a.header["user-agent"] = pick(rng, []string{"OpenAI/NodeJS/4.67.1", "OpenAI/Python 1.51.0"})
	a.addr = cloudAddr(rng)
	system := pick(rng, appSystems[:])
	for i := 0; i < a.n; i++ {
		if i > 0 {
			a.next()
		}
		d := b.nextDialog()
		user := fmt.Sprintf("u%05d", rng.IntN(50000))
		switch r := rng.Float64(); {
		case r < 0.25:
			b.emit(a, PathEmbeddings, embeddingBody{Model: "text-embedding-3-small", Input: pick(rng, d)}, -1, "")
		default:
			msgs := []message{{"system", system}}
			if len(d) > 1 && rng.Float64() < 0.3 {
				msgs = append(msgs, message{"user", d[0]}, message{"assistant", pick(rng, assistantReplies[:])}, message{"user", d[1]})
			} else {
				msgs = append(msgs, message{"user", d[0]})
			}
			body := chatBody{Model: "gpt-4o-mini", Messages: msgs, Temperature: fptr(0.3), Stream: true, User: user}
			if rng.Float64() < 0.1 {
				body.Logprobs = true
				body.TopLogprobs = iptr(1 + rng.IntN(3))
			}
			b.emit(a, PathChat, body, -1, "")
		}
	}
}

// Harvesting wrappers shared by several attack families: the public
// Alpaca/Self-Instruct formats and common reference-answer prompts.
var wrappers = [...]string{
	"Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:",
	"Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:",
	"You are a world-class expert. Complete the task below as thoroughly and accurately as possible, and explain your answer in detail.\n\nTask: {instruction}\n{input}",
	"Generate a high-quality answer for the following instruction. The answer will be used as a reference response, so be complete and precise.\nInstruction: {instruction}\nInput: {input}\nAnswer:",
	"Answer the following question. Think step by step and show your full reasoning before giving the final answer.\n\nQuestion: {instruction}\n{input}",
}

// harvestItem is one piece of content to harvest an answer for.
type harvestItem struct{ instruction, input string }

// harvestPool mixes seed tasks, questions and human turns, shuffled.
func (b *builder) harvestPool(rng *rand.Rand) []harvestItem {
	var p []harvestItem
	for _, t := range b.corpus.Tasks {
		p = append(p, harvestItem{t.Instruction, t.Input})
	}
	for _, q := range b.corpus.Questions {
		p = append(p, harvestItem{q, ""})
	}
	for _, d := range b.corpus.Dialogs {
		p = append(p, harvestItem{d[0], ""})
	}
	rng.Shuffle(len(p), func(i, j int) { p[i], p[j] = p[j], p[i] })
	return p
}

func wrap(tmpl string, it harvestItem) string {
	s := strings.Replace(tmpl, "{instruction}", it.instruction, 1)
	s = strings.Replace(s, "{input}", it.input, 1)
	return strings.TrimSpace(s)
}

var politePrefixes = [...]string{"", "", "Please help. ", "Hi! ", "Quick task: "}

func genSelfInstruct(b *builder, a *account) {
	rng := a.rng
	a.header["user-agent"] = pick(rng, scriptUAs[:])
	a.addr = cloudAddr(rng)
	pool := b.harvestPool(rng)
	// Each account prefers one or two wrappers.
	w1, w2 := wrappers[rng.IntN(len(wrappers))], wrappers[rng.IntN(len(wrappers))]
	completions := rng.Float64() < 0.2
	n := 1
	if rng.Float64() < 0.2 {
		n = 2 + rng.IntN(3)
	}
	temp := pick(rng, []float64{0.7, 1.0})
	for i := 0; i < a.n; i++ {
		if i > 0 {
			a.next()
		}
		w := w1
		if rng.Float64() < 0.4 {
			w = w2
		}
		prompt := pick(rng, politePrefixes[:]) + wrap(w, pool[i%len(pool)])
		if completions {
			b.emit(a, PathCompletions, completionBody{Model: "gpt-3.5-turbo-instruct", Prompt: prompt, MaxTokens: 1024, Temperature: fptr(temp), N: n}, -1, "")
		} else {
			b.emit(a, PathChat, chatBody{Model: pick(rng, chatModels[:2]), Messages: []message{{"user", prompt}}, Temperature: fptr(temp), MaxTokens: 1024, N: n}, -1, "")
		}
	}
}

// reasoningTemplates demand step-by-step reasoning; {q} is the question.
var reasoningTemplates = [...]struct {
	lang  string
	forms []string
}{
	{"en", []string{"Solve the following problem step by step, showing all of your reasoning before the final answer.\n\n{q}", "{q}\n\nLet's think step by step."}},
	{"es", []string{"Resuelve el siguiente problema paso a paso y explica tu razonamiento antes de dar la respuesta final.\n\n{q}", "{q}\n\nPiensa paso a paso y muestra todo tu razonamiento."}},
	{"fr", []string{"Résous le problème suivant étape par étape et explique ton raisonnement avant de donner la réponse finale.\n\n{q}", "{q}\n\nRéfléchis étape par étape."}},
	{"de", []string{"Löse die folgende Aufgabe Schritt für Schritt und erkläre deinen Lösungsweg, bevor du die endgültige Antwort gibst.\n\n{q}", "{q}\n\nDenke Schritt für Schritt nach."}},
	{"pt", []string{"Resolva o problema a seguir passo a passo e explique seu raciocínio antes de dar a resposta final.\n\n{q}", "{q}\n\nVamos pensar passo a passo."}},
	{"it", []string{"Risolvi il seguente problema passo dopo passo e spiega il tuo ragionamento prima della risposta finale.\n\n{q}"}},
	{"zh", []string{"请一步一步地解决下面的问题，并在给出最终答案之前详细说明你的推理过程。\n\n{q}", "{q}\n\n让我们一步一步地思考。"}},
	{"ja", []string{"次の問題をステップバイステップで解き、最終的な答えを出す前に推論過程を説明してください。\n\n{q}", "{q}\n\n段階的に考えてください。"}},
	{"ko", []string{"다음 문제를 단계별로 풀고 최종 답을 제시하기 전에 추론 과정을 설명하세요.\n\n{q}", "{q}\n\n차근차근 단계적으로 생각해 봅시다."}},
	{"ru", []string{"Реши следующую задачу шаг за шагом и объясни своё рассуждение перед окончательным ответом.\n\n{q}", "{q}\n\nДавай подумаем шаг за шагом."}},
	{"ar", []string{"حل المسألة التالية خطوة بخطوة واشرح طريقة تفكيرك قبل الإجابة النهائية.\n\n{q}", "{q}\n\nلنفكر خطوة بخطوة."}},
	{"hi", []string{"निम्नलिखित प्रश्न को चरण दर चरण हल करें और अंतिम उत्तर देने से पहले अपना तर्क समझाएँ।\n\n{q}", "{q}\n\nआइए कदम दर कदम सोचें।"}},
	{"tr", []string{"Aşağıdaki problemi adım adım çöz ve nihai cevabı vermeden önce akıl yürütmeni açıkla.\n\n{q}"}},
}

// ReasoningLanguages lists the languages the reasoning family writes its
// step-by-step demands in.
func ReasoningLanguages() []string {
	out := make([]string, len(reasoningTemplates))
	for i, t := range reasoningTemplates {
		out[i] = t.lang
	}
	return out
}

func genReasoning(b *builder, a *account) {
	rng := a.rng
	a.header["user-agent"] = pick(rng, scriptUAs[:])
	a.addr = cloudAddr(rng)
	qs := append([]string(nil), b.corpus.Questions...)
	rng.Shuffle(len(qs), func(i, j int) { qs[i], qs[j] = qs[j], qs[i] })
	system := rng.Float64() < 0.3
	for i := 0; i < a.n; i++ {
		if i > 0 {
			a.next()
		}
		lt := reasoningTemplates[rng.IntN(len(reasoningTemplates))]
		prompt := strings.Replace(pick(rng, lt.forms), "{q}", qs[i%len(qs)], 1)
		var msgs []message
		if system {
			msgs = append(msgs, message{"system", "You are a meticulous math tutor."})
		}
		msgs = append(msgs, message{"user", prompt})
		b.emit(a, PathChat, chatBody{Model: pick(rng, chatModels[:2]), Messages: msgs, Temperature: fptr(0), MaxTokens: 2048}, -1, lt.lang)
	}
}

// Sweep templates: one slot varies at a time.
var sweepWords = [...]string{"nice", "rude", "stupid", "clever", "lazy", "kind", "awful", "brilliant", "weird", "annoying", "honest", "boring", "terrible", "decent", "mean", "funny"}

func genSweep(b *builder, a *account) {
	rng := a.rng
	a.header["user-agent"] = pick(rng, scriptUAs[:])
	a.addr = cloudAddr(rng)
	kind := rng.IntN(3)
	logprobs := rng.Float64() < 0.5
	for i := 0; i < a.n; i++ {
		if i > 0 {
			a.next()
		}
		var prompt string
		switch kind {
		case 0:
			prompt = fmt.Sprintf("Would you approve a loan for an applicant with an annual income of $%d and a credit score of %d? Answer only yes or no.",
				20000+1000*rng.IntN(120), 500+5*rng.IntN(70))
		case 1:
			prompt = fmt.Sprintf("Is the following sentence toxic? Answer yes or no.\nSentence: \"You are such a %s %s person.\"", pick(rng, sweepWords[:]), pick(rng, sweepWords[:]))
		default:
			prompt = fmt.Sprintf("Classify the sentiment of this review as positive or negative: \"The food was %s, but the service was %s and the price was %d dollars.\"",
				pick(rng, sweepWords[:]), pick(rng, sweepWords[:]), 5+rng.IntN(60))
		}
		body := chatBody{Model: "gpt-4o-mini", Messages: []message{{"user", prompt}}, Temperature: fptr(0), MaxTokens: 2}
		if logprobs {
			body.Logprobs = true
			body.TopLogprobs = iptr(5)
		}
		b.emit(a, PathChat, body, -1, "")
	}
}

func genLogitBias(b *builder, a *account) {
	rng := a.rng
	a.header["user-agent"] = pick(rng, scriptUAs[:])
	a.addr = cloudAddr(rng)
	prompts := []string{"Hello", "The", pick(rng, b.corpus.Questions)}
	completions := rng.Float64() < 0.3
	for i := 0; i < a.n; i++ {
		if i > 0 {
			a.next()
		}
		size := 50 + rng.IntN(251)
		bias := make(map[string]int, size)
		for len(bias) < size {
			bias[fmt.Sprint(rng.IntN(100256))] = 100
		}
		p := pick(rng, prompts)
		if completions {
			b.emit(a, PathCompletions, completionBody{Model: "gpt-3.5-turbo-instruct", Prompt: p, MaxTokens: 1, Temperature: fptr(0), Logprobs: iptr(5), LogitBias: bias}, -1, "")
		} else {
			b.emit(a, PathChat, chatBody{Model: "gpt-4o-mini", Messages: []message{{"user", p}}, MaxTokens: 1, Temperature: fptr(0), Logprobs: true, TopLogprobs: iptr(20), LogitBias: bias}, -1, "")
		}
	}
}

// campaignUAs and campaignBlocks are shared by all accounts of the
// distributed campaign.
var (
	campaignUAs    = [...]string{"python-httpx/0.27.0", "aiohttp/3.9.5"}
	campaignBlocks = [...]string{"185.220.100", "185.220.101", "185.220.102", "185.220.103"}
)

func genDistributed(b *builder, a *account) {
	rng := a.rng
	a.header["user-agent"] = pick(rng, campaignUAs[:])
	a.addr = withPort(rng, fmt.Sprintf("%s.%d", pick(rng, campaignBlocks[:]), 1+rng.IntN(254)))
	pool := b.harvestPool(rng)
	w := wrappers[pick(rng, []int{0, 1, 4})]
	for i := 0; i < a.n; i++ {
		if i > 0 {
			a.next()
		}
		b.emit(a, PathChat, chatBody{Model: "gpt-4o", Messages: []message{{"user", wrap(w, pool[i])}}, Temperature: fptr(0.7), MaxTokens: 1024}, -1, "")
	}
}

func genSlowLow(b *builder, a *account) {
	rng := a.rng
	a.header["user-agent"] = pick(rng, scriptUAs[:])
	a.addr = residentialAddr(rng)
	pool := b.harvestPool(rng)
	w := wrappers[rng.IntN(len(wrappers))]
	for i := 0; i < a.n; i++ {
		if i > 0 {
			a.next()
		}
		b.emit(a, PathChat, chatBody{Model: pick(rng, chatModels[:2]), Messages: []message{{"user", wrap(w, pool[i%len(pool)])}}, Temperature: fptr(0.7), MaxTokens: 1024}, -1, "")
	}
}

// genAdaptive interleaves harvesting with real-looking conversations, varies
// wrappers and timing, and uses a browser user-agent.
func genAdaptive(b *builder, a *account) {
	rng := a.rng
	a.header["user-agent"] = pick(rng, browserUAs[:])
	a.addr = residentialAddr(rng)
	pool := b.harvestPool(rng)
	model := pick(rng, chatModels[:])
	conv, h := 0, 0
	for a.emitted < a.n {
		if a.emitted > 0 {
			a.next()
		}
		if rng.Float64() < 0.5 {
			d := b.nextDialog()
			b.chatConversation(a, d, conv, model, false, true, fptr(0.7), min(len(d), a.n-a.emitted))
			conv++
			continue
		}
		it := pool[h%len(pool)]
		h++
		var prompt, lang string
		if rng.Float64() < 0.3 {
			lt := reasoningTemplates[rng.IntN(4)]
			prompt = strings.Replace(pick(rng, lt.forms), "{q}", it.instruction, 1)
			lang = lt.lang
		} else {
			prompt = pick(rng, politePrefixes[:]) + wrap(wrappers[rng.IntN(len(wrappers))], it)
		}
		b.emit(a, PathChat, chatBody{Model: model, Messages: []message{{"user", prompt}}, Temperature: fptr(0.7), Stream: true}, -1, lang)
	}
}
