package dra

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"

	"github.com/smarter-project/smarter-device-manager/internal/atomicfile"
)

// checkpointFile holds the prepared claims, in Options.PluginDir.
const checkpointFile = "prepared-claims.json"

// checkpointVersion is the checkpoint's format; another is moved aside.
const checkpointVersion = 1

// checkpoint is what survives a restart: each prepared claim and what
// its preparation answered, so that unprepare (the kubelet gives only
// the claim's UID, namespace and name) and a repeated prepare work after
// one.
type checkpoint struct {
	Version int                         `json:"version"`
	Claims  map[types.UID]preparedClaim `json:"claims"`
}

// preparedClaim is one prepared claim.
type preparedClaim struct {
	Namespace string           `json:"namespace"`
	Name      string           `json:"name"`
	Devices   []preparedDevice `json:"devices"`
}

// preparedDevice is one allocated device of a prepared claim, as the
// kubelet was told.
type preparedDevice struct {
	Requests     []string   `json:"requests"`
	Pool         string     `json:"pool"`
	Device       string     `json:"device"`
	CDIDeviceIDs []string   `json:"cdiDeviceIDs"`
	ShareID      *types.UID `json:"shareID,omitempty"`
	Admin        bool       `json:"admin,omitempty"` // admin access: does not count as a holder
}

// result is the claim's preparation as the kubelet is answered.
func (c preparedClaim) result() kubeletplugin.PrepareResult {
	var r kubeletplugin.PrepareResult
	for _, d := range c.Devices {
		r.Devices = append(r.Devices, kubeletplugin.Device{Requests: d.Requests, PoolName: d.Pool, DeviceName: d.Device,
			CDIDeviceIDs: d.CDIDeviceIDs, ShareID: d.ShareID})
	}
	return r
}

// claimStore is the set of prepared claims, written through to its file
// at every change. The kubelet plugin helper serialises prepare and
// unprepare; the lock is for health and tests.
type claimStore struct {
	file   string
	mu     sync.Mutex
	claims map[types.UID]preparedClaim
}

func newClaimStore(file string) *claimStore {
	return &claimStore{file: file, claims: map[types.UID]preparedClaim{}}
}

// load reads the checkpoint; a missing one is an empty set. One this
// version cannot use (cut short, garbage, another shape, another
// version, a claim UID that could not name a file) is moved aside to
// <file>.corrupt-<unix seconds>, kept for a person to read (a newer
// version's file, after a downgrade, too: it is unreadable here, and
// the first write would replace it anyway), and the set starts empty:
// the error is then a *corruptCheckpointError, and the driver goes on.
// That costs little: the kubelet prepares its claims again, which
// rebuilds them, and unprepare removes a claim's spec by its UID alone.
// Until then a device held by a forgotten claim counts one holder less.
func (s *claimStore) load() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, err := os.ReadFile(s.file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("prepared claims: %w", err)
	}
	claims, err := parseCheckpoint(data)
	if err == nil {
		s.claims = claims
		return nil
	}
	moved := fmt.Sprintf("%s.corrupt-%d", s.file, time.Now().Unix())
	if rerr := os.Rename(s.file, moved); rerr != nil {
		return fmt.Errorf("prepared claims %s: %w; cannot move it aside: %w", s.file, err, rerr)
	}
	// It names others' claims: only root reads it, as the original.
	// Should this fail, the rename did not, and the file is set aside.
	_ = os.Chmod(moved, 0o600)
	s.claims = map[types.UID]preparedClaim{}
	return &corruptCheckpointError{file: s.file, moved: moved, err: err}
}

// parseCheckpoint decodes a checkpoint of this version, refusing a claim
// UID that could not name a file.
func parseCheckpoint(data []byte) (map[types.UID]preparedClaim, error) {
	var cp checkpoint
	if err := json.Unmarshal(data, &cp); err != nil {
		return nil, err
	}
	if cp.Version != checkpointVersion {
		return nil, fmt.Errorf("version %d, this driver reads %d", cp.Version, checkpointVersion)
	}
	for uid, c := range cp.Claims {
		if err := checkClaimUID(c.Namespace, c.Name, uid); err != nil {
			return nil, err
		}
	}
	if cp.Claims == nil {
		cp.Claims = map[types.UID]preparedClaim{}
	}
	return cp.Claims, nil
}

// corruptCheckpointError is a checkpoint load moved aside.
type corruptCheckpointError struct {
	file, moved string
	err         error // why it is unusable
}

func (e *corruptCheckpointError) Error() string {
	return fmt.Sprintf("prepared claims %s: %v; moved aside to %s, starting with none (the kubelet prepares its claims again)", e.file, e.err, e.moved)
}

func (e *corruptCheckpointError) Unwrap() error { return e.err }

// get returns a prepared claim.
func (s *claimStore) get(uid types.UID) (preparedClaim, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.claims[uid]
	return c, ok
}

// holders are the prepared claims other than except that hold a device,
// admin access aside.
func (s *claimStore) holders(device string, except types.UID) []types.UID {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []types.UID
	for uid, c := range s.claims {
		for _, d := range c.Devices {
			if uid != except && d.Device == device && !d.Admin {
				out = append(out, uid)
				break
			}
		}
	}
	return out
}

// put records a prepared claim and writes the checkpoint; on an error
// nothing is recorded.
func (s *claimStore) put(uid types.UID, c preparedClaim) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := maps.Clone(s.claims)
	next[uid] = c
	if err := s.write(next); err != nil {
		return err
	}
	s.claims = next
	return nil
}

// remove forgets a claim and writes the checkpoint.
func (s *claimStore) remove(uid types.UID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.claims[uid]; !ok {
		return nil
	}
	next := maps.Clone(s.claims)
	delete(next, uid)
	if err := s.write(next); err != nil {
		return err
	}
	s.claims = next
	return nil
}

func (s *claimStore) write(claims map[types.UID]preparedClaim) error {
	data, err := json.MarshalIndent(checkpoint{Version: checkpointVersion, Claims: claims}, "", "  ")
	if err != nil {
		return fmt.Errorf("prepared claims: %w", err)
	}
	if err := atomicfile.Write(s.file, data, 0o600); err != nil {
		return fmt.Errorf("prepared claims: %w", err)
	}
	return nil
}
