package dra

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/smarter-project/smarter-device-manager/conf"
)

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
		if err := applyConfig(testDriver, raw, &o); err != nil {
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
		if err := applyConfig(testDriver, cfg, &again); err != nil || again != o {
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
	for _, c := range corruptions {
		f.Add(c.corrupt(valid))
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
		s := newClaimStore(filepath.Join(t.TempDir(), checkpointFile))
		if err := os.WriteFile(s.file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		var corrupt *corruptCheckpointError
		switch err := s.load(); {
		case errors.As(err, &corrupt):
			moved, rerr := os.ReadFile(corrupt.moved)
			if _, serr := os.Stat(s.file); serr == nil || rerr != nil || !bytes.Equal(moved, data) || len(s.claims) != 0 {
				t.Fatalf("moved aside: file still there (%v), %s holds %q (%v), claims %v", serr, corrupt.moved, moved, rerr, s.claims)
			}
		case err != nil:
			t.Fatalf("load: %v; want a store or the file moved aside", err)
		default:
			for uid, c := range s.claims {
				if err := checkClaimUID(c.Namespace, c.Name, uid); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.write(s.claims); err != nil {
				t.Fatal(err)
			}
			again := newClaimStore(s.file)
			if err := again.load(); err != nil || !reflect.DeepEqual(again.claims, s.claims) {
				t.Fatalf("written and read back: %v, %v; want %v", again.claims, err, s.claims)
			}
		}
	})
}
