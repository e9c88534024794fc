package daemon

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/fsnotify/fsnotify"
)

// maxLinkHops bounds the symlink chain followed from the rule file, as the
// kernel's own limit (40) does for a path lookup.
const maxLinkHops = 40

// ruleFilePaths are the paths whose change can change what reading file
// yields: file itself, every symlink met resolving it, and the file at the
// end of the chain. A symlink is met either as a name in the chain or as
// its parent directory: a ConfigMap mount is rules.yaml → ..data/rules.yaml
// with ..data → ..<timestamp>, and the kubelet updates it by renaming a new
// ..data over the old one, so ..data is what changes. Each path is given
// with its parent resolved, so the watch of its directory sees it.
func ruleFilePaths(file string) []string {
	var paths []string
	add := func(p string) {
		for _, q := range paths {
			if q == p {
				return
			}
		}
		paths = append(paths, p)
	}
	target := func(link string) (string, bool) {
		t, err := os.Readlink(link)
		if err != nil {
			return "", false
		}
		if !filepath.IsAbs(t) {
			t = filepath.Join(filepath.Dir(link), t)
		}
		return filepath.Clean(t), true
	}
	p := filepath.Clean(file)
	for range maxLinkHops {
		dir, base := filepath.Dir(p), filepath.Base(p)
		if fi, err := os.Lstat(dir); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
			// The parent is a link (..data): it is the name that changes;
			// the file is then looked up where it points.
			add(dir)
			t, ok := target(dir)
			if !ok {
				break
			}
			p = filepath.Join(t, base)
			continue
		}
		add(p)
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			break // the file itself, or nothing there yet
		}
		t, ok := target(p)
		if !ok {
			break
		}
		p = t
	}
	return paths
}

// startConfigWatch watches the directories that hold the rule file's
// paths (ruleFilePaths) and returns the watch with the paths to react to.
// It runs before the first read of the devices, so an edit made once the
// daemon serves is never missed. A nil watch: none (the warning says why);
// SIGHUP still reloads.
func (d *daemon) startConfigWatch() (*fsnotify.Watcher, map[string]bool) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		d.log.Warn().Err(err).Msg("cannot watch the rule file; reload with SIGHUP")
		return nil, nil
	}
	relevant := d.syncConfigWatch(w)
	if len(w.WatchList()) == 0 {
		w.Close()
		d.log.Warn().Str("dir", filepath.Dir(d.opts.ConfigPath)).Msg("cannot watch the rule file's directory; reload with SIGHUP")
		return nil, nil
	}
	return w, relevant
}

// syncConfigWatch points the watch at the directories of the rule file's
// paths as they are now (a ConfigMap update moves the file to a new
// directory) and returns the paths to react to. A directory that cannot
// be watched (it vanished in the middle of a swap) is skipped: the next
// change of a name that leads to it syncs again.
func (d *daemon) syncConfigWatch(w *fsnotify.Watcher) map[string]bool {
	paths := ruleFilePaths(d.opts.ConfigPath)
	relevant := make(map[string]bool, len(paths))
	dirs := map[string]bool{}
	for _, p := range paths {
		relevant[p] = true
		dirs[filepath.Dir(p)] = true
	}
	have := map[string]bool{}
	for _, dir := range w.WatchList() {
		if dirs[dir] {
			have[dir] = true
		} else {
			_ = w.Remove(dir) // an error: the kernel dropped it already
		}
	}
	for dir := range dirs {
		if have[dir] {
			continue
		}
		if err := w.Add(dir); err != nil {
			d.log.Debug().Err(err).Str("dir", dir).Msg("cannot watch a directory of the rule file (yet)")
		}
	}
	return relevant
}

// watchConfig signals a reload when one of the rule file's paths changes,
// and only then: anything else in those directories (the daemon's own log
// file, an editor's swap file, the plugin sockets) is no reason to read
// the rules, and reacting to it would let a logged reload failure trigger
// the next reload. The event is a hint; the reload reads the file and
// skips content it has already read.
func (d *daemon) watchConfig(ctx context.Context, w *fsnotify.Watcher, relevant map[string]bool) {
	defer w.Close()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if ev.Op&(fsnotify.Create|fsnotify.Write|fsnotify.Rename|fsnotify.Remove) == 0 || !relevant[filepath.Clean(ev.Name)] {
				continue
			}
			relevant = d.syncConfigWatch(w)
			signal(d.configChanged)
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			d.log.Warn().Err(err).Msg("rule file watch")
		}
	}
}
