package omaha

import (
	"bytes"
	"testing"
)

// The server parses one request and marshals one response per check-in; these bound its
// per-request CPU cost from this package.

func BenchmarkParseRequest(b *testing.B) {
	body := readTestdata(b, "request-updatecheck-idle.xml")
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseRequest(bytes.NewReader(body)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkValidate(b *testing.B) {
	req, err := ParseRequest(bytes.NewReader(readTestdata(b, "request-updatecheck-idle.xml")))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := req.Apps[0].Validate(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMarshalResponse(b *testing.B) {
	for _, file := range []string{"response-noupdate.xml", "response-ok.xml"} {
		resp, err := ParseResponse(bytes.NewReader(readTestdata(b, file)))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(file, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := resp.Marshal(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkParseResponse(b *testing.B) {
	body := readTestdata(b, "response-ok.xml")
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseResponse(bytes.NewReader(body)); err != nil {
			b.Fatal(err)
		}
	}
}
