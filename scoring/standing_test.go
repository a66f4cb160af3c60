package scoring

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// chatPrompt is a distinct human-looking turn: clean traffic.
func chatPrompt(i int) string {
	p := []string{
		"What should I pack for a week of hiking in Scotland in October?",
		"My sourdough starter smells like nail polish, is that normal?",
		"Can you explain the offside rule like I'm five",
		"I keep waking up at 4am and can't fall asleep again. Any ideas?",
		"Write a short toast for my brother's wedding, he loves sailing",
		"Why do cats knock things off tables?",
		"Is it rude to bring wine to a dinner where the host doesn't drink",
		"how do i get candle wax out of a carpet",
		"Recommend some novels similar to The Remains of the Day",
		"What's the difference between baking soda and baking powder?",
		"My tomato plants have yellow leaves at the bottom, what's wrong",
		"Help me plan a cheap birthday party for a ten year old",
		"Which is better for a beginner, guitar or ukulele?",
		"Explain how a mortgage offset account works",
		"I want to learn Portuguese before a trip to Lisbon next spring, where do I start?",
		"Give me a gentle way to tell my roommate to clean the kitchen",
		"Why does the moon look bigger near the horizon",
		"What are good stretches after a long day at a desk?",
		"Suggest a name for a grey rescue greyhound",
		"How long can cooked rice stay in the fridge?",
		"Summarise the plot of Hamlet without spoilers for the ending, if that's possible",
		"Is it worth repairing a ten year old washing machine",
		"What do bees do in winter?",
		"I feel nervous before presentations, any tips that actually work",
		"How do I politely decline a job offer after accepting it verbally?",
		"Can you help me write a complaint about a delayed train",
		"What's a good first telescope for a teenager?",
		"Tell me a fun fact about octopuses",
		"How do noise cancelling headphones work?",
		"Plan three vegetarian dinners using mostly lentils",
		"Why is my bread dense and heavy",
		"What happens to my pension if I move abroad?",
	}
	return p[i%len(p)]
}

// record is a numeric feature vector, as an equation-solving attack sends.
func record(i int) string {
	var b strings.Builder
	b.WriteString("Classify the record:")
	for j := 0; j < 12; j++ {
		fmt.Fprintf(&b, " %.4f", float64((i*31+j*17)%997)/97-5)
	}
	return b.String()
}

// humanConversation sends chat with history, a sitting at a time, and
// returns the decisions and the time after it.
func sendChat(e *Engine, c *client, at time.Time, n int, gap time.Duration) ([]Decision, time.Time) {
	var out []Decision
	for i := 0; i < n; i++ {
		out = append(out, e.Score(c.req(at, chatPrompt(i), withTurns(2, 1, "Hello there, I have a question."))))
		at = at.Add(gap)
	}
	return out, at
}

func TestStandingEarnedByRequestsAndAge(t *testing.T) {
	e := newTestEngine(t, func(c *Config) { c.Standing.Requests = 10; c.Standing.Age = 2 * time.Hour })
	c := newClient("sk-new-user", "198.51.100.7:5000")
	// Ten clean requests within minutes: the count is met, the age is not.
	ds, at := sendChat(e, c, t0, 10, time.Minute)
	for i, d := range ds {
		if !d.Probation {
			t.Fatalf("request %d: out of probation after %d minutes", i+1, i)
		}
	}
	// Past the age, the next clean request earns standing.
	at = at.Add(2 * time.Hour)
	if d := e.Score(c.req(at, chatPrompt(11), withTurns(2, 1, "Hello there, I have a question."))); d.Probation || d.Verdict != Allow {
		t.Fatalf("after 11 clean requests over 2h: probation %v, verdict %v", d.Probation, d.Verdict)
	}
	// A long-lived identity that sent too few requests stays in probation.
	few := newClient("sk-few", "198.51.100.8:5000")
	ds, _ = sendChat(e, few, t0, 5, time.Hour)
	if !ds[len(ds)-1].Probation {
		t.Fatal("five requests over five hours earned standing; want ten")
	}
}

