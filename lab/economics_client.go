package lab

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Strategy is how an end-to-end attacker spends identities, time and
// wording. Every strategy adapts to refusals: a throttled or blocked
// identity waits (one account) or is dropped for a fresh one (rotation).
type Strategy struct {
	Name string
	// RotateEvery moves to a fresh identity (credential, address in another
	// /24, user-agent) after this many harvest requests; 0 keeps one.
	RotateEvery int
	// RotateOnLoss also moves on as soon as an answer comes back without
	// the logprobs it asked for: an attacker who notices degradation.
	RotateOnLoss bool
	// Paraphrase wraps every payload in another wording and number format.
	Paraphrase bool
	// Human paces requests like a person: sittings of a dozen requests a
	// minute or two apart, hours between sittings, nights off. Otherwise
	// requests follow each other Gap apart (a script).
	Human bool
	Gap   time.Duration
	// Cover is the number of benign chat requests (corpus dialogs, carrying
	// their conversation) sent per harvest request on the same identity.
	Cover float64
	// Aged warms every identity with benign chat until it has the standing
	// the configuration grants new identities (scoring.probation: requests
	// and age, read from the public configuration) before it harvests.
	Aged bool
}

// Strategies returns the attacker strategies of the end-to-end harness.
func Strategies() []Strategy {
	return []Strategy{
		{Name: "one account", Gap: 2 * time.Second},
		{Name: "rotate every 1", RotateEvery: 1, Gap: 2 * time.Second},
		{Name: "rotate every 3", RotateEvery: 3, Gap: 2 * time.Second},
		{Name: "rotate every 10", RotateEvery: 10, Gap: 2 * time.Second},
		{Name: "rotate every 3 + paraphrase", RotateEvery: 3, Paraphrase: true, Gap: 2 * time.Second},
		{Name: "rotate every 10 on loss + paraphrase", RotateEvery: 10, RotateOnLoss: true, Paraphrase: true, Gap: 2 * time.Second},
		{Name: "slow: one account, human pace over days", Human: true, Paraphrase: true},
		{Name: "slow + rotate every 10 + paraphrase", RotateEvery: 10, Human: true, Paraphrase: true},
		{Name: "one account, 3 cover chats per harvest", Cover: 3, Human: true, Paraphrase: true},
		{Name: "aged accounts, rotate every 10 on loss + paraphrase", Aged: true, RotateEvery: 10, RotateOnLoss: true, Paraphrase: true, Gap: 20 * time.Second},
	}
}

// warmup is what an aged identity must have behind it before it harvests.
type warmup struct {
	requests int
	age      time.Duration
}

// econStats is what an attack cost.
type econStats struct {
	queries   int // harvest requests sent, refused ones included
	benign    int // cover and warm-up requests sent
	refused   int // harvest requests answered 429 or 403
	accounts  int // identities used
	probation int // harvest requests answered under probation
	lossy     int // harvest answers without the logprobs asked for
	start     time.Time
	end       time.Time
}

func (s econStats) days() float64 { return s.end.Sub(s.start).Hours() / 24 }

// econClient is an attacker (or an honest user) talking to a rig under a
// strategy. Not safe for concurrent use.
type econClient struct {
	rig   *econRig
	s     Strategy
	rng   *rand.Rand
	t     time.Time
	id    identity
	used  int // harvest requests on the current identity
	burnt bool
	// sitting counts requests left in the current human sitting.
	sitting int
	cover   *coverSource
	warm    warmup
	// pool holds identities already warmed (Aged), in the order they will
	// be used.
	pool     []identity
	idSeq    int
	wrappers []string
	stats    econStats
}

func newEconClient(rig *econRig, s Strategy, seed uint64, start time.Time, cover *coverSource, warm warmup, wrappers []string) *econClient {
	c := &econClient{rig: rig, s: s, rng: newRand(seed, 0xec0), t: start, cover: cover, warm: warm, wrappers: wrappers}
	c.stats.start, c.stats.end = start, start
	c.burnt = true // the first request takes an identity
	return c
}

// popularUAs are user-agents an attacker blends in with.
func popularUAs() []string {
	return []string{
		"OpenAI/Python 1.51.0",
		"OpenAI/Python 1.40.8",
		"OpenAI/NodeJS/4.67.1",
		"python-requests/2.32.3",
		"python-httpx/0.27.0",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.0.0 Safari/537.36",
		"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
		"Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0",
		"curl/8.5.0",
		"axios/1.7.2",
	}
}

