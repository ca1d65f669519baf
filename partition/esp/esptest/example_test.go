package esptest_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/twinslot/twinslot/partition/esp/esptest"
)

func ExampleDescribe() {
	fmt.Println(esptest.Describe(map[string][]byte{"vmlinuz-a": []byte("kernel")}))
	// Output: vmlinuz-a=6923dd1bc0460082c5d55a831908c24a282860b7f1cd6c2b79cf1bc8857c639c
}

func TestContent(t *testing.T) {
	dir := t.TempDir()
	files := map[string][]byte{"vmlinuz-b": []byte("k"), "initrd-b": []byte("i")}
	esptest.Write(t, dir, files)
	if got, want := esptest.Content(t, dir), esptest.Describe(files); got != want {
		t.Fatalf("Content = %q, want %q", got, want)
	}
	os.WriteFile(dir+"/twinslot/initrd-b", []byte("changed"), 0o644)
	if esptest.Content(t, dir) == esptest.Describe(files) {
		t.Fatal("a changed file went unnoticed")
	}
}