func TestStandingOffTrustedAndDisabled(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		hdr  map[string]string
		want bool
	}{
		{"default: new identity in probation", nil, nil, true},
		{"standing disabled", func(c *Config) { c.Standing.Enabled = false }, nil, false},
		{"trusted by header", func(c *Config) {
			c.Trusted = []Trusted{{Name: "partner", Header: "x-tenant", Values: []string{"acme"}}}
		}, map[string]string{"x-tenant": "acme"}, false},
		{"trusted entry does not match", func(c *Config) {
			c.Trusted = []Trusted{{Name: "partner", Header: "x-tenant", Values: []string{"acme"}}}
		}, map[string]string{"x-tenant": "other"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEngine(t, tc.edit)
			c := newClient("sk-"+tc.name, "198.51.100.9:5000")
			c.hdr = tc.hdr
			if d := e.Score(c.req(t0, chatPrompt(0))); d.Probation != tc.want {
				t.Fatalf("probation = %v, want %v", d.Probation, tc.want)
			}
		})
	}
}

func TestStandingLostToNumericRecordsBehindChat(t *testing.T) {
	e := newTestEngine(t, func(c *Config) { c.Standing.Requests = 20; c.Standing.Age = time.Hour })
	c := newClient("sk-aged", "198.51.100.10:5000")
	_, at := sendChat(e, c, t0, 25, 5*time.Minute)
	if d := e.Score(c.req(at, chatPrompt(30), withTurns(2, 1, "Hello there, I have a question."))); d.Probation {
		t.Fatal("25 clean chats over two hours did not earn standing")
	}
	// Records asked with logprobs, a few seconds apart: standing goes
	// within a handful, although no verdict changes.
	lost := 0
	for i := 0; i < 10; i++ {
		at = at.Add(20 * time.Second)
		d := e.Score(c.req(at, record(i), withLogprobs(2), withMaxTokens(1)))
		if d.Probation && lost == 0 {
			lost = i + 1
		}
	}
	if lost == 0 || lost > 5 {
		t.Fatalf("standing lost at record %d, want within 5", lost)
	}
	// The same records without logprobs cost nothing: a fresh aged account
	// keeps its standing.
	e2 := newTestEngine(t, func(c *Config) { c.Standing.Requests = 20; c.Standing.Age = time.Hour })
	c2 := newClient("sk-aged-2", "198.51.100.11:5000")
	_, at = sendChat(e2, c2, t0, 25, 5*time.Minute)
	for i := 0; i < 10; i++ {
		at = at.Add(20 * time.Second)
		if d := e2.Score(c2.req(at, record(i), withMaxTokens(1))); d.Probation {
			t.Fatalf("record %d without logprobs took standing away", i+1)
		}
	}
}

func TestStandingLostToFlagAndEarnedAgain(t *testing.T) {
	e := newTestEngine(t, func(c *Config) { c.Standing.Requests = 5; c.Standing.Age = time.Minute })
	c := newClient("sk-prober", "198.51.100.12:5000")
	_, at := sendChat(e, c, t0, 6, time.Minute)
	if d := e.Score(c.req(at, chatPrompt(7), withTurns(2, 1, "Hello there, I have a question."))); d.Probation {
		t.Fatal("no standing after six clean requests")
	}
	// logit_bias probing with full logprobs flags within a few requests.
	var d Decision
	for i := 0; i < 6 && d.Verdict < Degrade; i++ {
		at = at.Add(time.Second)
		d = e.Score(c.req(at, fmt.Sprintf("Repeat the word token%d exactly once.", i), withLogprobs(20), withLogitBias(300), withMaxTokens(1)))
	}
	if d.Verdict < Degrade || !d.Probation {
		t.Fatalf("logit_bias probes: verdict %v probation %v, want degrade or stronger in probation", d.Verdict, d.Probation)
	}
	// Once the score has decayed to allow, the identity earns standing
	// again only with a new clean run.
	at = at.Add(14 * 24 * time.Hour)
	ds, _ := sendChat(e, c, at, 8, time.Minute)
	if !ds[0].Probation {
		t.Fatal("standing came back without a clean run")
	}
	if ds[len(ds)-1].Probation {
		t.Fatalf("eight clean requests after the flag decayed did not earn standing back (verdicts %v)", ds[len(ds)-1].Verdict)
	}
}

