package updated

import (
	"errors"
	"fmt"
	"io/fs"
	"testing"

	"github.com/twinslot/twinslot/partition"
	"github.com/twinslot/twinslot/payload"
)

func TestInstallCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{&payload.RejectError{Reason: payload.ReasonBadSignature}, CodePayloadVerificationError},
		{&payload.RejectError{Reason: payload.ReasonBelowThreshold}, CodePayloadVerificationError},
		{&payload.RejectError{Reason: payload.ReasonUnknownKey}, CodePubKeyVerificationError},
		{&payload.RejectError{Reason: payload.ReasonRevokedKey}, CodePubKeyVerificationError},
		{&payload.RejectError{Reason: payload.ReasonNoSignature}, CodeSignatureMissing},
		{&payload.RejectError{Reason: payload.ReasonWrongBoard}, CodeWrongPayload},
		{&payload.RejectError{Reason: payload.ReasonWrongApp}, CodeWrongPayload},
		{&payload.RejectError{Reason: payload.ReasonSecurityVersion}, CodeBelowSecurityFloor},
		{&payload.RejectError{Reason: payload.ReasonTruncated}, CodePayloadSizeMismatch},
		{&payload.RejectError{Reason: payload.ReasonMalformed}, CodeManifestParseError},
		{&payload.RejectError{Reason: payload.ReasonChunkHash}, CodeOperationHashMismatch},
		{&payload.RejectError{Reason: payload.ReasonImageTooLarge}, CodeNewPartitionInfoError},
		{&payload.RejectError{Reason: payload.ReasonRangeIgnored}, CodeDownloadTransferError},
		{&payload.RejectError{Reason: payload.ReasonImageHash}, CodeNewRootfsVerificationError},
		{fmt.Errorf("install: %w", &payload.RejectError{Reason: payload.ReasonContentRange}), CodeDownloadTransferError},
		{fmt.Errorf("open: %w", partition.ErrBusy), CodeInstallDeviceOpenError},
		{fmt.Errorf("begin install: %w", partition.ErrBothTablesCorrupt), CodeInstallDeviceOpenError},
		// A valid GPT in a layout partition does not write (sgdisk -j 2048, a grown disk): the
		// install device cannot be changed, as with a corrupt table.
		{fmt.Errorf("before writing: begin install into USR-B: %w", partition.ErrUnsupportedTable), CodeInstallDeviceOpenError},
		{&partition.SlotTooSmallError{Slot: "USR-B", Need: 2, Have: 1}, CodeNewPartitionInfoError},
		{fmt.Errorf("write: %w", partition.ErrOutOfSlot), CodeDownloadWriteError},
		{&fs.PathError{Op: "write", Path: "/dev/vda4", Err: errors.New("i/o error")}, CodeDownloadWriteError},
		{fmt.Errorf("before writing: %w", &partition.WriteError{Step: "write backup header", Err: errors.New("i/o error")}), CodeDownloadWriteError},
		{errors.New("GET http://x: 503 Service Unavailable"), CodeDownloadTransferError},
	} {
		if got := installCode(tc.err); got != tc.want {
			t.Errorf("installCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}
