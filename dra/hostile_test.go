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

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/util/uuid"

	"github.com/smarter-project/smarter-device-manager/dra/internal/claimdata"
	"github.com/smarter-project/smarter-device-manager/dra/internal/claimdata/claimdatatest"
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
	if _, err := os.Stat(filepath.Join(h.dir, "plugin", claimdata.File)); !errors.Is(err, fs.ErrNotExist) {
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

// A daemon restarted over a corrupt checkpoint starts (Run returns nil
// at the end, and it publishes), counts one error, and keeps the bad
// file aside; the kubelet's calls then rebuild what it held: a prepare
// of a claim prepared before writes its spec and a valid checkpoint
// again, and an unprepare of another, which the store no longer knows,
// removes its leftover spec.
func TestCorruptCheckpointRestart(t *testing.T) {
	for _, c := range claimdatatest.Corruptions[:3] { // truncated, random bytes, future version
		t.Run(c.Name, func(t *testing.T) {
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

			file := filepath.Join(h.dir, "plugin", claimdata.File)
			valid, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			bad := c.Corrupt(valid)
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
			claimdatatest.MovedAside(t, file, bad)

			if r := h2.prepare(a); r.Err != nil || len(r.Devices) != 1 {
				t.Fatalf("prepare of a claim prepared before: %+v", r)
			}
			if spec, err := h2.spec(a.UID); err != nil || len(spec.Devices) != 1 {
				t.Errorf("spec of the claim prepared again: %+v, %v", spec, err)
			}
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			held, err := claimdata.Parse(data)
			if _, ok := held[a.UID]; err != nil || !ok || len(held) != 1 {
				t.Errorf("checkpoint holds %v (%v); want %s only", held, err, a.UID)
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
