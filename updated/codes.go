package updated

import (
	"errors"
	"io/fs"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/partition"
	"github.com/twinslot/twinslot/payload"
)

// Omaha errorcode values the agent reports: update_engine's ActionExitCode numbering (see
// omaha.ErrorCode) for everything update_engine also reports, so the server's statistics mean
// the same as for Flatcar hosts, and twinslot's own codes above that range for what
// update_engine cannot tell.
const (
	CodeError                      = int(omaha.ErrorCodeError)
	CodePostinstallRunnerError     = int(omaha.ErrorCodePostinstallRunnerError) // PrepareInstall failed (Flatcar's postinst does the flip)
	CodeInstallDeviceOpenError     = int(omaha.ErrorCodeInstallDeviceOpenError)
	CodeDownloadTransferError      = int(omaha.ErrorCodeDownloadTransferError)
	CodePayloadSizeMismatch        = int(omaha.ErrorCodePayloadSizeMismatchError)
	CodePayloadVerificationError   = int(omaha.ErrorCodeDownloadPayloadVerificationError)
	CodeNewPartitionInfoError      = int(omaha.ErrorCodeDownloadNewPartitionInfoError)
	CodeDownloadWriteError         = int(omaha.ErrorCodeDownloadWriteError)
	CodeNewRootfsVerificationError = int(omaha.ErrorCodeNewRootfsVerificationError)
	CodePubKeyVerificationError    = int(omaha.ErrorCodeDownloadPayloadPubKeyVerificationError)
	CodeSignatureMissing           = int(omaha.ErrorCodeDownloadSignatureMissingInManifest)
	CodeManifestParseError         = int(omaha.ErrorCodeDownloadManifestParseError)
	CodeOperationHashMismatch      = int(omaha.ErrorCodeDownloadOperationHashMismatch)
	CodeRollback                   = int(omaha.ErrorCodeRollback)

	// twinslot's own codes (see omaha's table for what each means).
	CodeHealthGateFailed   = int(omaha.ErrorCodeHealthGateFailed)
	CodeWrongPayload       = int(omaha.ErrorCodeWrongPayload)
	CodeBelowSecurityFloor = int(omaha.ErrorCodeBelowSecurityFloor)
	CodeUnsafeBootState    = int(omaha.ErrorCodeUnsafeBootState)
	CodeKernelInstall      = int(omaha.ErrorCodeKernelInstall)
)

// installCode maps an install failure to the errorcode to report.
func installCode(err error) int {
	if r, ok := payload.IsRejection(err); ok {
		switch r {
		case payload.ReasonTruncated:
			return CodePayloadSizeMismatch
		case payload.ReasonMalformed, payload.ReasonLengthOverflow:
			return CodeManifestParseError
		case payload.ReasonNoSignature:
			return CodeSignatureMissing
		case payload.ReasonBadSignature, payload.ReasonBelowThreshold, payload.ReasonChunkTableMismatch:
			return CodePayloadVerificationError
		case payload.ReasonUnknownKey, payload.ReasonRevokedKey:
			return CodePubKeyVerificationError
		case payload.ReasonWrongApp, payload.ReasonWrongBoard:
			return CodeWrongPayload
		case payload.ReasonSecurityVersion:
			return CodeBelowSecurityFloor
		case payload.ReasonChunkHash:
			return CodeOperationHashMismatch
		case payload.ReasonImageTooLarge:
			return CodeNewPartitionInfoError
		case payload.ReasonRangeIgnored, payload.ReasonContentRange:
			return CodeDownloadTransferError
		case payload.ReasonImageHash:
			return CodeNewRootfsVerificationError
		}
		return CodePayloadVerificationError
	}
	switch {
	case errors.Is(err, partition.ErrSlotTooSmall):
		return CodeNewPartitionInfoError
	case errors.Is(err, partition.ErrBusy), errors.Is(err, partition.ErrNotGPT),
		errors.Is(err, partition.ErrBothTablesCorrupt), errors.Is(err, partition.ErrUnsupportedTable),
		errors.Is(err, partition.ErrUnknownSlot):
		return CodeInstallDeviceOpenError
	case errors.Is(err, partition.ErrOutOfSlot):
		return CodeDownloadWriteError
	}
	var pe *fs.PathError
	var we *partition.WriteError
	switch {
	case errors.As(err, &pe):
		return CodeDownloadWriteError // reading or writing the slot itself failed
	case errors.As(err, &we):
		return CodeDownloadWriteError // writing the GPT (BeginInstall) failed, not in effect
	}
	return CodeDownloadTransferError
}
