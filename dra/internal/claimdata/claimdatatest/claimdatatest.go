// Package claimdatatest holds what tests of the checkpoint share, in
// claimdata and in the driver: checkpoints the driver cannot use, and the
// check that one was moved aside. Only tests import it.
package claimdatatest

import (
	"bytes"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// randomBytes are n bytes of noise, the same at every run.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(b)
	return b
}

// Corruptions are checkpoints this version cannot use, made from a valid
// one (holding the claim "uid-v"). The first three are what a crash, a
// disk and a downgrade leave.
var Corruptions = []struct {
	Name    string
	Corrupt func(valid []byte) []byte
}{
	{"truncated", func(v []byte) []byte { return v[:len(v)/2] }},
	{"random bytes", func([]byte) []byte { return randomBytes(512) }},
	{"future version", func(v []byte) []byte { return bytes.Replace(v, []byte(`"version": 1`), []byte(`"version": 2`), 1) }},
	{"wrong shape", func([]byte) []byte { return []byte(`{"version": 1, "claims": ["uid-v"]}`) }},
	{"no version", func([]byte) []byte { return []byte(`{"claims": {}}`) }},
	{"zeros after a crash", func(v []byte) []byte { return append(v, make([]byte, 64)...) }},
	{"a UID that is a path", func(v []byte) []byte { return bytes.Replace(v, []byte(`"uid-v"`), []byte(`"../../uid-v"`), 1) }},
	{"empty", func([]byte) []byte { return nil }},
}

// MovedAside checks that a corrupt checkpoint file was moved aside in
// its directory, 0600, holding what it held; the checkpoint's own path is
// free. It returns the moved file's path.
func MovedAside(t *testing.T, file string, held []byte) string {
	t.Helper()
	if _, err := os.Stat(file); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s: %v; want it moved aside", file, err)
	}
	moved, _ := filepath.Glob(file + ".corrupt-*")
	if len(moved) != 1 {
		t.Fatalf("moved aside: %v; want one %s.corrupt-<time>", moved, file)
	}
	if got, err := os.ReadFile(moved[0]); err != nil || !bytes.Equal(got, held) {
		t.Errorf("%s holds %q (%v); want the corrupt bytes %q", moved[0], got, err, held)
	}
	if fi, err := os.Stat(moved[0]); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %v (%v); want 0600", moved[0], fi.Mode().Perm(), err)
	}
	return moved[0]
}
