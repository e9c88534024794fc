package claimdata

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"github.com/smarter-project/smarter-device-manager/conf"
	"github.com/smarter-project/smarter-device-manager/dra/internal/claimdata/claimdatatest"
)

// testDriver is a driver name as the tests of the driver use.
const testDriver = "sdm.example.com"

// validCheckpoint is what a store holding one prepared claim, "uid-v",
// writes.
func validCheckpoint(t testing.TB, dir string) []byte {
	t.Helper()
	s := NewStore(filepath.Join(dir, File))
	share := types.UID("share-1")
	err := s.Put("uid-v", Claim{Namespace: "default", Name: "claim-v", Devices: []Device{{
		Requests: []string{"gps"}, Pool: "node-a", Device: "gps-0", CDIDeviceIDs: []string{testDriver + "/claim=uid-v-gps-0"}, ShareID: &share}}})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(s.file)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// A checkpoint this version cannot use is moved aside, with an error
// naming both paths that does not stop the driver, and the store starts
// empty; what it writes next is a checkpoint it reads back.
func TestCorruptCheckpointMovedAside(t *testing.T) {
	for _, c := range claimdatatest.Corruptions {
		t.Run(c.Name, func(t *testing.T) {
			dir := t.TempDir()
			bad := c.Corrupt(validCheckpoint(t, dir))
			s := NewStore(filepath.Join(dir, File))
			// Readable by all (written by hand, say): moved aside, it is root's only.
			if err := errors.Join(os.WriteFile(s.file, bad, 0o644), os.Chmod(s.file, 0o644)); err != nil {
				t.Fatal(err)
			}
			err := s.Load()
			var corrupt *CorruptError
			if !errors.As(err, &corrupt) {
				t.Fatalf("load: %v; want the file moved aside", err)
			}
			moved := claimdatatest.MovedAside(t, s.file, bad)
			if !strings.Contains(err.Error(), s.file) || !strings.Contains(err.Error(), moved) {
				t.Errorf("error %q; want it to name %s and %s", err, s.file, moved)
			}
			if len(s.claims) != 0 {
				t.Errorf("claims %v; want none", s.claims)
			}
			if err := s.Put("uid-n", Claim{Namespace: "default", Name: "n"}); err != nil {
				t.Fatal(err)
			}
			again := NewStore(s.file)
			if err := again.Load(); err != nil {
				t.Fatal(err)
			}
			if _, ok := again.Get("uid-n"); !ok || len(again.claims) != 1 {
				t.Errorf("claims read back %v; want uid-n only", again.claims)
			}
		})
	}
}

// FuzzDeviceConfig: a claim's opaque config, whatever its bytes, either
// fails or gives an owner runc accepts (IDs up to MaxInt32, permission
// bits only), from bytes that are JSON; that owner, written back as a
// config, decodes to itself.
func FuzzDeviceConfig(f *testing.F) {
	for _, seed := range []string{
		`{"owner": {"uid": 1000, "gid": 1000, "mode": "0660"}}`,
		`{"apiVersion": "sdm.example.com/v1", "kind": "DeviceConfig", "owner": {"mode": "0666"}}`,
		`{"owner": {"uid": 0}}`,
		`{"owner": {"gid": 2147483647, "mode": "600"}}`,
		`{"owner": {"uid": -1}}`,
		`{"owner": {"uid": 2147483648}}`,
		`{"owner": {"mode": "777x"}}`,
		`{"owner": {"mode": "1777"}}`,
		`{"ownr": {"uid": 1}}`,
		`{"owner": {"gid": 5}} {"owner": {"gid": 6}}`,
		`{"kind": "Pod"}`,
		`{}`,
		`null`,
		``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var o conf.Owner
		if err := ApplyConfig(testDriver, raw, &o); err != nil {
			return
		}
		if !json.Valid(raw) {
			t.Fatalf("%q is not JSON, yet accepted", raw)
		}
		if o.UID > math.MaxInt32 || o.GID > math.MaxInt32 || o.Mode&^0o777 != 0 ||
			(!o.HasUID && o.UID != 0) || (!o.HasGID && o.GID != 0) || (!o.HasMode && o.Mode != 0) {
			t.Fatalf("%q gave owner %+v", raw, o)
		}
		back := map[string]any{}
		if o.HasUID {
			back["uid"] = o.UID
		}
		if o.HasGID {
			back["gid"] = o.GID
		}
		if o.HasMode {
			back["mode"] = fmt.Sprintf("%04o", uint32(o.Mode))
		}
		cfg, _ := json.Marshal(map[string]any{"owner": back})
		var again conf.Owner
		if err := ApplyConfig(testDriver, cfg, &again); err != nil || again != o {
			t.Fatalf("%q gave %+v; written back as %s: %+v, %v", raw, o, cfg, again, err)
		}
	})
}

