package scoring

// How the Engine scores a request
//
// Keys. Every keyed hash derives from one root: extracted from
// Config.Secret when it is set (HMAC-SHA256 under a fixed label, HKDF's
// extract step, RFC 5869), else Options.Seed, else random per process; each
// purpose gets its own key by HMAC(root, label) (session ids, token and
// shingle hashes, template, cohort and link hashes, eviction samplers).
// Verdicts are therefore a deterministic function of the traffic and the
// secret. No decision hinges on which shingles a key happens to sample:
// up to 24 shingles are sampled per turn, and every text signal works on
// shares and sums over many shingles and requests, so the flagged rate of a
// family moves by well under two points from one secret to another
// (eval_test.go replays five).
//
// Identity. The session id is the HMAC of the first configured source
// present: the Authorization bearer token, a named header such as
// x-api-key, or the client IP; only 16 bytes of it, in hex, are kept,
// logged and shown. Links tie sessions together: the client's /24 or /48,
// and a client fingerprint (user-agent and request shape).
//
// The request, part by part. mutate.ParseRequest reads the system and
// developer messages, the tool definitions, the first and the newest user
// turn, and counts user, assistant and tool turns and the messages after
// the newest user turn. Each part is used for what it is:
//   - the newest user turn is what the user wrote: it is analysed (below);
//   - a tool-loop continuation (tool calls and results after the newest
//     user turn) re-sends that turn: it is not analysed again, so an agent
//     loop is neither a near-duplicate nor a probe, and its first round
//     tells the template sketch that the task's opening led to work;
//   - the system prompt with the tool schema is the application element:
//     one keyed hash, counted in the template sketch by the sessions that
//     send it and by those that converse or run tool loops behind it. Many
//     long-lived conversing accounts behind one element are an
//     application's users; many accounts behind it that never converse are
//     a campaign sharing a wrapper;
//   - the first user turn of a conversation, when a follow-up arrives,
//     tells the sketch that its opening was followed by a conversation
//     (persona prompts, app templates, common phrases are; wrappers are
//     not).
//
// Text. The newest user turn (capped at Config.MaxPromptBytes) is
// normalized (case-folded, numbers replaced by a placeholder, punctuation
// and whitespace ignored) and cut into tokens: words for spaced scripts,
// characters for Han, kana, Thai and their neighbours. Token hashes are
// keyed (the runtime's wyhash construction, keys.go); shingles are token
// 4-grams sampled by hash level (a threshold on the level, so prompts
// sharing a passage sample the same shingles from it). A phrase table finds
// reasoning demands in 20 languages and published distillation formats;
// the stopword vote and the scripts give the prompt's languages, and a
// demand in a language the rest of the prompt is not written in is a
// translated wrapper.
//
// Signals (strength in [0,1], weight in Config.Weights):
//
//	automation (capped together at Config.AutomationCap, below the degrade threshold)
//	  near_duplicate  share of each new turn the session had sent before (session filter)
//	  volume          request and token rates over the volume and burst windows
//	  single_turn     share of requests without conversation history, above 60%
//	  regularity      low spread of ln(inter-arrival time): a scheduler
//	  novelty         share of never-seen shingles at volume
//	harvesting
//	  logit_bias      size of logit_bias, stronger with logprobs (Carlini et al. 2024)
//	  logprobs        top_logprobs (small up to 3, substantial from 5), echo, max_tokens 1, n > 1
//	  reasoning       step-by-step demands by share or steady count, x the demands' languages,
//	                  stronger when translated around content (GTIG, AI Threat Tracker, 2026)
//	  campaign        turns carrying template elements many accounts reuse and almost none
//	                  converse after; system prompt / tools shared that way; published
//	                  distillation formats (Alpaca, Taori et al. 2023)
//	  cluster         flagged share of the session's IP block or client cluster (weight below
//	                  degrade: a link adds to evidence, never flags alone)
//	  probe           prompts that repeat an earlier one but for a few tokens (PRADA, Juuti et
//	                  al. EuroS&P 2019; SEAT, Zhang et al. AISec 2021)
//	  cohort          a fresh account in a burst of fresh accounts starting the same single-turn
//	                  requests, weighted by its own harvest shape (Anthropic, "Detecting and
//	                  preventing distillation attacks", 2026: ~24,000 fraudulent accounts;
//	                  bursts as in Kleinberg, KDD 2002)
//	  scripted_chat   conversations opened faster than people do, each with canned follow-ups
//	                  the session sent before: dataset questions dressed as chat
//	  cadence         one conversation partner active in nearly every hour of a day
//	  output          output tokens delivered per day (ResponseObserver; below degrade alone)
//	  generation      a scheduler sending single-turn prompts for long sampled completions
//	                  (the Self-Instruct / Alpaca data-generation shape)
//
// Each group combines as a noisy-OR, 1 - prod(1 - w*s); the automation
// group is scaled by the cap and the groups combine as a noisy-OR, so the
// score is monotone in every signal. Contributions split the score in
// proportion to each signal's log-mass and add up to it.
//
// State, and where it lives. A session is a fixed struct (sessionFixedBytes,
// 336 bytes on amd64: 29 forward-decayed float32 counters and their
// landmark, 124 bytes; language masks, the activity ring, evidence figures,
// the standing run, times, flags) plus its shingle filter (88 bytes with
// headers for one or two requests, up to 2 x 512 bytes of bits), costed in
// the caches at its real size with ristretto's overhead: 640 bytes
// accounted and about 650 bytes of heap per idle session (BenchmarkIdleSessionMemory, 200,000 sessions). Its counters are forward-decayed sums
// (Cormode et al., "Forward Decay", ICDE 2009): an event adds
// w*2^((t-L)/H) with L a landmark on a fixed 64-minute grid, so increments
// are additions and two replicas' copies merge by summing; language masks,
// the 64-hour activity ring and the shingle filters are bitsets (merge: OR);
// first, last, requests and peak are monotone. Cross-account state lives
// behind the aggregates interface (state.go): a forward-decayed Count-Min
// sketch of template elements (reusers, first-request senders,
// conversational senders; conservative update, 3 rows of
// campaign_capacity cells, 12 bytes each) and a cohort sketch (4096
// slots of fast and slow forward-decayed counts and language bitsets).
// Both merge by cell-wise sums, so a replicated implementation can batch
// reports and read merged counts, while the local ristretto caches stay
// the hot store for sessions.
//
// Replicated mode (Config.Redis, replica.go). Replicas share this state
// through Redis: a session is one blob under <prefix>{<id>}:s (its own
// cluster slot), read once per request (started at the request headers,
// Prefetch), merged into the local copy as remote + (local - base), and
// written behind by a compare-and-set script (the writes queued within
// write_delay of the last batch in one pipelined batch); the sketches and link
// clusters keep summing this replica's increments, which a flush appends
// to a shared stream every flush_interval while it reads the other
// replicas' batches and adds them in (replica_agg.go). Every key has a
// TTL; a slow or absent Redis costs dilution (local-only scoring), never
// a stalled request.
//
// Caches. Sessions live in two ristretto caches bounded by
// Config.MemoryBytes. New sessions start in the probation cache
// (Config.ProbationShare of the budget) and move to the main cache after
// Config.PromoteAfter requests or once flagged, at most Config.PromoteRate
// per second. Blocked sessions are also remembered in a bounded quarantine
// list, so eviction does not lift a block. Options.Seed swaps ristretto for
// a synchronous store with the same policy and seeded sampling, for
// bit-identical replays (the attack lab).
//
// Standing (standing.go). A new identity is in probation until it has
// sent Config.Standing.Requests clean requests over Config.Standing.Age:
// every request below the degrade threshold, with no campaign evidence
// (campaign, cohort or cluster signal at a quarter of full strength) and no
// harvest stream (numeric records asked with logprobs or logit_bias, or
// soft-label requests, by count and share over the content half-life and
// the volume window). Any of them restarts the run, for an identity that
// had earned standing too, and every identity that shares the evidence
// (a template, a cohort, a flagged network block) meets it on its next
// request. Decision.Probation tells the server to apply the route's
// probation tier in place of allow. Trusted identities are never in
// probation. Earned standing is also kept, past the session TTL, in a
// bounded list (Config.Standing.Remember, Entries) like the quarantine.
//
// Verdicts. The score maps to allow, degrade, throttle or block by
// Config.Thresholds (or a trusted identity's own thresholds; an
// allow-always identity is scored but allowed): up at once, down only
// Thresholds.Hysteresis below a tier's level; a block holds for
// Config.Quarantine. In shadow mode the decision carries the would-be
// verdict with Shadow set (routes can be in shadow mode on their own, see
// config.Route). Every tier change is one JSON line in the audit log with
// the top signals and an explanation in words ("campaign: template shared
// by 212 accounts in the last 24h0m0s, 0% of which ever held a
// conversation"); the admin API explains any session on demand.
//
// Defaults were chosen by replaying internal/traffic (eval_test.go), tuned
// on its variant 0 and checked on the held-out variant 1 under five
// secrets: every benign family, agents, retrieval apps, persona prompts
// and office NATs included, stays at or below 1% of accounts flagged and is
// never throttled (batch and evaluation harnesses may degrade); every
// attack family is flagged in at least 90% of its accounts with a median
// first flag within 50 requests.
