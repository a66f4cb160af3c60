// Package watermark leaves a keyed signal in what a gateway returns, so a
// student model trained on harvested outputs can later be shown to have
// learned from them (the proof layer of the defence; rate limits, pattern
// analysis and output obfuscation live elsewhere in distillguard). A gateway
// sees and rewrites output but does not sample, so both marks are rewrites:
//
//   - Lexical (text): Marker / Stream substitute words of an embedded synonym
//     table by a keyed function of (set, form slot, previous token) (He et
//     al., AAAI 2022). The context -> member mapping is CATER's
//     frequency-preserving one (He et al., NeurIPS 2022; contexts.go):
//     built per key from context statistics of unmarked output
//     (ContextStats), so every member keeps its natural share and plain
//     word-frequency comparisons show nothing. The heaviest contexts are
//     tilted in pairs, in opposite directions: the key draws a member and
//     which context of the pair moves towards it (a keyed share of its
//     other occurrences, drawn from the text before it, takes the member)
//     while the other moves as many of its occurrences of the member to
//     the other members, so every member's count is kept whatever the key
//     drew. A lighter context too heavy for any member to take whole is
//     tilted alone, spending half of its member's remaining cap (more only
//     where the other members' caps need it), so the set's lighter
//     contexts, the groups a student reproduces, keep keyed draws; the
//     caps count what is written. A unit (set and
//     form slot) with less than 1/400 of the statistics' occurrences is
//     not marked: its assignment would rest on a few counts, and a
//     word-frequency comparison scores a rare set as much as a frequent
//     one. Verifier / Sample replay the key's assignment and give a
//     conservative p-value (a likelihood-ratio test martingale over
//     distinct (set, slot, context) groups, each scored on all its member
//     counts; a pair is one trial). Sample.Explain lists each trial's
//     share of the evidence (the lab's power harness breaks a replication
//     down with it).
//
//     What bounds the test is the text, not the statistic: a scored group
//     is worth at most log(1/r) nats, r the null probability of the key's
//     member, and with frequency preservation r is about the member's
//     natural share, so only sets whose members the model itself uses in
//     comparable shares carry evidence; contexts a student never saw in
//     its harvest (most of the hashed tail) it writes from its backoff,
//     at the natural shares, and they carry none.
//
//     Invisibility holds against the statistics the plan was built from.
//     Their counting error moves the marked text's member shares by about
//     sqrt(N / N_stats) times a comparison's sampling noise (N marked
//     responses compared, N_stats counted; times the root mean square of
//     the plan's shifts), so a comparison at a fair share of the
//     statistics' size starts to see it: count the statistics over
//     several times the text an observer could compare with unmarked
//     output of the same model.
//
//     Told what the suspected sessions were served (Sample.UseServed: the
//     responses, or the server's served records, Served: keyed digests of
//     a response's groups, watermark.log_served), the test weighs the
//     groups the suspect can have learned instead of guessing them from
//     the statistics; the weights do not depend on the key, so it stays
//     valid, and a smoothed student's invented word pairs cost nothing.
//
//   - Logprob (soft labels): LogprobMark / Shifter lower returned
//     alternatives by A (1 - s(w) h) / 2, s(w) a keyed token group and h a
//     sinusoid of a keyed projection of the input (DRW, Findings of EMNLP
//     2022; GINSEW, ICML 2023), so a student fitting the soft labels learns
//     an input-dependent signal; LogprobSample tests a suspect's
//     top_logprobs on probe inputs by keyed token-sign randomisation with a
//     Rademacher tail bound (conservative).
//
// Keys come from a key file (LoadKeyFile: hex or raw secret, or a key set
// with ids for rotation: the active key marks, every key verifies) and are
// expanded with HKDF-SHA256; every position-dependent choice is a keyed PRF
// (AES-256 on one block, HMAC-SHA256 beyond), never an unkeyed hash.
// RunVerify, RunKeygen, RunContexts and RunProbe are the `distillguard
// watermark verify|keygen|contexts|probe` commands' logic; Probe sends a
// probe set to a suspect's endpoint in any of the inference APIs
// distillguard guards.
package watermark
