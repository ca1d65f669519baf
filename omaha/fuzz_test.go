package omaha

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func addSeeds(f *testing.F, prefix string) {
	paths, err := filepath.Glob(filepath.Join("testdata", prefix+"*.xml"))
	if err != nil || len(paths) == 0 {
		f.Fatalf("no testdata/%s*.xml seeds: %v", prefix, err)
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// FuzzRequest: parsing arbitrary bytes never panics, and whatever parses marshals to a
// document that parses again to the same apps and marshals to the same bytes.
func FuzzRequest(f *testing.F) {
	addSeeds(f, "request-")
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := ParseRequest(bytes.NewReader(data))
		if err != nil {
			return
		}
		for _, a := range req.Apps {
			_ = a.Validate() // must not panic on anything the parser accepts
		}
		out, err := req.Marshal()
		if err != nil {
			t.Fatalf("marshal of a parsed request: %v", err)
		}
		if len(out) > MaxRequestBytes {
			return // escaping grew it past the cap
		}
		back, err := ParseRequest(bytes.NewReader(out))
		if err != nil {
			t.Fatalf("reparse: %v\n%s", err, out)
		}
		if len(back.Apps) != len(req.Apps) {
			t.Fatalf("reparse has %d apps, want %d", len(back.Apps), len(req.Apps))
		}
		for i, a := range req.Apps {
			b := back.Apps[i]
			if a.AppID != b.AppID || a.MachineID != b.MachineID || a.Version != b.Version || a.Track != b.Track ||
				len(a.Events) != len(b.Events) || (a.Ping == nil) != (b.Ping == nil) || (a.UpdateCheck == nil) != (b.UpdateCheck == nil) {
				t.Fatalf("app %d changed:\n got %+v\nwant %+v", i, b, a)
			}
			for j, ev := range a.Events {
				if bev := b.Events[j]; ev.Type != bev.Type || ev.Result != bev.Result || ev.ErrorCode != bev.ErrorCode || ev.PreviousVersion != bev.PreviousVersion {
					t.Fatalf("app %d event %d changed: got %+v want %+v", i, j, bev, ev)
				}
			}
		}
		again, err := back.Marshal()
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("marshal not stable (%v):\n%s\n---\n%s", err, out, again)
		}
	})
}

// FuzzResponse: as FuzzRequest for responses; an offer that Update() accepts is complete.
func FuzzResponse(f *testing.F) {
	addSeeds(f, "response-")
	f.Fuzz(func(t *testing.T, data []byte) {
		resp, err := ParseResponse(bytes.NewReader(data))
		if err != nil {
			return
		}
		for _, a := range resp.Apps {
			if a.UpdateCheck == nil {
				continue
			}
			u, err := a.UpdateCheck.Update()
			if err != nil {
				continue
			}
			if u.Version == "" || u.PackageName == "" || u.Size <= 0 || len(u.URLs) == 0 {
				t.Fatalf("Update() accepted an incomplete offer %+v", u)
			}
			for _, url := range u.DownloadURLs() {
				if !strings.HasSuffix(url, "/"+u.PackageName) {
					t.Fatalf("download URL %q does not end in the package name", url)
				}
			}
		}
		out, err := resp.Marshal()
		if err != nil {
			t.Fatalf("marshal of a parsed response: %v", err)
		}
		if len(out) > MaxResponseBytes {
			return
		}
		back, err := ParseResponse(bytes.NewReader(out))
		if err != nil {
			t.Fatalf("reparse: %v\n%s", err, out)
		}
		again, err := back.Marshal()
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("marshal not stable (%v):\n%s\n---\n%s", err, out, again)
		}
	})
}
