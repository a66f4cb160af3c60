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
//     word-frequency comparisons show nothing. A context too heavy for any
//     member to take whole is tilted instead: a keyed share of its
//     occurrences (drawn from the text before it) takes the key's
//     member, the rest keep their word, and the caps count what is
//     written. Verifier / Sample replay the key's assignment and give a
//     conservative p-value (a likelihood-ratio test martingale over
//     distinct (set, slot, context) groups, each scored on all its member
//     counts).
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
// RunVerify, RunKeygen and RunContexts are the `distillguard watermark
// verify|keygen|contexts` commands' logic.
package watermark
