package daemon

import (
	"crypto/sha256"
	"fmt"
	"os"
	"reflect"

	"github.com/smarter-project/smarter-device-manager/conf"
)

// readResult identifies what one read of the rule file found: its
// content, or the error that stopped the read.
type readResult struct {
	sum [sha256.Size]byte
	err string
}

// reload reads the rule file and applies it. Content it read last time
// (good or broken) is skipped before parsing: a watch event or SIGHUP that
// changed nothing costs one read, and a broken file is logged once for
// each new content, however often it is read.
func (d *daemon) reload() {
	if d.opts.ConfigPath == "" {
		d.log.Info().Msg("reload: no --config file, the embedded default rules stay")
		return
	}
	st := d.opts.Stats
	st.Reloads.Add(1)
	data, err := os.ReadFile(d.opts.ConfigPath)
	read := readResult{sum: sha256.Sum256(data)}
	if err != nil {
		read = readResult{err: err.Error()}
	}
	if d.lastRead != nil && *d.lastRead == read {
		st.ReloadsUnchanged.Add(1)
		d.log.Debug().Str("file", d.opts.ConfigPath).Msg("rule file unchanged since the last reload")
		return
	}
	d.lastRead = &read
	wasBroken := d.lastFailed
	var cfg *conf.Config
	if err != nil {
		err = fmt.Errorf("load rules: %w", err)
	} else {
		cfg, err = conf.Parse(d.opts.ConfigPath, data)
	}
	d.lastFailed = err != nil
	if err != nil {
		// The old rules keep serving: nothing that worked is lost.
		st.ReloadFailures.Add(1)
		st.Errors.Add(1)
		d.log.Error().Err(err).Str("file", d.opts.ConfigPath).Msg("reload failed; keeping the rules in force")
		return
	}
	if sameRules(cfg, d.cfg) {
		if wasBroken {
			d.log.Info().Str("file", d.opts.ConfigPath).Msg("rule file valid again; the rules in force are unchanged")
		}
		return // a comment or an edit undone
	}
	d.cfg = cfg
	d.gpus.read = false // a new GPU rule reads them at once
	clear(d.warned)
	d.log.Info().Str("file", d.opts.ConfigPath).Int("rules", len(cfg.Rules)).Msg("rules reloaded")
}

// sameRules reports whether two rule sets are the same rules from the
// same file.
func sameRules(a, b *conf.Config) bool {
	if a.Source != b.Source || len(a.Rules) != len(b.Rules) {
		return false
	}
	for i := range a.Rules {
		if !reflect.DeepEqual(a.Rules[i], b.Rules[i]) {
			return false
		}
	}
	return true
}
