package hwfixture

import (
	"io/fs"
	"strings"
	"sync"
	"testing/fstest"
)

// FS is an fstest.MapFS that a test may change while the daemon reads it:
// every method takes a lock. It implements fs.ReadDirFS, fs.StatFS and
// fs.ReadLinkFS (symlinks as the kernel and udev make them).
type FS struct {
	mu sync.Mutex
	m  fstest.MapFS
}

// NewFS returns an empty FS.
func NewFS() *FS { return &FS{m: fstest.MapFS{}} }

// locked runs read under the lock.
func locked[T any](f *FS, read func(fstest.MapFS) (T, error)) (T, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return read(f.m)
}

// Open opens name.
func (f *FS) Open(name string) (fs.File, error) {
	return locked(f, func(m fstest.MapFS) (fs.File, error) { return m.Open(name) })
}

// ReadDir reads the directory name.
func (f *FS) ReadDir(name string) ([]fs.DirEntry, error) {
	return locked(f, func(m fstest.MapFS) ([]fs.DirEntry, error) { return m.ReadDir(name) })
}

// ReadFile reads the file name.
func (f *FS) ReadFile(name string) ([]byte, error) {
	return locked(f, func(m fstest.MapFS) ([]byte, error) { return m.ReadFile(name) })
}

// Stat follows symlinks.
func (f *FS) Stat(name string) (fs.FileInfo, error) {
	return locked(f, func(m fstest.MapFS) (fs.FileInfo, error) { return m.Stat(name) })
}

// ReadLink returns a symlink's target.
func (f *FS) ReadLink(name string) (string, error) {
	return locked(f, func(m fstest.MapFS) (string, error) { return m.ReadLink(name) })
}

// Lstat does not follow a final symlink.
func (f *FS) Lstat(name string) (fs.FileInfo, error) {
	return locked(f, func(m fstest.MapFS) (fs.FileInfo, error) { return m.Lstat(name) })
}

// Put adds or replaces a file.
func (f *FS) Put(name string, file *fstest.MapFile) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.m[name] = file
}

// Set adds an empty file of the given mode: a device node, a directory.
func (f *FS) Set(name string, mode fs.FileMode) { f.Put(name, &fstest.MapFile{Mode: mode}) }

// Remove removes name and everything below it.
func (f *FS) Remove(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.m, name)
	for k := range f.m {
		if strings.HasPrefix(k, name+"/") {
			delete(f.m, k)
		}
	}
}

// Has reports whether name exists (as a file, link or implied directory).
func (f *FS) Has(name string) bool {
	_, err := f.Lstat(name)
	return err == nil
}

// Snapshot returns a copy of the tree, e.g. to write it to disk.
func (f *FS) Snapshot() fstest.MapFS {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := make(fstest.MapFS, len(f.m))
	for k, v := range f.m {
		cp := *v
		c[k] = &cp
	}
	return c
}
