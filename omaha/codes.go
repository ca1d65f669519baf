package omaha

import (
	"encoding/xml"
	"fmt"
	"strconv"
	"strings"
)

// EventType is the Omaha eventtype attribute of an <event>. The values are Google's Omaha v3
// table; update_engine sends only 3, 13 and 14, and CoreUpdate/Nebraska add 800.
type EventType int

const (
	EventTypeUnknown                      EventType = 0
	EventTypeDownloadComplete             EventType = 1
	EventTypeInstallComplete              EventType = 2
	EventTypeUpdateComplete               EventType = 3 // update_engine: 3/2 with every check, 3/1 installed, 3/0 and 3/9 failures
	EventTypeUninstall                    EventType = 4
	EventTypeDownloadStarted              EventType = 5
	EventTypeInstallStarted               EventType = 6
	EventTypeNewApplicationInstallStarted EventType = 9
	EventTypeSetupStarted                 EventType = 10
	EventTypeSetupFinished                EventType = 11
	EventTypeUpdateApplicationStarted     EventType = 12
	EventTypeUpdateDownloadStarted        EventType = 13 // update_engine: 13/1 before the payload download
	EventTypeUpdateDownloadFinished       EventType = 14 // update_engine: 14/1 payload streamed (downloaded, not installed)
	EventTypeUpdateInstallerStarted       EventType = 15
	// EventTypeInstanceHold is not an Omaha code: CoreUpdate's "install success, update
	// completion prevented by instance". update_engine never sends it.
	EventTypeInstanceHold EventType = 800
)

var eventTypeNames = map[EventType]string{
	EventTypeUnknown:                      "unknown",
	EventTypeDownloadComplete:             "download complete",
	EventTypeInstallComplete:              "install complete",
	EventTypeUpdateComplete:               "update complete",
	EventTypeUninstall:                    "uninstall",
	EventTypeDownloadStarted:              "download started",
	EventTypeInstallStarted:               "install started",
	EventTypeNewApplicationInstallStarted: "new application install started",
	EventTypeSetupStarted:                 "setup started",
	EventTypeSetupFinished:                "setup finished",
	EventTypeUpdateApplicationStarted:     "update application started",
	EventTypeUpdateDownloadStarted:        "update download started",
	EventTypeUpdateDownloadFinished:       "update download finished",
	EventTypeUpdateInstallerStarted:       "update installer started",
	EventTypeInstanceHold:                 "instance hold",
}

func (t EventType) String() string {
	if s, ok := eventTypeNames[t]; ok {
		return s
	}
	return "event type " + strconv.Itoa(int(t))
}

// EventResult is the Omaha eventresult attribute. update_engine sends 0, 1, 2 and 9.
type EventResult int

const (
	EventResultError                 EventResult = 0
	EventResultSuccess               EventResult = 1
	EventResultSuccessReboot         EventResult = 2
	EventResultSuccessRestartBrowser EventResult = 3
	EventResultCancelled             EventResult = 4
	EventResultErrorInstallerMSI     EventResult = 5
	EventResultErrorInstallerOther   EventResult = 6
	EventResultNoUpdate              EventResult = 7
	EventResultInstallerSystem       EventResult = 8
	EventResultUpdateDeferred        EventResult = 9 // update_engine: error codes 35, 36, 40
	EventResultHandoffError          EventResult = 10
)

var eventResultNames = map[EventResult]string{
	EventResultError:                 "error",
	EventResultSuccess:               "success",
	EventResultSuccessReboot:         "success reboot",
	EventResultSuccessRestartBrowser: "success restart browser",
	EventResultCancelled:             "cancelled",
	EventResultErrorInstallerMSI:     "error installer MSI",
	EventResultErrorInstallerOther:   "error installer other",
	EventResultNoUpdate:              "noupdate",
	EventResultInstallerSystem:       "error installer system",
	EventResultUpdateDeferred:        "update deferred",
	EventResultHandoffError:          "handoff error",
}

