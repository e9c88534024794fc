package daemon

import (
	"context"
	"path/filepath"

	"github.com/fsnotify/fsnotify"
)

// watchConfig signals a reload whenever the rule file's directory changes.
// A ConfigMap mount swaps a ..data symlink in that directory, so the file's
// own name may never see an event; any change there is a hint, and the
// reload reads the file (a reload that finds the same rules changes
// nothing, one that finds a broken file keeps the rules in force).
func (d *daemon) watchConfig(ctx context.Context) {
	dir := filepath.Dir(d.opts.ConfigPath)
	w, err := fsnotify.NewWatcher()
	if err != nil {
		d.log.Warn().Err(err).Msg("cannot watch the rule file; reload with SIGHUP")
		return
	}
	defer w.Close()
	if err := w.Add(dir); err != nil {
		d.log.Warn().Err(err).Str("dir", dir).Msg("cannot watch the rule file's directory; reload with SIGHUP")
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if ev.Op&(fsnotify.Create|fsnotify.Write|fsnotify.Rename|fsnotify.Remove) != 0 {
				signal(d.configChanged)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			d.log.Warn().Err(err).Msg("rule file watch")
		}
	}
}
