package dra

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"

	"github.com/smarter-project/smarter-device-manager/internal/hwfixture"
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

// validCheckpoint is what a store holding one prepared claim writes.
func validCheckpoint(t testing.TB, dir string) []byte {
	t.Helper()
	s := newClaimStore(filepath.Join(dir, checkpointFile))
	share := types.UID("share-1")
	err := s.put("uid-v", preparedClaim{Namespace: "default", Name: "claim-v", Devices: []preparedDevice{{
		Requests: []string{"gps"}, Pool: testNode, Device: gpsDevice, CDIDeviceIDs: []string{testDriver + "/claim=uid-v-" + gpsDevice}, ShareID: &share}}})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(s.file)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// randomBytes are n bytes of noise, the same at every run.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(b)
	return b
}

// corruptions are checkpoints this version cannot use, made from a valid one.
var corruptions = []struct {
	name    string
	corrupt func(valid []byte) []byte
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

// movedAside checks that a corrupt checkpoint file was moved aside in
// its directory, 0600, holding what it held; the checkpoint's own path is
// free. It returns the moved file's path.
func movedAside(t *testing.T, file string, held []byte) string {
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

// A checkpoint this version cannot use is moved aside, with an error
// naming both paths that does not stop the driver, and the store starts
// empty; what it writes next is a checkpoint it reads back.
func TestCorruptCheckpointMovedAside(t *testing.T) {
	for _, c := range corruptions {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			bad := c.corrupt(validCheckpoint(t, dir))
			s := newClaimStore(filepath.Join(dir, checkpointFile))
			// Readable by all (written by hand, say): moved aside, it is root's only.
			if err := errors.Join(os.WriteFile(s.file, bad, 0o644), os.Chmod(s.file, 0o644)); err != nil {
				t.Fatal(err)
			}
			err := s.load()
			var corrupt *corruptCheckpointError
			if !errors.As(err, &corrupt) {
				t.Fatalf("load: %v; want the file moved aside", err)
			}
			moved := movedAside(t, s.file, bad)
			if !strings.Contains(err.Error(), s.file) || !strings.Contains(err.Error(), moved) {
				t.Errorf("error %q; want it to name %s and %s", err, s.file, moved)
			}
			if len(s.claims) != 0 {
				t.Errorf("claims %v; want none", s.claims)
			}
			if err := s.put("uid-n", preparedClaim{Namespace: "default", Name: "n"}); err != nil {
				t.Fatal(err)
			}
			again := newClaimStore(s.file)
			if err := again.load(); err != nil {
				t.Fatal(err)
			}
			if _, ok := again.get("uid-n"); !ok || len(again.claims) != 1 {
				t.Errorf("claims read back %v; want uid-n only", again.claims)
			}
		})
	}
}

// A daemon restarted over a corrupt checkpoint starts (Run returns nil
// at the end, and it publishes), counts one error, and keeps the bad
// file aside; the kubelet's calls then rebuild what it held: a prepare
// of a claim prepared before writes its spec and a valid checkpoint
// again, and an unprepare of another, which the store no longer knows,
// removes its leftover spec.
func TestCorruptCheckpointRestart(t *testing.T) {
	for _, c := range corruptions[:3] { // truncated, random bytes, future version
		t.Run(c.name, func(t *testing.T) {
			m := hwfixture.New(true)
			m.Plug(hwfixture.FT232R(hwfixture.IntelXHCI, "1", "A1B2C3"))
			second := m.Plug(hwfixture.FT232R(hwfixture.IntelXHCI, "2", "D4E5F6"))
			const secondDevice = "gps-0403-6001-d4e5f6"
			h := newHarness(t, m, gpsRule, harnessOpts{removeAfter: time.Hour})
			h.waitDevices("both adapters", func(d map[string]resourceapi.Device) bool { return len(d) == 2 })
			a, b := allocated("uid-a", []string{gpsDevice}), allocated("uid-b", []string{secondDevice})
			for _, claim := range []*resourceapi.ResourceClaim{a, b} {
				if r := h.prepare(claim); r.Err != nil {
					t.Fatal(r.Err)
				}
			}
			h.stop()

			file := filepath.Join(h.dir, "plugin", checkpointFile)
			valid, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			bad := c.corrupt(valid)
			if err := os.WriteFile(file, bad, 0o600); err != nil {
				t.Fatal(err)
			}
			m.Unplug(second) // the new pool differs: its publication shows Run got past the checkpoint
			h2 := newHarness(t, m, gpsRule, harnessOpts{removeAfter: time.Hour, client: h.client, dir: h.dir})
			h2.waitDevices("the first adapter only", func(d map[string]resourceapi.Device) bool {
				_, ok := d[gpsDevice]
				return ok && len(d) == 1
			})
			if n := h2.stats.Errors.Load(); n != 1 {
				t.Errorf("driver errors counted: %d; want 1, the checkpoint", n)
			}
			movedAside(t, file, bad)

			if r := h2.prepare(a); r.Err != nil || len(r.Devices) != 1 {
				t.Fatalf("prepare of a claim prepared before: %+v", r)
			}
			if spec, err := h2.spec(a.UID); err != nil || len(spec.Devices) != 1 {
				t.Errorf("spec of the claim prepared again: %+v, %v", spec, err)
			}
			s := newClaimStore(file)
			if err := s.load(); err != nil {
				t.Fatalf("checkpoint after a prepare: %v", err)
			}
			if _, ok := s.get(a.UID); !ok || len(s.claims) != 1 {
				t.Errorf("checkpoint holds %v; want %s only", s.claims, a.UID)
			}

			if _, err := h2.spec(b.UID); err != nil {
				t.Fatalf("the spec the first daemon wrote for %s: %v", b.UID, err)
			}
			if err := h2.unprepare(b); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(h2.drv.SpecFile(b.UID)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("spec of a claim the store forgot, after unprepare: %v; want it gone", err)
			}
		})
	}
}