func (r EventResult) String() string {
	if s, ok := eventResultNames[r]; ok {
		return s
	}
	return "event result " + strconv.Itoa(int(r))
}

// hasErrorCode reports whether update_engine puts an errorcode attribute on an event with
// this result: everything except success and success-reboot.
func (r EventResult) hasErrorCode() bool {
	return r != EventResultSuccess && r != EventResultSuccessReboot
}

// ErrorCode is update_engine's ActionExitCode as sent in the errorcode attribute: a base code
// (0–44, 100, 2000+HTTP status) with flag bits 28–31 OR-ed in. update_engine prints it as a
// signed 32-bit integer, so a code with ErrorCodeFlagDevMode arrives negative; both spellings
// parse to the same value, and it is marshaled signed, as update_engine does.
type ErrorCode uint32

const (
	ErrorCodeSuccess                                    ErrorCode = 0
	ErrorCodeError                                      ErrorCode = 1
	ErrorCodeOmahaRequestError                          ErrorCode = 2
	ErrorCodeOmahaResponseHandlerError                  ErrorCode = 3
	ErrorCodeFilesystemCopierError                      ErrorCode = 4
	ErrorCodePostinstallRunnerError                     ErrorCode = 5
	ErrorCodeSetBootableFlagError                       ErrorCode = 6
	ErrorCodeInstallDeviceOpenError                     ErrorCode = 7
	ErrorCodeKernelDeviceOpenError                      ErrorCode = 8
	ErrorCodeDownloadTransferError                      ErrorCode = 9
	ErrorCodePayloadHashMismatchError                   ErrorCode = 10
	ErrorCodePayloadSizeMismatchError                   ErrorCode = 11
	ErrorCodeDownloadPayloadVerificationError           ErrorCode = 12
	ErrorCodeDownloadNewPartitionInfoError              ErrorCode = 13
	ErrorCodeDownloadWriteError                         ErrorCode = 14
	ErrorCodeNewRootfsVerificationError                 ErrorCode = 15
	ErrorCodeNewKernelVerificationError                 ErrorCode = 16
	ErrorCodeSignedDeltaPayloadExpectedError            ErrorCode = 17
	ErrorCodeDownloadPayloadPubKeyVerificationError     ErrorCode = 18
	ErrorCodePostinstallBootedFromFirmwareB             ErrorCode = 19
	ErrorCodeDownloadStateInitializationError           ErrorCode = 20
	ErrorCodeDownloadInvalidMetadataMagicString         ErrorCode = 21
	ErrorCodeDownloadSignatureMissingInManifest         ErrorCode = 22
	ErrorCodeDownloadManifestParseError                 ErrorCode = 23
	ErrorCodeDownloadMetadataSignatureError             ErrorCode = 24
	ErrorCodeDownloadMetadataSignatureVerificationError ErrorCode = 25
	ErrorCodeDownloadMetadataSignatureMismatch          ErrorCode = 26
	ErrorCodeDownloadOperationHashVerificationError     ErrorCode = 27
	ErrorCodeDownloadOperationExecutionError            ErrorCode = 28
	ErrorCodeDownloadOperationHashMismatch              ErrorCode = 29
	ErrorCodeOmahaRequestEmptyResponseError             ErrorCode = 30
	ErrorCodeOmahaRequestXMLParseError                  ErrorCode = 31
	ErrorCodeDownloadInvalidMetadataSize                ErrorCode = 32
	ErrorCodeDownloadInvalidMetadataSignature           ErrorCode = 33
	ErrorCodeOmahaResponseInvalid                       ErrorCode = 34
	ErrorCodeOmahaUpdateIgnoredPerPolicy                ErrorCode = 35
	ErrorCodeOmahaUpdateDeferredPerPolicy               ErrorCode = 36
	ErrorCodeOmahaErrorInHTTPResponse                   ErrorCode = 37
	ErrorCodeDownloadOperationHashMissingError          ErrorCode = 38
	ErrorCodeDownloadMetadataSignatureMissingError      ErrorCode = 39
	ErrorCodeOmahaUpdateDeferredForBackoff              ErrorCode = 40
	ErrorCodePostinstallPowerwashError                  ErrorCode = 41
	ErrorCodeNewPCRPolicyVerificationError              ErrorCode = 42
	ErrorCodeNewPCRPolicyHTTPError                      ErrorCode = 43
	// ErrorCodeRollback (Flatcar, 2020) is sent as 3/0/44 with the first check after the host
	// booted back into the version it updated from.
	ErrorCodeRollback ErrorCode = 44
	// ErrorCodeDownloadIncomplete is internal to update_engine and never sent.
	ErrorCodeDownloadIncomplete ErrorCode = 100
	// ErrorCodeOmahaRequestHTTPResponseBase + HTTP status encodes a failed Omaha exchange
	// (2503 = the server answered 503); update_engine clamps the sum to 2999.
	ErrorCodeOmahaRequestHTTPResponseBase ErrorCode = 2000
	errorCodeHTTPMax                      ErrorCode = 2999
)

