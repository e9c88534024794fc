package dra

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/uuid"
)

// files lists every file and directory below dir, as paths relative to it.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out = append(out, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A claim UID that could not safely name a file is refused by prepare
// and by unprepare, with an error naming the claim and quoting the UID,
// and nothing is written or removed, in the CDI directory or outside it:
// not even the file a traversal from it would reach. A UID as the API
// server makes them is prepared.
func TestClaimUIDRefused(t *testing.T) {
	h, _ := pluggedGPS(t, harnessOpts{removeAfter: time.Hour})
	// SpecFile("/../../victim") would be this file, were it not refused.
	victim := filepath.Join(h.dir, "victim.json")
	if err := os.WriteFile(victim, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("a", 10<<10)
	before := files(t, h.dir)
	for _, uid := range []string{"../../etc/x", "/../../victim", "a/b", "", ".", "..", "a.b", "Upper-Case", "abc\x00def", long} {
		c := allocated(uid, []string{gpsDevice})
		c.Name = "evil"
		quoted := fmt.Sprintf("%q", uid)
		if len(uid) > 80 {
			quoted = fmt.Sprintf("%q...", uid[:64])
		}
		named := func(what string, err error) {
			t.Helper()
			if err == nil || !strings.Contains(err.Error(), "claim default/evil: UID "+quoted) {
				t.Errorf("%s of UID %.80q: %v; want an error naming default/evil and the UID %s", what, uid, err, quoted)
			}
		}
		named("prepare", h.prepare(c).Err)
		named("unprepare", h.unprepare(c))
		if after := files(t, h.dir); !slices.Equal(after, before) {
			t.Fatalf("UID %.80q: files below the test directory went from %v to %v", uid, before, after)
		}
	}
	if _, err := os.Stat(filepath.Join(h.dir, "plugin", checkpointFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("checkpoint: %v; want none written", err)
	}

	fromAPI := allocated(string(uuid.NewUUID()), []string{gpsDevice})
	if r := h.prepare(fromAPI); r.Err != nil {
		t.Fatalf("a UID from the API server (%s): %v", fromAPI.UID, r.Err)
	}
	if _, err := h.spec(fromAPI.UID); err != nil {
		t.Error(err)
	}
}
