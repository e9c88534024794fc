package plugin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/rs/zerolog"
)

// rewatchInterval is how often WatchDir retries watching a removed plugin
// directory, for when the parent's create event does not come.
const rewatchInterval = time.Second

// WatchDir watches the kubelet's plugin directory and calls onChange with
// the base name of every entry created, removed or renamed there (the
// kubelet removes plugin sockets when it starts, then creates
// kubelet.sock). onChange is called from WatchDir's goroutine and must not
// block; [Registrar.WatchDir] kicks its servers from it. An empty name
// means "anything may have changed": the watch was just put in place (the
// first call, always), the directory was removed or re-created, or events
// were lost.
//
// WatchDir creates dir if it is missing. It survives dir being removed and
// re-created (it watches the parent for that, and retries), and returns nil
// when ctx ends. Events are hints; whoever receives them re-reads the
// directory.
func WatchDir(ctx context.Context, dir string, log zerolog.Logger, onChange func(name string)) error {
	dir = filepath.Clean(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("plugin directory: %w", err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", dir, err)
	}
	defer w.Close()
	log = log.With().Str("dir", dir).Logger()

	if parent := filepath.Dir(dir); parent != dir {
		if err := w.Add(parent); err != nil {
			log.Warn().Err(err).Msg("cannot watch the parent directory; a re-created plugin directory is noticed by polling")
		}
	}
	if err := w.Add(dir); err != nil {
		return fmt.Errorf("watch %s: %w", dir, err)
	}
	log.Info().Msg("watching plugin directory")
	// Whatever changed before the watch was in place is only seen by a
	// re-check; this call also tells the caller the watch is in place.
	onChange("")

	watching := true
	retry := time.NewTimer(rewatchInterval)
	retry.Stop()
	defer retry.Stop()
	rewatch := func() {
		if err := w.Add(dir); err != nil {
			retry.Reset(rewatchInterval)
			return
		}
		watching = true
		retry.Stop()
		log.Info().Msg("plugin directory is back; watching it again")
		onChange("")
	}

	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return fmt.Errorf("watch %s: watcher closed", dir)
			}
			name := filepath.Clean(ev.Name)
			switch {
			case name == dir && ev.Has(fsnotify.Remove|fsnotify.Rename):
				if watching {
					watching = false
					_ = w.Remove(dir) // gone already after a removal; not after a rename
					log.Info().Msg("plugin directory removed; waiting for it to come back")
					onChange("")
					retry.Reset(rewatchInterval)
				}
			case name == dir && ev.Has(fsnotify.Create):
				if !watching {
					rewatch()
				}
			case filepath.Dir(name) == dir && ev.Has(fsnotify.Create|fsnotify.Remove|fsnotify.Rename):
				log.Debug().Str("name", filepath.Base(name)).Stringer("op", ev.Op).Msg("plugin directory changed")
				onChange(filepath.Base(name))
			}
		case err, ok := <-w.Errors:
			if !ok {
				return fmt.Errorf("watch %s: watcher closed", dir)
			}
			log.Warn().Err(err).Msg("watching plugin directory")
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				onChange("")
			}
		case <-retry.C:
			if !watching {
				rewatch()
			}
		}
	}
}