// twinslot's own codes, above update_engine's range, for what update_engine cannot tell. The
// agent (updated) sends them in 3/0 events; the server names them in halt reasons.
const (
	// ErrorCodeHealthGateFailed: the new slot booted but failed the health gate (systemd
	// state, health.d checks or URL checks); the agent rolled back.
	ErrorCodeHealthGateFailed ErrorCode = 1001
	// ErrorCodeWrongPayload: the payload is for another app or board, or its signed version is
	// not the version the server offered.
	ErrorCodeWrongPayload ErrorCode = 1002
	// ErrorCodeBelowSecurityFloor: the payload's security version is below the host's floor.
	ErrorCodeBelowSecurityFloor ErrorCode = 1003
	// ErrorCodeUnsafeBootState: the agent refused to write because the running slot is not
	// committed or the slot layout is not what an install needs.
	ErrorCodeUnsafeBootState ErrorCode = 1004
	// ErrorCodeKernelInstall: the new slot's kernel and initrd could not be copied to the ESP
	// (the image has none, the ESP is full or read-only); the new slot was not made the next
	// boot.
	ErrorCodeKernelInstall ErrorCode = 1005
)

// twinslotCode returns the name (for String) and the words (for Describe) of twinslot's own
// codes and of the rollback code.
func twinslotCode(c ErrorCode) (name, words string, ok bool) {
	switch c {
	case ErrorCodeRollback:
		return "RollbackError", "rollback", true
	case ErrorCodeHealthGateFailed:
		return "HealthGateFailed", "health gate", true
	case ErrorCodeWrongPayload:
		return "WrongPayload", "wrong payload", true
	case ErrorCodeBelowSecurityFloor:
		return "BelowSecurityFloor", "below security floor", true
	case ErrorCodeUnsafeBootState:
		return "UnsafeBootState", "unsafe boot state", true
	case ErrorCodeKernelInstall:
		return "KernelInstall", "kernel install", true
	}
	return "", "", false
}

func twinslotName(c ErrorCode) string {
	name, _, _ := twinslotCode(c)
	return name
}

// Describe returns the words an operator reads for the base code: "health gate" for 1001,
// "rollback" for 44, String's name for the others.
func (c ErrorCode) Describe() string {
	if _, words, ok := twinslotCode(c.Base()); ok {
		return words
	}
	return c.Base().String()
}

// Flag bits update_engine ORs into the code it sends.
const (
	ErrorCodeFlagTestOmahaURL ErrorCode = 1 << 28 // SERVER is not the public Flatcar server (every self-hosted server)
	ErrorCodeFlagTestImage    ErrorCode = 1 << 29 // a developer image
	ErrorCodeFlagResumed      ErrorCode = 1 << 30 // the failed download was a resumed one
	ErrorCodeFlagDevMode      ErrorCode = 1 << 31 // the host runs in developer mode
	// ErrorCodeFlags is the mask of all flag bits.
	ErrorCodeFlags = ErrorCodeFlagTestOmahaURL | ErrorCodeFlagTestImage | ErrorCodeFlagResumed | ErrorCodeFlagDevMode
)