// freshIdentity is a new credential on an address of its own /24 (rented
// residential proxies and cloud hosts) with a popular user-agent.
func (c *econClient) freshIdentity() identity {
	c.idSeq++
	r := c.rng
	first := []int{24, 31, 46, 62, 73, 77, 82, 89, 94, 109, 176, 185, 3, 18, 34, 52, 104, 139, 159}[r.IntN(19)]
	addr := fmt.Sprintf("%d.%d.%d.%d:%d", first, r.IntN(256), r.IntN(256), 1+r.IntN(254), 1024+r.IntN(60000))
	ua := popularUAs()[r.IntN(len(popularUAs()))]
	return identity{token: fmt.Sprintf("sk-%016x%04d", r.Uint64(), c.idSeq), addr: addr, ua: ua}
}

// wrap renders payload in the strategy's wording; key picks the variant
// when paraphrasing (a request index, or a prompt that must stay the same
// over several requests).
func (c *econClient) wrap(payload string, key int) string {
	w := c.wrappers[0]
	if c.s.Paraphrase {
		w = c.wrappers[int(uint(key*2654435761)>>7)%len(c.wrappers)]
	}
	return strings.Replace(w, "%s", payload, 1)
}

// advance moves the clock to the next request time of the strategy.
func (c *econClient) advance() {
	if !c.s.Human {
		g := c.s.Gap
		if g <= 0 {
			g = 2 * time.Second
		}
		c.t = c.t.Add(lognormalDur(c.rng, g, 0.3))
		return
	}
	if c.sitting <= 0 {
		// A pause of hours between sittings; nobody works through the
		// night.
		c.t = c.t.Add(lognormalDur(c.rng, 3*time.Hour, 0.7))
		if h := c.t.Hour(); h >= 23 || h < 7 {
			day := c.t.Truncate(24 * time.Hour)
			if h >= 23 {
				day = day.Add(24 * time.Hour)
			}
			c.t = day.Add(7*time.Hour + time.Duration(c.rng.Float64()*float64(2*time.Hour)))
		}
		c.sitting = 4 + c.rng.IntN(16)
		return
	}
	c.sitting--
	c.t = c.t.Add(lognormalDur(c.rng, 90*time.Second, 0.8))
}

func lognormalDur(r *rand.Rand, median time.Duration, sigma float64) time.Duration {
	return time.Duration(float64(median) * math.Exp(sigma*r.NormFloat64()))
}

// rotate takes the next identity: a fresh one, or a warmed one from the
// pool (warming a new batch when the pool is empty).
func (c *econClient) rotate(ctx context.Context) error {
	c.used, c.burnt = 0, false
	c.stats.accounts++
	if !c.s.Aged || (c.warm.requests <= 0 && c.warm.age <= 0) {
		c.id = c.freshIdentity()
		return nil
	}
	if len(c.pool) == 0 {
		if err := c.warmBatch(ctx, 8); err != nil {
			return err
		}
	}
	c.id, c.pool = c.pool[0], c.pool[1:]
	return nil
}

// warmBatch ages n fresh identities together: each sends the required
// benign requests, a sitting at a time in waking hours (people sleep, and
// an account active around the clock is a signal of its own), until the
// required age has passed since its first request.
func (c *econClient) warmBatch(ctx context.Context, n int) error {
	ids := make([]identity, n)
	convs := make([]*conversation, n)
	for i := range ids {
		ids[i] = c.freshIdentity()
	}
	c.t = wakingHours(c.t)
	first := c.t
	sent := make([]int, n)
	for slices.Min(sent) < c.warm.requests || c.t.Sub(first) < c.warm.age+c.warm.age/10 {
		// One sitting: every account sends a few requests, minutes apart.
		for i, id := range ids {
			for k := 0; k < 2+c.rng.IntN(3); k++ {
				c.t = c.t.Add(lognormalDur(c.rng, 2*time.Minute, 0.6))
				if err := c.sendCover(ctx, id, &convs[i]); err != nil {
					return err
				}
				sent[i]++
			}
		}
		c.t = wakingHours(c.t.Add(lognormalDur(c.rng, 3*time.Hour, 0.5)))
	}
	c.pool = append(c.pool, ids...)
	return nil
}

