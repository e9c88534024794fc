package dra

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"sync"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"

	"github.com/smarter-project/smarter-device-manager/internal/atomicfile"
)

// checkpointFile holds the prepared claims, in Options.PluginDir.
const checkpointFile = "prepared-claims.json"

// checkpointVersion is the checkpoint's format; another is refused.
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

// load reads the checkpoint; a missing one is an empty set.
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
	var cp checkpoint
	if err := json.Unmarshal(data, &cp); err != nil {
		return fmt.Errorf("prepared claims %s: %w", s.file, err)
	}
	if cp.Version != checkpointVersion {
		return fmt.Errorf("prepared claims %s: version %d, want %d", s.file, cp.Version, checkpointVersion)
	}
	s.claims = cp.Claims
	if s.claims == nil {
		s.claims = map[types.UID]preparedClaim{}
	}
	return nil
}

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
