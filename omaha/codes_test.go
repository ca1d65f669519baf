package omaha

import (
	"encoding/xml"
	"testing"
)

func TestParseErrorCode(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    ErrorCode
		wantErr bool
	}{
		{name: "empty", in: "", wantErr: true},
		{name: "not a number", in: "x44", wantErr: true},
		{name: "above uint32", in: "4294967296", wantErr: true},
		{name: "below int32", in: "-2147483649", wantErr: true},
		{name: "rollback", in: "44", want: ErrorCodeRollback},
		{name: "test url flag", in: "268435490", want: ErrorCodeOmahaResponseInvalid | ErrorCodeFlagTestOmahaURL},
		{name: "dev mode signed", in: "-2147483604", want: ErrorCodeRollback | ErrorCodeFlagDevMode},
		{name: "dev mode unsigned", in: "2147483692", want: ErrorCodeRollback | ErrorCodeFlagDevMode},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseErrorCode(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseErrorCode(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("ParseErrorCode(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func TestErrorCodeMarshalSigned(t *testing.T) {
	c := ErrorCodePostinstallRunnerError | ErrorCodeFlagDevMode | ErrorCodeFlagTestOmahaURL
	attr, err := c.MarshalXMLAttr(xml.Name{Local: "errorcode"})
	if err != nil {
		t.Fatal(err)
	}
	if attr.Value != "-1879048187" {
		t.Errorf("marshal %v = %q, want update_engine's signed -1879048187", c, attr.Value)
	}
	var back ErrorCode
	if err := back.UnmarshalXMLAttr(attr); err != nil || back != c {
		t.Errorf("round trip = %v, %v; want %v", back, err, c)
	}
}

func TestErrorCodeString(t *testing.T) {
	tests := []struct {
		code ErrorCode
		want string
	}{
		{77, "ErrorCode(77)"},
		{ErrorCodeSuccess, "Success"},
		{ErrorCodeRollback, "RollbackError"},
		{268435490, "OmahaResponseInvalid|TestOmahaUrl"},
		{ErrorCodeOmahaRequestHTTPResponseBase + 503, "OmahaHTTPResponse503"},
		{ErrorCodeDownloadIncomplete | ErrorCodeFlagResumed, "DownloadIncomplete|Resumed"},
		{ErrorCodeHealthGateFailed | ErrorCodeFlagTestOmahaURL, "HealthGateFailed|TestOmahaUrl"},
		{1002, "WrongPayload"},
		{1003, "BelowSecurityFloor"},
		{1004, "UnsafeBootState"},
		{1005, "KernelInstall"},
		{1006, "ErrorCode(1006)"},
	}
	for _, tt := range tests {
		if got := tt.code.String(); got != tt.want {
			t.Errorf("ErrorCode(%d).String() = %q, want %q", uint32(tt.code), got, tt.want)
		}
	}
}

// TestErrorCodeDescribe: twinslot's own codes (1001–1005) and the rollback code have words for
// operators (halt reasons); the others fall back to String.
func TestErrorCodeDescribe(t *testing.T) {
	for code, want := range map[ErrorCode]string{
		9:                           "DownloadTransferError",
		ErrorCodeRollback:           "rollback",
		1001 | ErrorCodeFlagDevMode: "health gate",
		1002:                        "wrong payload",
		1003:                        "below security floor",
		1004:                        "unsafe boot state",
		1005:                        "kernel install",
		2503:                        "OmahaHTTPResponse503",
	} {
		if got := code.Describe(); got != want {
			t.Errorf("ErrorCode(%d).Describe() = %q, want %q", uint32(code), got, want)
		}
	}
}

func TestErrorCodeHTTPStatus(t *testing.T) {
	if _, ok := ErrorCodeRollback.HTTPStatus(); ok {
		t.Error("44 reported as an HTTP status")
	}
	if st, ok := (ErrorCode(2503) | ErrorCodeFlagTestOmahaURL).HTTPStatus(); !ok || st != 503 {
		t.Errorf("2503|TestOmahaUrl HTTPStatus = %d, %v; want 503, true", st, ok)
	}
}

func TestErrorCodeEventResult(t *testing.T) {
	tests := []struct {
		code ErrorCode
		want EventResult
	}{
		{ErrorCodePostinstallRunnerError | ErrorCodeFlagTestOmahaURL, EventResultError},
		{ErrorCodeRollback, EventResultError},
		{ErrorCodeOmahaUpdateIgnoredPerPolicy, EventResultUpdateDeferred},
		{ErrorCodeOmahaUpdateDeferredPerPolicy, EventResultUpdateDeferred},
		{ErrorCodeOmahaUpdateDeferredForBackoff | ErrorCodeFlagTestOmahaURL, EventResultUpdateDeferred},
		{ErrorCodeSuccess, EventResultSuccess},
	}
	for _, tt := range tests {
		if got := tt.code.EventResult(); got != tt.want {
			t.Errorf("%v.EventResult() = %v, want %v", tt.code, got, tt.want)
		}
	}
}

func TestEventNames(t *testing.T) {
	if got := EventTypeUpdateDownloadFinished.String(); got != "update download finished" {
		t.Errorf("14 = %q", got)
	}
	if got := EventType(801).String(); got != "event type 801" {
		t.Errorf("801 = %q", got)
	}
	if got := EventResultUpdateDeferred.String(); got != "update deferred" {
		t.Errorf("9 = %q", got)
	}
	if !StatusInternalError.IsError() || StatusNoUpdate.IsError() {
		t.Error("IsError misclassifies error-internal or noupdate")
	}
}
