package omaha

import (
	"errors"
	"strings"
	"testing"
)

const minimalRequest = `<?xml version="1.0" encoding="UTF-8"?>
<request protocol="3.0"><app appid="{e96281a6-d1af-4bde-9a0a-97b76e56dc57}"><ping active="1"></ping></app></request>`

func TestParseRequestErrors(t *testing.T) {
	manyApps := `<request protocol="3.0">` + strings.Repeat(`<app appid="a"></app>`, MaxApps+1) + `</request>`
	manyEvents := `<request protocol="3.0"><app appid="a">` +
		strings.Repeat(`<event eventtype="3" eventresult="1"></event>`, MaxEventsPerApp+1) + `</app></request>`
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"empty", "", ErrMalformed},
		{"only declaration", `<?xml version="1.0"?>`, ErrMalformed},
		{"not xml", "hello", ErrMalformed},
		{"truncated", minimalRequest[:len(minimalRequest)-10], ErrMalformed},
		{"wrong root", `<response protocol="3.0"></response>`, ErrMalformed},
		{"second root", minimalRequest + `<request protocol="3.0"></request>`, ErrMalformed},
		{"text after root", minimalRequest + `junk`, ErrMalformed},
		{"bad int attribute", `<request protocol="3.0" ismachine="yes"></request>`, ErrMalformed},
		{"bad errorcode", `<request protocol="3.0"><app><event eventtype="3" eventresult="0" errorcode="x"></event></app></request>`, ErrMalformed},
		{"foreign charset", `<?xml version="1.0" encoding="ISO-8859-1"?><request protocol="3.0"></request>`, ErrMalformed},
		{"undefined entity", `<request protocol="3.0" version="&xxe;"></request>`, ErrMalformed},
		{"no protocol", `<request></request>`, ErrUnsupportedProtocol},
		{"protocol 2.0", `<request protocol="2.0"></request>`, ErrUnsupportedProtocol},
		{"too many apps", manyApps, ErrTooLarge},
		{"too many events", manyEvents, ErrTooLarge},
		{"too large", `<request protocol="3.0">` + strings.Repeat(" ", MaxRequestBytes) + `</request>`, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := ParseRequest(strings.NewReader(tt.in))
			if !errors.Is(err, tt.want) {
				t.Fatalf("ParseRequest error = %v, want %v", err, tt.want)
			}
			if req != nil {
				t.Errorf("ParseRequest returned a request with error %v", err)
			}
			if !strings.HasPrefix(err.Error(), "omaha: parse request: ") {
				t.Errorf("error %q does not name the operation", err)
			}
		})
	}
}

func TestParseRequestAcceptsTrailingWhitespaceAndComments(t *testing.T) {
	req, err := ParseRequest(strings.NewReader(minimalRequest + "\n<!-- done -->\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(req.Apps) != 1 || req.Apps[0].Ping == nil || req.Apps[0].Ping.Active != 1 {
		t.Errorf("parsed %+v, want one app with an active ping", req.Apps)
	}
}

func TestParseResponseErrors(t *testing.T) {
	manyURLs := `<response protocol="3.0"><app appid="a" status="ok"><updatecheck status="ok"><urls>` +
		strings.Repeat(`<url codebase="http://x/"></url>`, MaxURLs+1) + `</urls></updatecheck></app></response>`
	manyPackages := `<response protocol="3.0"><app appid="a" status="ok"><updatecheck status="ok"><manifest version="1"><packages>` +
		strings.Repeat(`<package name="p" size="1"></package>`, MaxPackages+1) + `</packages></manifest></updatecheck></app></response>`
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"empty", "", ErrMalformed},
		{"wrong root", minimalRequest, ErrMalformed},
		{"bad size", `<response protocol="3.0"><app><updatecheck status="ok"><manifest><packages><package name="p" size="-x"></package></packages></manifest></updatecheck></app></response>`, ErrMalformed},
		{"protocol 2.0", `<response protocol="2.0"></response>`, ErrUnsupportedProtocol},
		{"too many urls", manyURLs, ErrTooLarge},
		{"too many packages", manyPackages, ErrTooLarge},
		{"too large", `<response protocol="3.0">` + strings.Repeat(" ", MaxResponseBytes) + `</response>`, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := ParseResponse(strings.NewReader(tt.in))
			if !errors.Is(err, tt.want) || resp != nil {
				t.Fatalf("ParseResponse = %v, %v; want nil, %v", resp, err, tt.want)
			}
		})
	}
}
