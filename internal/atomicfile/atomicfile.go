// Package atomicfile writes a file so that a reader sees the old content
// or the new, never a part: a CDI spec a runtime reads while it changes,
// a checkpoint a crash interrupts.
package atomicfile

import (
	"io/fs"
	"os"
	"path/filepath"
)

// Write writes data to name with mode perm: to a temporary file in the
// same directory (created if missing, 0755), synced, then renamed over
// name.
func Write(name string, data []byte, perm fs.FileMode) error {
	dir := filepath.Dir(name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".smarter-*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename, a no-op
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), name)
}
