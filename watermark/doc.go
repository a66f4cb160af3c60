// Package watermark leaves a keyed signal in what a gateway returns, so a
// student model trained on harvested outputs can later be shown to have
// learned from them (the proof layer of the defence; rate limits, pattern
// analysis and output obfuscation live elsewhere in distillguard). A gateway
// sees and rewrites output but does not sample, so both marks are rewrites:
//
//   - Lexical (text): Marker / Stream substitute words of an embedded synonym
//     table by a keyed function of the previous token, preserving each
//     member's natural share over contexts (He et al., AAAI 2022; CATER,
//     NeurIPS 2022). Verifier / Sample find the same positions in suspect
//     text and give an exact Poisson-binomial p-value.
//   - Logprob (soft labels): LogprobMark / Shifter lower returned
//     alternatives by a keyed periodic function of the token (DRW, Findings
//     of EMNLP 2022; GINSEW, ICML 2023); LogprobSample scores a suspect's
//     top_logprobs at the key's frequency.
//
// Keys come from a key file (LoadKeyFile: hex or raw secret, or a key set
// with ids for rotation: the active key marks, every key verifies) and are
// expanded with HKDF-SHA256; every position-dependent choice is a keyed PRF
// (AES-256 on one block, HMAC-SHA256 beyond), never an unkeyed hash.
// RunVerify is the `distillguard watermark verify` command's logic.
package watermark
