package claimdata

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
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/smarter-project/smarter-device-manager/internal/atomicfile"
)

// File is the checkpoint's name, in the driver's plugin directory.
const File = "prepared-claims.json"

// Version is the checkpoint's format; another is moved aside.
const Version = 1

// checkpoint is what survives a restart: each prepared claim and what
// its preparation answered, so that unprepare (the kubelet gives only
// the claim's UID, namespace and name) and a repeated prepare work after
// one.
type checkpoint struct {
	Version int                 `json:"version"`
	Claims  map[types.UID]Claim `json:"claims"`
}

// Claim is one prepared claim.
type Claim struct {
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	Devices   []Device `json:"devices"`
}

// Device is one allocated device of a prepared claim, as the
// kubelet was told.
type Device struct {
	Requests     []string   `json:"requests"`
	Pool         string     `json:"pool"`
	Device       string     `json:"device"`
	CDIDeviceIDs []string   `json:"cdiDeviceIDs"`
	ShareID      *types.UID `json:"shareID,omitempty"`
	Admin        bool       `json:"admin,omitempty"` // admin access: does not count as a holder
}

// Store is the set of prepared claims, written through to its file
// at every change. The kubelet plugin helper serialises prepare and
// unprepare; the lock is for health and tests.
type Store struct {
	file   string
	mu     sync.Mutex
	claims map[types.UID]Claim
}

// NewStore is an empty set of prepared claims kept in file; Load reads
// what the file holds.
func NewStore(file string) *Store {
	return &Store{file: file, claims: map[types.UID]Claim{}}
}

// Load reads the checkpoint; a missing one is an empty set. One this
// version cannot use (cut short, garbage, another shape, another
// version, a claim UID that could not name a file) is moved aside to
// <file>.corrupt-<unix seconds>, kept for a person to read (a newer
// version's file, after a downgrade, too: it is unreadable here, and
// the first write would replace it anyway), and the set starts empty:
// the error is then a *CorruptError, and the driver goes on.
// That costs little: the kubelet prepares its claims again, which
// rebuilds them, and unprepare removes a claim's spec by its UID alone.
// Until then a device held by a forgotten claim counts one holder less.
func (s *Store) Load() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, err := os.ReadFile(s.file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("prepared claims: %w", err)
	}
	claims, err := Parse(data)
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
	s.claims = map[types.UID]Claim{}
	return &CorruptError{File: s.file, Moved: moved, Err: err}
}

// Parse decodes a checkpoint of this version, refusing a claim
// UID that could not name a file.
func Parse(data []byte) (map[types.UID]Claim, error) {
	var cp checkpoint
	if err := json.Unmarshal(data, &cp); err != nil {
		return nil, err
	}
	if cp.Version != Version {
		return nil, fmt.Errorf("version %d, this driver reads %d", cp.Version, Version)
	}
	for uid, c := range cp.Claims {
		if err := CheckUID(c.Namespace, c.Name, uid); err != nil {
			return nil, err
		}
	}
	if cp.Claims == nil {
		cp.Claims = map[types.UID]Claim{}
	}
	return cp.Claims, nil
}

// CorruptError is a checkpoint load moved aside.
type CorruptError struct {
	File, Moved string
	Err         error // why it is unusable
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("prepared claims %s: %v; moved aside to %s, starting with none (the kubelet prepares its claims again)", e.File, e.Err, e.Moved)
}

func (e *CorruptError) Unwrap() error { return e.Err }

// Get returns a prepared claim.
func (s *Store) Get(uid types.UID) (Claim, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.claims[uid]
	return c, ok
}

// Holders are the prepared claims other than except that hold a device,
// admin access aside.
func (s *Store) Holders(device string, except types.UID) []types.UID {
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

// Put records a prepared claim and writes the checkpoint; on an error
// nothing is recorded.
func (s *Store) Put(uid types.UID, c Claim) error {
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

// Remove forgets a claim and writes the checkpoint.
func (s *Store) Remove(uid types.UID) error {
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

func (s *Store) write(claims map[types.UID]Claim) error {
	data, err := json.MarshalIndent(checkpoint{Version: Version, Claims: claims}, "", "  ")
	if err != nil {
		return fmt.Errorf("prepared claims: %w", err)
	}
	if err := atomicfile.Write(s.file, data, 0o600); err != nil {
		return fmt.Errorf("prepared claims: %w", err)
	}
	return nil
}

// CheckUID refuses a claim UID that could not safely name a file:
// it becomes part of the CDI spec's file name and of the CDI device
// names. The API server gives every object an RFC 4122 UUID in
// lower-case canonical form (hex digits and '-', 36 characters), which
// is a DNS-1123 label; any such label is accepted (1 to 63 of a-z, 0-9
// and '-', alphanumeric at both ends), so it has no '/', '.', NUL or
// upper case and cannot leave the CDI directory, while the hand-made
// UIDs of tests still work. The check is on every path a UID comes in
// by: prepare, unprepare (the kubelet's word only) and the checkpoint.
func CheckUID(namespace, name string, uid types.UID) error {
	if len(validation.IsDNS1123Label(string(uid))) == 0 {
		return nil
	}
	shown := fmt.Sprintf("%q", uid)
	if len(uid) > 80 { // a log line, not a dump
		shown = fmt.Sprintf("%q... (%d bytes)", uid[:64], len(uid))
	}
	return fmt.Errorf("claim %s/%s: UID %s is not a Kubernetes UID (a DNS label: 1-63 of a-z, 0-9 and '-'); nothing written", namespace, name, shown)
}
