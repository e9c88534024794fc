package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

// The file holds the new content with the mode asked, replaces the old
// one, and no temporary file is left beside it.
func TestWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sub")
	name := filepath.Join(dir, "spec.json")
	for _, content := range []string{"old", "new"} {
		if err := Write(name, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(name)
	if err != nil || string(got) != "new" {
		t.Fatalf("content %q, %v; want new", got, err)
	}
	if fi, _ := os.Stat(name); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the file", len(entries))
	}
}