// wakingHours moves t to the next morning when it falls outside 9:00-21:00.
func wakingHours(t time.Time) time.Time {
	if h := t.Hour(); h >= 21 || h < 9 {
		day := t.Truncate(24 * time.Hour)
		if h >= 21 {
			day = day.Add(24 * time.Hour)
		}
		return day.Add(9 * time.Hour)
	}
	return t
}

// sendCover sends one benign chat request for id, continuing its
// conversation (or starting a new one).
func (c *econClient) sendCover(ctx context.Context, id identity, conv **conversation) error {
	if c.cover == nil {
		return fmt.Errorf("cover traffic needs the prompt corpus")
	}
	if *conv == nil || (*conv).done() {
		*conv = c.cover.start(c.rng)
	}
	body := (*conv).next()
	out, err := c.rig.do(ctx, exchange{at: c.t, id: id, body: body})
	if err != nil {
		return err
	}
	c.stats.benign++
	c.stats.end = c.t
	_ = out
	return nil
}

// ask sends one harvest query and returns the answer, or false when every
// attempt was refused.
func (c *econClient) ask(ctx context.Context, q Query, stream bool) (Response, econOutcome, bool, error) {
	var conv *conversation
	for attempt := 0; attempt < 4; attempt++ {
		if c.burnt || (c.s.RotateEvery > 0 && c.used >= c.s.RotateEvery) {
			if err := c.rotate(ctx); err != nil {
				return Response{}, econOutcome{}, false, err
			}
		}
		if c.s.Cover > 0 {
			n := int(c.s.Cover)
			if c.rng.Float64() < c.s.Cover-float64(n) {
				n++
			}
			for range n {
				c.advance()
				if err := c.sendCover(ctx, c.id, &conv); err != nil {
					return Response{}, econOutcome{}, false, err
				}
			}
		}
		c.advance()
		body := appendRequest(nil, q, stream)
		out, err := c.rig.do(ctx, exchange{at: c.t, id: c.id, body: body, stream: stream})
		if err != nil {
			return Response{}, out, false, err
		}
		c.stats.queries++
		c.stats.end = c.t
		c.used++
		if out.probation {
			c.stats.probation++
		}
		if !out.answered {
			c.stats.refused++
			c.refused(out.status)
			continue
		}
		if (q.Logprobs || q.TopLogprobs > 0) && (!out.resp.HasLogprob || len(out.resp.Top) < min(q.TopLogprobs, 2)) {
			c.stats.lossy++
			if c.s.RotateOnLoss {
				c.burnt = true
			}
		}
		return out.resp, out, true, nil
	}
	return Response{}, econOutcome{}, false, nil
}

// refused adapts to a refusal: a rotating attacker drops the identity; one
// account waits out the retry-after (throttle) or the quarantine (block).
func (c *econClient) refused(status int) {
	if c.s.RotateEvery > 0 || c.s.Aged {
		c.burnt = true
		return
	}
	switch status {
	case http.StatusTooManyRequests:
		c.t = c.t.Add(time.Minute + lognormalDur(c.rng, time.Minute, 0.5))
	default:
		c.t = c.t.Add(time.Hour + lognormalDur(c.rng, 10*time.Minute, 0.5))
	}
}

// coverSource hands out benign conversations from the corpus dialogs.
type coverSource struct {
	dialogs [][]string
}

type conversation struct {
	turns []string
	i     int
	msgs  []string // alternating user / assistant contents so far
}

func (s *coverSource) start(r *rand.Rand) *conversation {
	return &conversation{turns: s.dialogs[r.IntN(len(s.dialogs))]}
}

func (cv *conversation) done() bool { return cv.i >= len(cv.turns) || cv.i >= 6 }