var errorCodeNames = [...]string{
	"Success", "Error", "OmahaRequestError", "OmahaResponseHandlerError", "FilesystemCopierError",
	"PostinstallRunnerError", "SetBootableFlagError", "InstallDeviceOpenError",
	"KernelDeviceOpenError", "DownloadTransferError", "PayloadHashMismatchError",
	"PayloadSizeMismatchError", "DownloadPayloadVerificationError",
	"DownloadNewPartitionInfoError", "DownloadWriteError", "NewRootfsVerificationError",
	"NewKernelVerificationError", "SignedDeltaPayloadExpectedError",
	"DownloadPayloadPubKeyVerificationError", "PostinstallBootedFromFirmwareB",
	"DownloadStateInitializationError", "DownloadInvalidMetadataMagicString",
	"DownloadSignatureMissingInManifest", "DownloadManifestParseError",
	"DownloadMetadataSignatureError", "DownloadMetadataSignatureVerificationError",
	"DownloadMetadataSignatureMismatch", "DownloadOperationHashVerificationError",
	"DownloadOperationExecutionError", "DownloadOperationHashMismatch",
	"OmahaRequestEmptyResponseError", "OmahaRequestXMLParseError", "DownloadInvalidMetadataSize",
	"DownloadInvalidMetadataSignature", "OmahaResponseInvalid", "OmahaUpdateIgnoredPerPolicy",
	"OmahaUpdateDeferredPerPolicy", "OmahaErrorInHTTPResponse",
	"DownloadOperationHashMissingError", "DownloadMetadataSignatureMissingError",
	"OmahaUpdateDeferredForBackoff", "PostinstallPowerwashError", "NewPCRPolicyVerificationError",
	"NewPCRPolicyHTTPError", "RollbackError",
}

var errorFlagNames = []struct {
	flag ErrorCode
	name string
}{
	{ErrorCodeFlagDevMode, "DevMode"},
	{ErrorCodeFlagResumed, "Resumed"},
	{ErrorCodeFlagTestImage, "TestImage"},
	{ErrorCodeFlagTestOmahaURL, "TestOmahaUrl"},
}

// Base returns the code without its flag bits.
func (c ErrorCode) Base() ErrorCode { return c &^ ErrorCodeFlags }

// Flags returns only the flag bits of the code.
func (c ErrorCode) Flags() ErrorCode { return c & ErrorCodeFlags }

// HTTPStatus returns the HTTP status encoded in a 2000–2999 code.
func (c ErrorCode) HTTPStatus() (int, bool) {
	b := c.Base()
	if b < ErrorCodeOmahaRequestHTTPResponseBase || b > errorCodeHTTPMax {
		return 0, false
	}
	return int(b - ErrorCodeOmahaRequestHTTPResponseBase), true
}

// EventResult returns the result update_engine pairs with this code in an error event:
// update deferred for 35, 36 and 40, error for everything else except success.
func (c ErrorCode) EventResult() EventResult {
	switch c.Base() {
	case ErrorCodeSuccess:
		return EventResultSuccess
	case ErrorCodeOmahaUpdateIgnoredPerPolicy, ErrorCodeOmahaUpdateDeferredPerPolicy, ErrorCodeOmahaUpdateDeferredForBackoff:
		return EventResultUpdateDeferred
	}
	return EventResultError
}

// String names the base code and its flags, e.g. "OmahaResponseInvalid|TestOmahaUrl" for
// 268435490, "OmahaHTTPResponse503" for 2503, "ErrorCode(77)" for an unknown code.
func (c ErrorCode) String() string {
	var b strings.Builder
	base := c.Base()
	switch {
	case int(base) < len(errorCodeNames):
		b.WriteString(errorCodeNames[base])
	case base == ErrorCodeDownloadIncomplete:
		b.WriteString("DownloadIncomplete")
	case twinslotName(base) != "":
		b.WriteString(twinslotName(base))
	default:
		if st, ok := c.HTTPStatus(); ok {
			fmt.Fprintf(&b, "OmahaHTTPResponse%d", st)
		} else {
			fmt.Fprintf(&b, "ErrorCode(%d)", uint32(base))
		}
	}
	for _, f := range errorFlagNames {
		if c&f.flag != 0 {
			b.WriteString("|" + f.name)
		}
	}
	return b.String()
}