// FuzzCheckpoint: the prepared claims' checkpoint, whatever its bytes,
// either loads as a store whose every claim UID could name a file, and
// which reads back as itself once written, or is moved aside, intact,
// with the store empty; load never fails otherwise and never panics.
func FuzzCheckpoint(f *testing.F) {
	valid := validCheckpoint(f, f.TempDir())
	for _, c := range claimdatatest.Corruptions {
		f.Add(c.Corrupt(valid))
	}
	for _, seed := range []string{
		string(valid),
		`{"version": 1, "claims": {}}`,
		`{"version": 1}`,
		`{"version": 1, "claims": {"0b7a3f5e-4c1d-4a8e-9f2b-6d3c1e0a9b87": {"namespace": "default", "name": "c", "devices": [{"requests": ["gps"], "pool": "node-a", "device": "gps-0", "cdiDeviceIDs": ["x/claim=y"], "admin": true}]}}}`,
		`{"version": 1, "claims": {"a\u0000b": {}}}`,
		`{"version": 1, "claims": {"": {}}}`,
		`null`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s := NewStore(filepath.Join(t.TempDir(), File))
		if err := os.WriteFile(s.file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		var corrupt *CorruptError
		switch err := s.Load(); {
		case errors.As(err, &corrupt):
			moved, rerr := os.ReadFile(corrupt.Moved)
			if _, serr := os.Stat(s.file); serr == nil || rerr != nil || !bytes.Equal(moved, data) || len(s.claims) != 0 {
				t.Fatalf("moved aside: file still there (%v), %s holds %q (%v), claims %v", serr, corrupt.Moved, moved, rerr, s.claims)
			}
		case err != nil:
			t.Fatalf("load: %v; want a store or the file moved aside", err)
		default:
			for uid, c := range s.claims {
				if err := CheckUID(c.Namespace, c.Name, uid); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.write(s.claims); err != nil {
				t.Fatal(err)
			}
			again := NewStore(s.file)
			if err := again.Load(); err != nil || !reflect.DeepEqual(again.claims, s.claims) {
				t.Fatalf("written and read back: %v, %v; want %v", again.claims, err, s.claims)
			}
		}
	})
}

// A claim's config at the edges (found by make mutate on this package):
// the driver's own apiVersion and kind are taken, as is their absence;
// another's are refused; IDs 0 and MaxInt32 are taken, -1 and MaxInt32+1
// refused.
func TestApplyConfigEdges(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		ok   bool
		want conf.Owner
	}{
		{`{"apiVersion":"sdm.example.com/v1","kind":"DeviceConfig","owner":{"uid":0}}`, true, conf.Owner{UID: 0, HasUID: true}},
		{`{"owner":{"gid":2147483647}}`, true, conf.Owner{GID: math.MaxInt32, HasGID: true}},
		{`{"apiVersion":"other.example.com/v1"}`, false, conf.Owner{}},
		{`{"kind":"Other"}`, false, conf.Owner{}},
		{`{"owner":{"uid":-1}}`, false, conf.Owner{}},
		{`{"owner":{"gid":2147483648}}`, false, conf.Owner{}},
	} {
		var o conf.Owner
		err := ApplyConfig(testDriver, []byte(tc.raw), &o)
		if (err == nil) != tc.ok {
			t.Errorf("ApplyConfig(%s): %v; want ok %v", tc.raw, err, tc.ok)
		}
		if tc.ok && o != tc.want {
			t.Errorf("ApplyConfig(%s) set %+v, want %+v", tc.raw, o, tc.want)
		}
	}
}

// What Put records, the same store then has (not only the file).
func TestPutThenGet(t *testing.T) {
	s := NewStore(filepath.Join(t.TempDir(), File))
	if err := s.Put("uid-a", Claim{Namespace: "default", Name: "a"}); err != nil {
		t.Fatal(err)
	}
	if c, ok := s.Get("uid-a"); !ok || c.Name != "a" {
		t.Errorf("Get after Put: %+v, %v", c, ok)
	}
}
