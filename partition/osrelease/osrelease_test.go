package osrelease

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func readTestdata(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParse(t *testing.T) {
	var syntax *SyntaxError
	var field *FieldError
	for _, tc := range []struct {
		name    string
		in      string
		want    Release
		wantErr string // in the message
		errAs   any    // **SyntaxError or **FieldError
	}{
		// Failures first.
		{name: "empty", in: "", wantErr: "ID is empty", errAs: &field},
		{name: "no board", in: "ID=twinslot\nVERSION=1\n", wantErr: "BOARD or FLATCAR_BOARD is empty", errAs: &field},
		{name: "no version", in: "ID=twinslot\nBOARD=x\nBUILD_ID=2024\n", wantErr: "VERSION_ID or VERSION is empty", errAs: &field},
		{name: "ubuntu has no board", in: readTestdata(t, "ubuntu"), wantErr: "BOARD", errAs: &field},
		{name: "not key=value", in: "ID=twinslot\nhello\n", wantErr: "line 2: no '='", errAs: &syntax},
		{name: "space before =", in: "ID =twinslot\n", wantErr: "is not a key", errAs: &syntax},
		{name: "key starts with digit", in: "1D=twinslot\n", wantErr: "is not a key", errAs: &syntax},
		{name: "export", in: "export ID=twinslot\n", wantErr: "is not a key", errAs: &syntax},
		{name: "unquoted space", in: "NAME=two words\n", wantErr: "unquoted \" \"", errAs: &syntax},
		{name: "unquoted dollar", in: "NAME=$HOME\n", wantErr: "unquoted \"$\"", errAs: &syntax},
		{name: "unterminated double", in: "NAME=\"abc\n", wantErr: "unterminated double quote", errAs: &syntax},
		{name: "unterminated single", in: "NAME='abc\n", wantErr: "unterminated single quote", errAs: &syntax},
		{name: "escaped closing quote", in: "NAME=\"abc\\\"\n", wantErr: "unterminated double quote", errAs: &syntax},
		{name: "concatenation", in: "NAME=\"a\"'b'\n", wantErr: "after the closing quote", errAs: &syntax},
		{name: "trailing backslash", in: "NAME=abc\\\n", wantErr: "continuation", errAs: &syntax},
		{name: "bad version chars", in: "ID=twinslot\nVERSION_ID=\"1 2\"\nBOARD=x\n", wantErr: "may only hold", errAs: &field},
		{name: "version with slash", in: "ID=twinslot\nVERSION_ID=../1\nBOARD=x\n", wantErr: "may only hold", errAs: &field},
		{name: "long field", in: "ID=" + strings.Repeat("a", MaxFieldLen+1) + "\nVERSION=1\nBOARD=x\n", wantErr: "longer than", errAs: &field},
		{name: "long line", in: "NAME=\"" + strings.Repeat("a", MaxLineLen) + "\"\n", wantErr: "longer than 4096", errAs: &syntax},
		{name: "too large", in: strings.Repeat("#\n", MaxSize/2+1), wantErr: "larger than 64 KiB"},
		// Accepted files.
		{name: "twinslot", in: readTestdata(t, "twinslot"), want: Release{ID: "twinslot", Version: "1.0.0", Board: "amd64-usr"}},
		{name: "flatcar", in: readTestdata(t, "flatcar"), want: Release{ID: "flatcar", Version: "4081.2.0", Board: "amd64-usr", BuildID: "2024-12-03-1830"}},
		{name: "quoting", in: readTestdata(t, "quoting"), want: Release{ID: "twinslot", Version: "2.0.0", Board: "arm64-usr"}},
		{name: "VERSION_ID wins over VERSION", in: "ID=x\nVERSION=\"1.0 (Beefy)\"\nVERSION_ID=1.0\nBOARD=b\n", want: Release{ID: "x", Version: "1.0", Board: "b"}},
		{name: "VERSION when no VERSION_ID", in: "ID=x\nVERSION=1.1\nBOARD=b\n", want: Release{ID: "x", Version: "1.1", Board: "b"}},
		{name: "empty VERSION_ID falls back", in: "ID=x\nVERSION_ID=\nVERSION=1.1\nBOARD=b\n", want: Release{ID: "x", Version: "1.1", Board: "b"}},
		{name: "BUILD_ID never the version", in: "ID=x\nVERSION_ID=3\nBUILD_ID=\"2024-01-01 build 7\"\nBOARD=b\n", want: Release{ID: "x", Version: "3", Board: "b", BuildID: "2024-01-01 build 7"}},
		{name: "BOARD wins over FLATCAR_BOARD", in: "ID=x\nVERSION=1\nFLATCAR_BOARD=f\nBOARD=b\n", want: Release{ID: "x", Version: "1", Board: "b"}},
		{name: "last wins", in: "ID=a\nID=b\nVERSION=1\nBOARD=c\n", want: Release{ID: "b", Version: "1", Board: "c"}},
		{name: "CRLF and blanks", in: "ID=x\r\n\r\n  VERSION=1  \r\nBOARD=b", want: Release{ID: "x", Version: "1", Board: "b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse([]byte(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if tc.errAs != nil && !errors.As(err, tc.errAs) {
					t.Fatalf("err %T is not %T", err, tc.errAs)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v %v, want %+v", got, err, tc.want)
			}
		})
	}
}

func TestValues(t *testing.T) {
	vals, err := Values([]byte(readTestdata(t, "quoting")))
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{
		"ID": "twinslot", "VERSION": `2.0.0 "beta" $HOME \ \n`, "BOARD": "arm64-usr", "EMPTY": "", "NAME": "a # not a comment",
	} {
		if got, ok := vals[k]; !ok || got != want {
			t.Errorf("%s = %q (set %v), want %q", k, got, ok, want)
		}
	}
	if len(vals) != 6 {
		t.Errorf("%d keys: %v", len(vals), vals)
	}
}

// FuzzParse: nothing panics; an accepted release has clean fields and renders (Format) to a
// file that parses back to the same release; Values reads back what Quote wrote.
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*"))
	if err != nil {
		f.Fatal(err)
	}
	for _, p := range files {
		if strings.HasSuffix(p, ".md") {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		vals, verr := Values(b)
		r, err := Parse(b)
		if verr != nil {
			if err == nil {
				t.Fatalf("Values refused (%v) what Parse accepted", verr)
			}
			return
		}
		for k, v := range vals {
			if strings.ContainsAny(v, "\n") {
				continue
			}
			back, err := Values([]byte(k + "=" + Quote(v) + "\n"))
			if err != nil || back[k] != v {
				t.Fatalf("%s=%s reads back as %q, %v; want %q", k, Quote(v), back[k], err, v)
			}
		}
		if err != nil {
			return
		}
		for name, v := range map[string]string{"ID": r.ID, "version": r.Version, "board": r.Board} {
			if CheckField(name, v) != nil {
				t.Fatalf("accepted %+v with a bad %s", r, name)
			}
		}
		if strings.ContainsAny(r.BuildID, "\n") {
			return
		}
		again, err := Parse(Format(r, `NAME="x"`))
		if err != nil || again != r {
			t.Fatalf("%+v re-parsed as %+v, %v", r, again, err)
		}
	})
}