// MarshalXMLAttr writes the code as update_engine does: a signed 32-bit decimal.
func (c ErrorCode) MarshalXMLAttr(name xml.Name) (xml.Attr, error) {
	return xml.Attr{Name: name, Value: c.signed()}, nil
}

func (c ErrorCode) signed() string { return strconv.FormatInt(int64(int32(c)), 10) }

// UnmarshalXMLAttr accepts a signed 32-bit decimal (update_engine) or an unsigned one.
func (c *ErrorCode) UnmarshalXMLAttr(attr xml.Attr) error {
	v, err := ParseErrorCode(attr.Value)
	if err != nil {
		return err
	}
	*c = v
	return nil
}

// ParseErrorCode parses a decimal error code as found in the errorcode attribute, signed
// (update_engine's spelling, e.g. -2147483614) or unsigned.
func ParseErrorCode(s string) (ErrorCode, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "-") {
		v, err := strconv.ParseInt(s, 10, 32)
		if err != nil {
			return 0, fmt.Errorf("omaha: errorcode %q: not a 32-bit integer", s)
		}
		return ErrorCode(uint32(int32(v))), nil
	}
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("omaha: errorcode %q: not a 32-bit integer", s)
	}
	return ErrorCode(v), nil
}

// Status is the status attribute of <app>, <updatecheck>, <ping> and <event> in a response.
type Status string

const (
	// StatusOK: on <app>, the app is known; on <updatecheck>, an update is offered (urls,
	// manifest, package and postinstall action follow); on <ping> and <event>, acknowledged.
	StatusOK Status = "ok"
	// StatusNoUpdate (<updatecheck> only): no update for this host now. A server also answers
	// it when a rollout policy holds the update back: update_engine treats every status other
	// than ok and noupdate as an invalid response (error 34) and reports it as an error event.
	StatusNoUpdate Status = "noupdate"
	// StatusRestricted (<app>): the app may not be served to this client (export restrictions
	// in Google's protocol).
	StatusRestricted Status = "restricted"
	// StatusUnknownApplication (<app>): the server does not know this appid.
	StatusUnknownApplication Status = "error-unknownApplication"
	// StatusUnknownApplicationOrGroup (<app>, Nebraska): the app is known but the host's
	// track names no group or channel; the <updatecheck> then says error-internal.
	StatusUnknownApplicationOrGroup Status = "error-unknownApplicationOrGroup"
	// StatusInvalidAppID (<app>): the appid is not a well-formed id.
	StatusInvalidAppID Status = "error-invalidAppId"
	// StatusInvalidVersion (<app>, go-omaha extra): the version attribute is not acceptable.
	StatusInvalidVersion Status = "error-invalidVersion"
	// StatusInternalError (<app> or <updatecheck>): the server failed; try again later.
	StatusInternalError Status = "error-internal"
	// StatusHashError (<updatecheck>): the request's hash check failed (Google protocol).
	StatusHashError Status = "error-hash"
	// StatusOSNotSupported (<updatecheck>): the host's OS is not served.
	StatusOSNotSupported Status = "error-osnotsupported"
	// StatusHWNotSupported (<updatecheck>): the host's hardware is not served.
	StatusHWNotSupported Status = "error-hwnotsupported"
	// StatusUnsupportedProtocol (<updatecheck>): the request's protocol version is not served.
	StatusUnsupportedProtocol Status = "error-unsupportedProtocol"
)

// IsError reports whether the status is one of the error-* values.
func (s Status) IsError() bool { return strings.HasPrefix(string(s), "error-") }
