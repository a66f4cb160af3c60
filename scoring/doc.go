package scoring

// How the Engine scores a request
//
// Identity. The session key is the HMAC-SHA256 (keyed with Config.Secret,
// random per process when unset) of the first configured source present:
// the Authorization bearer token, a named header such as x-api-key, or the
// client IP. Only the first 16 bytes of the MAC, in hex, are kept, logged
// and shown by the admin API; raw credentials never are. Linking keys tie
// sessions together: the client's /24 (IPv4) or /48 (IPv6) block, and a
// client fingerprint made of the user-agent and the request shape (sorted
// top-level JSON keys and sampling parameter values).
//
// State. Sessions live in two ristretto caches bounded by
// Config.MemoryBytes, each entry costed at its real size (about 500 bytes
// for an idle session). New sessions start in the probation cache
// (Config.ProbationShare of the budget) and move to the main cache after
// Config.PromoteAfter requests or once flagged, at most Config.PromoteRate
// per second: a flood of new keys churns probation only, and TinyLFU
// admission plus the promotion rate protect established sessions. Blocked
// sessions are also remembered in a separate bounded quarantine list, so
// eviction does not lift a block. All counters decay exponentially on
// request time (Request.Time), which makes replays exact; per session, time
// never runs backwards.
//
// Keys and replays. Everything secret or random (the session-id MAC key
// unless Config.Secret is set, the token and link hash keys, the samplers
// that pick cluster and quarantine victims) derives from one root key,
// random per process. Options.Seed fixes that root and swaps ristretto for
// a synchronous store with the same policy and seeded sampling (ristretto
// samples victims in map order and applies writes on its own goroutine),
// so a replay of the same requests gives bit-identical decisions; the
// attack lab runs its in-process server that way.
//
// Text. The newest user turn (capped at Config.MaxPromptBytes) is
// normalized (case-folded, numbers replaced by a placeholder, punctuation
// and whitespace ignored) and cut into tokens: words for spaced scripts,
// single characters for Han, kana, Thai and their neighbours. Token hashes
// are keyed (the runtime's wyhash construction with 256 secret key bits,
// see keys.go), shingles are token 4-grams, and at most 16 are sampled per
// prompt by hash level, so prompts sharing a passage sample the same
// shingles. Languages come from the scripts used
// and, for Latin script, a small stopword vote; step-by-step demands are
// matched against a multilingual phrase table on the same tokens.
//
// Signals (strength in [0,1], weight in Config.Weights):
//
//	automation (capped together at Config.AutomationCap)
//	  near_duplicate  share of each prompt the session had already sent (per-session bloom filter)
//	  volume          request and token rates over the volume and burst windows
//	  single_turn     share of requests without conversation history, above 60%
//	  regularity      low spread of ln(inter-arrival time): a scheduler
//	  novelty         share of never-seen shingles, once a session sends many requests
//	harvesting
//	  logit_bias      size of logit_bias, stronger with logprobs (Carlini et al. 2024)
//	  logprobs        top_logprobs, echo with logprobs, max_tokens 1 under wide alternatives, n > 1
//	  reasoning       step-by-step demands (share or steady count), x the number of languages used
//	  campaign        requests reusing shingles that at least Config.CampaignMinSessions other
//	                  sessions also reuse within Config.CampaignWindow (time-sliced, levelled
//	                  bloom filters count distinct reusing sessions)
//	  cluster         share of sessions flagged on their own evidence in the session's IP
//	                  block or client fingerprint cluster
//
// Each group combines as a noisy-OR, 1 - prod(1 - w*s); the automation
// group is scaled by the cap and the groups combine as a noisy-OR, so the
// score is monotone in every signal. Contributions split the score in
// proportion to each signal's log-mass and add up to it.
//
// Verdicts. The score maps to allow, degrade, throttle or block by
// Config.Thresholds: up at once, down only Thresholds.Hysteresis below a
// tier's level; a block holds for Config.Quarantine. In shadow mode the
// decision carries the would-be verdict with Shadow set. Every tier change
// is one JSON line in the audit log.
//
// Defaults were chosen by replaying internal/traffic (eval_test.go): with
// them every attack family is flagged in all its accounts, no human chat
// account is blocked (0-0.5% degraded, by seed), and batch and evaluation
// workloads stay at degrade.
