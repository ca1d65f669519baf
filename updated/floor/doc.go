// Package floor keeps the host's anti-rollback floor — the lowest payload security version the
// host accepts — and measures booted images into a TPM PCR.
//
// Stores:
//
//   - TPM: a TPM 2.0 NV counter (TPM_NT_COUNTER) at NVIndex, owner-authorised. A counter can only
//     go up, so neither a bug nor an attacker with the disk can lower the floor; an index that
//     is not defined or never incremented reads as 0. Advancing to v increments until the
//     counter reaches v (at most MaxAdvance steps per call; security versions are meant to grow
//     by small steps). A counter's first increment starts from the highest value any counter on
//     that TPM ever had (TPM 2.0 spec), so on a TPM whose counters were used before, the floor
//     may start above 0 — the agent reports it; only a TPM clear resets it.
//   - File: a small JSON file (format version 1) in the state directory, replaced atomically and
//     never lowered by Advance. Used on hosts without a TPM, and beside the TPM as a second copy.
//
// Multi combines stores: Get is the maximum of them (a cleared TPM or a deleted file cannot
// lower the floor), Advance advances each. The agent advances the floor only when a new slot
// is committed, after its health gate passed, to that image's security version.
//
// Extend extends a PCR's SHA-256 bank with an image digest (TPM2_PCR_Extend), so that secrets
// can be sealed to "this /usr image booted".
package floor