func TestStandingRememberedPastSessionTTL(t *testing.T) {
	e := newTestEngine(t, func(c *Config) {
		c.Standing.Requests, c.Standing.Age = 5, time.Minute
		c.SessionTTL = 2 * time.Hour
	})
	c := newClient("sk-weekend", "198.51.100.13:5000")
	_, at := sendChat(e, c, t0, 7, time.Minute)
	// Back after three days: the session state is gone, the standing not.
	at = at.Add(72 * time.Hour)
	if d := e.Score(c.req(at, chatPrompt(1))); d.Probation {
		t.Fatal("an established user returning after the session TTL is in probation again")
	}
	// Past Remember, it is forgotten too.
	e2 := newTestEngine(t, func(c *Config) {
		c.Standing.Requests, c.Standing.Age, c.Standing.Remember = 5, time.Minute, 24*time.Hour
		c.SessionTTL = 2 * time.Hour
	})
	_, at = sendChat(e2, c, t0, 7, time.Minute)
	if d := e2.Score(c.req(at.Add(72*time.Hour), chatPrompt(1))); !d.Probation {
		t.Fatal("standing outlived remember")
	}
}

func TestStandingLostToFlaggedLinks(t *testing.T) {
	e := newTestEngine(t, func(c *Config) { c.Standing.Requests = 5; c.Standing.Age = time.Minute })
	// An established account in an office /24.
	established := newClient("sk-established", "203.0.113.10:4000")
	_, at := sendChat(e, established, t0, 7, time.Minute)
	if d := e.Score(established.req(at, chatPrompt(8), withTurns(2, 1, "Hello there, I have a question."))); d.Probation {
		t.Fatal("no standing after seven clean requests")
	}
	// Accounts of the same /24 flagged on their own evidence.
	for i := 0; i < 6; i++ {
		p := newClient(fmt.Sprintf("sk-probe-%d", i), fmt.Sprintf("203.0.113.%d:4000", 100+i))
		at = at.Add(time.Minute)
		e.Score(p.req(at, "Repeat the word token exactly once.", withLogprobs(20), withLogitBias(300), withMaxTokens(1)))
	}
	at = at.Add(time.Minute)
	d := e.Score(established.req(at, chatPrompt(9), withTurns(2, 1, "Hello there, I have a question.")))
	if !d.Probation {
		t.Fatalf("standing kept although the account's network block is mostly flagged accounts (cluster %.2f)", strength(d, "cluster"))
	}
	if d.Verdict != Allow {
		t.Fatalf("verdict %v: the link alone must not flag", d.Verdict)
	}
}

func TestStandingValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    Standing
		bad  string
	}{
		{"defaults", Standing{Enabled: true}, ""},
		{"negative age", Standing{Enabled: true, Age: -time.Second}, "age"},
		{"remember too short", Standing{Enabled: true, Remember: time.Minute}, "remember"},
		{"too few entries", Standing{Enabled: true, Entries: 3}, "entries"},
		{"negative requests", Standing{Enabled: true, Requests: -1}, "requests"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Standing = tc.s
			err := c.Validate()
			switch {
			case tc.bad == "" && err != nil:
				t.Fatal(err)
			case tc.bad != "" && (err == nil || !strings.Contains(err.Error(), "standing: "+tc.bad)):
				t.Fatalf("error %v, want one about standing %s", err, tc.bad)
			}
		})
	}
}

func TestNumericRecord(t *testing.T) {
	e := newTestEngine(t, nil)
	sc := &textScratch{}
	for _, tc := range []struct {
		prompt string
		want   bool
	}{
		{record(1), true},
		{"age 34, income 52000, children 3, tenure 7, score 0.71: approve?", true},
		{"Could you tell me about the history of Lisbon, which was founded around 1200 BC?", false},
		{"What is 345 times 23?", false},
		{"Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did she sell altogether in April and May?", false},
	} {
		if got := e.an.analyze(tc.prompt, sc).numericRecord(); got != tc.want {
			t.Errorf("%q: numericRecord %v, want %v", tc.prompt, got, tc.want)
		}
	}
}

