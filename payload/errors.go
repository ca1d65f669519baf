package payload

import (
	"errors"
	"fmt"
)

// Reason names why a payload (or a source serving it) was rejected. Callers branch on it, e.g. the
// updated agent maps each Reason to an Omaha error code; keep the values stable.
type Reason string

// Rejection reasons. Every error that refuses a payload is a *RejectError carrying one of these.
const (
	ReasonMalformed          Reason = "malformed"           // bad magic, unknown format version, invalid JSON or table
	ReasonTruncated          Reason = "truncated"           // the file ends before a section it announces
	ReasonLengthOverflow     Reason = "length-overflow"     // a length or count exceeds its limit or overflows
	ReasonNoSignature        Reason = "no-signature"        // the envelope carries no signature
	ReasonBadSignature       Reason = "bad-signature"       // a signature by a trusted key does not verify
	ReasonUnknownKey         Reason = "unknown-key"         // only keys that the trust root does not list signed
	ReasonRevokedKey         Reason = "revoked-key"         // only revoked keys signed
	ReasonBelowThreshold     Reason = "below-threshold"     // fewer distinct valid trusted keys than the threshold
	ReasonWrongApp           Reason = "wrong-app"           // manifest app id differs from the expected one
	ReasonWrongBoard         Reason = "wrong-board"         // manifest board differs from the expected one
	ReasonSecurityVersion    Reason = "security-version"    // manifest security version is below the floor
	ReasonChunkTableMismatch Reason = "chunk-table-hash"    // chunk table bytes do not match the signed hash
	ReasonChunkHash          Reason = "chunk-hash"          // a chunk's bytes do not match its signed SHA-256
	ReasonImageTooLarge      Reason = "image-too-large"     // the image does not fit the target slot
	ReasonRangeIgnored       Reason = "range-ignored"       // the server answered a Range request with the whole file
	ReasonContentRange       Reason = "wrong-content-range" // the server answered with a different range or size
	ReasonImageHash          Reason = "image-hash"          // the slot's final SHA-256 differs from the manifest
)

// RejectError is a refused payload. Use errors.As to read the Reason, or errors.Is against the
// sentinels below (ErrWrongBoard …), which match any RejectError with the same Reason.
type RejectError struct {
	Reason Reason
	Detail string // what exactly was wrong, for the operator
	Err    error  // underlying cause, if any
}

func (e *RejectError) Error() string {
	msg := "payload rejected (" + string(e.Reason) + ")"
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *RejectError) Unwrap() error { return e.Err }

// Is reports whether target is a *RejectError with the same Reason, so sentinels work with errors.Is.
func (e *RejectError) Is(target error) bool {
	var t *RejectError
	return errors.As(target, &t) && t.Reason == e.Reason && t.Detail == "" && t.Err == nil
}

// Sentinels for errors.Is; each matches every RejectError with its Reason.
var (
	ErrMalformed          = &RejectError{Reason: ReasonMalformed}
	ErrTruncated          = &RejectError{Reason: ReasonTruncated}
	ErrLengthOverflow     = &RejectError{Reason: ReasonLengthOverflow}
	ErrNoSignature        = &RejectError{Reason: ReasonNoSignature}
	ErrBadSignature       = &RejectError{Reason: ReasonBadSignature}
	ErrUnknownKey         = &RejectError{Reason: ReasonUnknownKey}
	ErrRevokedKey         = &RejectError{Reason: ReasonRevokedKey}
	ErrBelowThreshold     = &RejectError{Reason: ReasonBelowThreshold}
	ErrWrongApp           = &RejectError{Reason: ReasonWrongApp}
	ErrWrongBoard         = &RejectError{Reason: ReasonWrongBoard}
	ErrSecurityVersion    = &RejectError{Reason: ReasonSecurityVersion}
	ErrChunkTableMismatch = &RejectError{Reason: ReasonChunkTableMismatch}
	ErrChunkHash          = &RejectError{Reason: ReasonChunkHash}
	ErrImageTooLarge      = &RejectError{Reason: ReasonImageTooLarge}
	ErrRangeIgnored       = &RejectError{Reason: ReasonRangeIgnored}
	ErrContentRange       = &RejectError{Reason: ReasonContentRange}
	ErrImageHash          = &RejectError{Reason: ReasonImageHash}
)

func reject(r Reason, format string, args ...any) *RejectError {
	return &RejectError{Reason: r, Detail: fmt.Sprintf(format, args...)}
}

func rejectErr(r Reason, err error, format string, args ...any) *RejectError {
	return &RejectError{Reason: r, Detail: fmt.Sprintf(format, args...), Err: err}
}

// IsRejection reports whether err refuses the payload itself (as opposed to an I/O problem worth
// retrying later) and returns the reason.
func IsRejection(err error) (Reason, bool) {
	var r *RejectError
	if errors.As(err, &r) {
		return r.Reason, true
	}
	return "", false
}
