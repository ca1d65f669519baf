package updated

// Omaha errorcode values the agent reports (update_engine's ActionExitCode numbering, see
// research/omaha.md §1.4). Every update step maps its failures onto one of these, so the server's
// error statistics mean the same as for Flatcar hosts.
const (
	CodeError                      = 1
	CodeOmahaRequestError          = 2  // the check exchange failed (transport)
	CodePostinstallRunnerError     = 5  // making the new slot the next boot (PrepareInstall) failed
	CodeInstallDeviceOpenError     = 7  // the disk or the target slot could not be opened
	CodeDownloadTransferError      = 9  // fetching payload bytes failed
	CodePayloadSizeMismatch        = 11 // truncated payload, or sizes that disagree
	CodePayloadVerificationError   = 12 // signature, trust root, threshold, revoked or unknown key
	CodeNewPartitionInfoError      = 13 // the image does not fit the target slot
	CodeDownloadWriteError         = 14 // writing the target slot failed
	CodeNewRootfsVerificationError = 15 // the written slot does not hash to the manifest's digest
	CodeSignatureMissing           = 22 // the envelope carries no signature
	CodeManifestParseError         = 23 // the payload header or manifest is malformed
	CodeOperationHashMismatch      = 29 // a chunk did not match its hash
	CodeOmahaXMLParseError         = 31 // the server's reply is not Omaha XML
	CodeOmahaResponseInvalid       = 34 // the reply lacks what an update needs, or has an error status
	CodeRollback                   = 44 // the host fell back to the previous version (Flatcar)

	// twinslot's own codes, above update_engine's range (0–100) and below the 2000+HTTP range.

	// CodeHealthGateFailed: the new slot booted but failed the health gate (systemd state,
	// health.d checks or URL checks); the agent rolled back.
	CodeHealthGateFailed = 1001
	// CodeWrongPayload: the payload is for another app or board.
	CodeWrongPayload = 1002
	// CodeBelowSecurityFloor: the payload's security version is below the host's floor.
	CodeBelowSecurityFloor = 1003
	// CodeUnsafeBootState: the agent refused to write because the running slot is not committed
	// or the slot layout is not what an install needs.
	CodeUnsafeBootState = 1004

	// CodeHTTPBase + status reports an Omaha exchange answered with an HTTP error (2000–2999).
	CodeHTTPBase = 2000
)

// HTTPCode is the errorcode for an Omaha exchange that failed with HTTP status.
func HTTPCode(status int) int {
	return min(max(CodeHTTPBase+status, CodeHTTPBase), 2999)
}