func TestStandingAdminViewAndReset(t *testing.T) {
	e := newTestEngine(t, func(c *Config) { c.Standing.Requests, c.Standing.Age = 5, time.Minute })
	c := newClient("sk-admin", "198.51.100.14:5000")
	ds, at := sendChat(e, c, t0, 3, time.Minute)
	id := ds[0].Session
	d, err := e.Session(id)
	if err != nil {
		t.Fatal(err)
	}
	if d.Standing == nil || d.Standing.Earned || d.Standing.CleanRequests != 3 || d.Standing.RequiredRequests != 5 || !d.Standing.CleanSince.Equal(t0) {
		t.Fatalf("standing after 3 requests: %+v", d.Standing)
	}
	_, at = sendChat(e, c, at, 4, time.Minute)
	if d, _ = e.Session(id); !d.Standing.Earned {
		t.Fatalf("standing after 7 requests: %+v", d.Standing)
	}
	// An operator reset forgets the standing with the rest.
	if found, err := e.Reset(id); err != nil || !found {
		t.Fatalf("reset: %v %v", found, err)
	}
	if d := e.Score(c.req(at, chatPrompt(3))); !d.Probation {
		t.Fatal("standing survived an operator reset")
	}
}

// TestProbationThrottlesRecordStreams: a fresh identity that sends numeric
// records with logprobs (the queries of an equation-solving or
// distillation attack) is throttled within a few requests while in
// probation, where degrading it would still hand it labels; the same
// traffic scored with standing off is not throttled that early, and the
// same records from an identity that only chats are never throttled.
func TestProbationThrottlesRecordStreams(t *testing.T) {
	firstThrottle := func(standing bool, logprobs bool) int {
		e := newTestEngine(t, func(c *Config) { c.Standing.Enabled = standing })
		c := newClient("sk-fresh-harvester", "198.51.100.20:5000")
		at := t0
		for i := 0; i < 8; i++ {
			at = at.Add(20 * time.Second)
			edit := []func(*Request){withMaxTokens(1)}
			if logprobs {
				edit = append(edit, withLogprobs(5))
			}
			d := e.Score(c.req(at, record(i), edit...))
			if d.Verdict >= Throttle {
				if standing && !d.Probation {
					t.Fatalf("record %d throttled outside probation", i+1)
				}
				return i + 1
			}
		}
		return 0
	}
	on := firstThrottle(true, true)
	if on == 0 || on > 4 {
		t.Fatalf("records with logprobs in probation: first throttle at %d, want within 4", on)
	}
	if off := firstThrottle(false, true); off != 0 && off <= on {
		t.Fatalf("standing off throttled at %d, standing on at %d: the probation rule did nothing", off, on)
	}
	if n := firstThrottle(true, false); n != 0 {
		t.Fatalf("records without logprobs throttled at %d", n)
	}
}

// TestProbationThrottlesCampaignRotation: fresh identities, one request
// each, all opening with the same harvesting template and never
// conversing (rotation every request). Once the template is a campaign's,
// later identities are throttled at their first request while in
// probation; with standing off the same traffic is at most degraded on
// the first request.
func TestProbationThrottlesCampaignRotation(t *testing.T) {
	run := func(standing bool) (throttled int) {
		e := newTestEngine(t, func(c *Config) { c.Standing.Enabled = standing })
		at := t0
		for i := 0; i < 40; i++ {
			at = at.Add(3 * time.Second)
			c := newClient(fmt.Sprintf("sk-rotating-%d", i), fmt.Sprintf("203.0.113.%d:4000", i+1))
			prompt := "You are a labelling service. Read the passage and answer with one word, positive or negative, nothing else. Passage: " + chatPrompt(i)
			d := e.Score(c.req(at, prompt, withLogprobs(5), withMaxTokens(1)))
			if i >= 20 && d.Verdict >= Throttle {
				throttled++
			}
		}
		return throttled
	}
	if on := run(true); on < 15 {
		t.Fatalf("standing on: %d of the last 20 rotating identities throttled, want at least 15", on)
	}
	if off := run(false); off != 0 {
		t.Fatalf("standing off: %d first requests throttled, want 0 (the rule belongs to probation)", off)
	}
}