// next is the request body of the conversation's next user turn, carrying
// the conversation so far.
func (cv *conversation) next() []byte {
	cv.msgs = append(cv.msgs, cv.turns[cv.i])
	cv.i++
	b := []byte(`{"model":"` + labModel + `","messages":[`)
	for i, m := range cv.msgs {
		if i > 0 {
			b = append(b, ',')
		}
		role := "user"
		if i%2 == 1 {
			role = "assistant"
		}
		b = append(b, `{"role":"`+role+`","content":`...)
		b = appendJSONString(b, m)
		b = append(b, '}')
	}
	b = append(b, `],"max_tokens":256,"temperature":0.7}`...)
	cv.msgs = append(cv.msgs, "Sure, here is what I can tell you about that.")
	return b
}

// recordWrappers are the wordings a record is sent in: the first is the
// plain one; paraphrasing attackers cycle through all. None contains a
// digit, so the record's numbers are the only numbers in the prompt.
func recordWrappers(heldOut bool) []string {
	if heldOut {
		return []string{
			"Input vector: %s. Output yes or no.",
			"Decide for these values (%s): yes or no?",
			"Here is a sample %s — is the label yes?",
			"Case data %s. Reply with yes or no only.",
			"Given the attributes %s, answer yes/no.",
			"Quick check on %s please, yes or no",
		}
	}
	return []string{
		"Classify the record: %s",
		"Is this record positive? Features: %s",
		"Here are the measurements %s. Answer yes or no.",
		"Record -> %s. Yes or no?",
		"Please label the following case (%s) with yes or no.",
		"Looking at the values %s, would you say yes?",
		"Predict the class for %s",
		"I have a row of data: %s. What is its label?",
	}
}

// storyWrappers are the wordings of the hidden-size attack's prompts.
func storyWrappers(heldOut bool) []string {
	if heldOut {
		return []string{"Next word after passage %s:", "Passage %s, keep going", "Resume text %s"}
	}
	return []string{
		"Continue the story, part %s",
		"Write the next line of tale %s",
		"Go on with chapter %s of the novel",
		"Keep writing episode %s",
		"What happens next in story %s?",
	}
}

// formatNumbers renders a record; paraphrasing attackers vary the
// separator and precision of the format too (exact round trips: the model
// reads back the same floats).
func formatNumbers(x []float64, style int) string {
	sep := []string{" ", ", ", "; ", " | "}[style%4]
	var b strings.Builder
	for i, v := range x {
		if i > 0 {
			b.WriteString(sep)
		}
		b.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
	}
	return b.String()
}

// parseNumbers reads the numbers of a prompt in order: an optional sign,
// digits with at most one inner point, an optional exponent. Words and
// punctuation around them (a full stop after the last number) are not
// part of them.
func parseNumbers(s string, want int) ([]float64, bool) {
	digit := func(i int) bool { return i < len(s) && s[i] >= '0' && s[i] <= '9' }
	var out []float64
	for i := 0; i < len(s); {
		start := i
		if (s[i] == '-' || s[i] == '+') && (digit(i+1) || s[i+1:] != "" && s[i+1] == '.' && digit(i+2)) {
			i++
		}
		if !digit(i) && !(s[i] == '.' && digit(i+1)) {
			i = start + 1
			continue
		}
		for digit(i) {
			i++
		}
		if i < len(s) && s[i] == '.' && digit(i+1) {
			i++
			for digit(i) {
				i++
			}
		}
		if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
			j := i + 1
			if j < len(s) && (s[j] == '-' || s[j] == '+') {
				j++
			}
			if digit(j) {
				for i = j; digit(i); i++ {
				}
			}
		}
		if v, err := strconv.ParseFloat(s[start:i], 64); err == nil {
			out = append(out, v)
		}
	}
	return out, len(out) == want
}

// recordModel serves a model of numeric records whatever words wrap them:
// the prompt's numbers are the record. Prompts without one (cover chat)
// get a fixed answer.
type recordModel struct {
	inner Model
	d     int
}

func (m recordModel) Vocab() int                          { return m.inner.Vocab() }
func (m recordModel) Token(id int) string                 { return m.inner.Token(id) }
func (m recordModel) TokenID(t string) (int, bool)        { return m.inner.TokenID(t) }
func (m recordModel) recordOf(p string) ([]float64, bool) { return parseNumbers(p, m.d) }

func (m recordModel) Logits(prompt string, dst []float64) error {
	x, ok := m.recordOf(prompt)
	if !ok {
		for i := range dst {
			dst[i] = -float64(i)
		}
		return nil
	}
	return m.inner.Logits(formatRecord(x), dst)
}
