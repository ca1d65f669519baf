// Package floor keeps the host's anti-rollback floor — the lowest payload security version the
// host accepts — and measures booted images into a TPM PCR.
//
// Stores:
//
//   - TPM: a TPM 2.0 NV counter (TPM_NT_COUNTER) at NVIndex and its base, a 16-byte ordinary
//     index at BaseIndex (NVIndex+1; a TPM with another Index keeps its base at Index+1), both
//     owner-authorised. The floor is counter − base. A counter's first increment starts it at
//     the highest value any counter of that TPM ever held, plus one (TPM 2.0 Part 1, NV
//     counters), so the raw value depends on other programs' counters; the base records that
//     first value. It is written once ("tsfb", BaseFormat, the value) and write-locked with
//     TPMA_NV_WRITEDEFINE, which holds until the index is deleted. The counter only goes up
//     and the base cannot be rewritten, so neither a bug nor an attacker with the disk can
//     lower the floor. Deleting both indices (TPM owner authorisation) restarts the TPM floor
//     at 0; Multi's file copy still holds it. Advancing to v increments the counter until the
//     floor reaches v (at most MaxAdvance steps per call; security versions are meant to grow
//     by small steps).
//
//     First use, in steps that each leave a state the next start resumes from: define the
//     base, define the counter, increment it once, write its value into the base, lock the
//     base. Until the base is written the floor reads 0, which is right: the counter is then
//     undefined, never incremented, or at its first value. No state is read by guessing: a
//     counter without its base, a base without its counter or with a counter that was never
//     incremented, a base above the counter, or a base index that twinslot did not define is a
//     *BaseError, and the floor stays unreadable (so nothing is installed) until an operator
//     acts; the error says how.
//
//     Counters of twinslot before the base index (recognised by TPMA_NV_AUTHWRITE, which
//     current counters lack) keep their raw value as the floor, as those versions read it: it
//     is never below the floor they meant, and no base can be recovered for them, so a
//     base-relative reading could only lower it. One that was never incremented holds no floor
//     and is replaced at the next Advance. To reset a floor an old counter inflated, undefine
//     it and correct the floor file.
//
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
