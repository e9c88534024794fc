package daemon

import (
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"time"

	"github.com/smarter-project/smarter-device-manager/conf"
	"github.com/smarter-project/smarter-device-manager/hotplug"
)

// hostControl names the device nodes that give a container control of the
// host, whatever its other settings: they are refused unless a rule says
// allow_dangerous.
var hostControl = map[string]string{
	"mem":  "physical memory",
	"kmem": "kernel memory",
	"port": "I/O ports",
	"kmsg": "the kernel log (read and inject)",
}

// safety decides, for one state read, which nodes are too dangerous to hand
// to a container. It reads sysfs and the mount table through one
// hotplug.Reader, made at the first block device in question, so the mount
// table is read at most once per state read and only then.
type safety struct {
	devRoot, pluginDir string
	devFS, sysFS       fs.FS
	procFS             fs.FS // the daemon's own /proc: self/mountinfo
	reader             *hotplug.Reader
	// verdicts remembers blockInUse per block device across state reads
	// for ttl: sysfs directory reads cost ~0.4 ms each, too much for every
	// uevent of a storm; a device mounted meanwhile is seen at the next
	// resync at the latest (and refusing it later would not take it from
	// a container that already has it).
	verdicts map[string]verdict
	ttl      time.Duration
	now      time.Time
}

type verdict struct {
	why string
	at  time.Time
}

// hazard says why giving a container the node at rel (relative to the
// device root) would give it control of the host, or "" when it would not.
func (s *safety) hazard(rel string, mode fs.FileMode) string {
	if what, ok := hostControl[rel]; ok {
		return "it gives access to " + what
	}
	host := filepath.Join(s.devRoot, filepath.FromSlash(rel))
	if s.pluginDir != "" && (within(host, s.pluginDir) || within(s.pluginDir, host)) {
		return "it is, or holds, the kubelet's plugin socket directory"
	}
	if mode&fs.ModeDevice != 0 && mode&fs.ModeCharDevice == 0 {
		if why := s.blockInUse(rel); why != "" {
			return why
		}
	}
	return ""
}

// blockInUse reports a block device that holds a mounted filesystem (on
// itself or on one of its partitions) or is held by another device (dm,
// md): writing to it from a container corrupts the host's data. It runs on
// the hotplug path for every matched block device, so it costs a stat, a
// readlink and one small directory read; the mount table is read once per
// state read.
func (s *safety) blockInUse(rel string) string {
	major, minor, _, err := hotplug.Rdev(s.devFS, rel)
	if err != nil {
		return "" // gone, or no device number (a test's fake node)
	}
	id := fmt.Sprintf("%d:%d", major, minor)
	if v, ok := s.verdicts[id]; ok && s.now.Sub(v.at) < s.ttl {
		return v.why
	}
	if s.reader == nil {
		s.reader = hotplug.NewReader(s.sysFS, nil).WithProc(s.procFS)
	}
	why := ""
	switch use, err := s.reader.BlockUse(major, minor); {
	case err != nil: // unknown to sysfs
	case use.Mounted:
		why = "it holds a mounted filesystem"
	case len(use.Holders) > 0:
		why = "it is in use by " + use.Holders[0]
	}
	if s.verdicts != nil {
		s.verdicts[id] = verdict{why: why, at: s.now}
	}
	return why
}

// within reports whether path is dir or below it. It runs for every
// matched node on every state read, so absolute paths (the daemon's) are
// compared as strings after one Clean each: filepath.Rel was 6% of the
// CPU of a reconcile at 1,000 resources.
func within(path, dir string) bool {
	path, dir = filepath.Clean(path), filepath.Clean(dir)
	if !filepath.IsAbs(path) || !filepath.IsAbs(dir) {
		rel, err := filepath.Rel(dir, path)
		return err == nil && filepath.IsLocal(rel) // "." (the same path) is local too
	}
	if dir == "/" {
		return true
	}
	return path == dir || strings.HasPrefix(path, dir) && path[len(dir)] == '/'
}

// refuseDangerous drops the resources that would hand a container a node
// giving control of the host, unless their rule allows it, and says which
// rule and node in a warning.
func (d *daemon) refuseDangerous(desired []conf.Resource, nodes []hotplug.Node) []conf.Resource {
	s := &safety{devRoot: d.opts.DevRoot, pluginDir: d.opts.PluginDir, devFS: d.opts.DevFS, sysFS: d.opts.SysFS, procFS: d.opts.ProcFS,
		verdicts: d.blockVerdicts, ttl: d.opts.Resync, now: time.Now()}
	modes := make(map[string]fs.FileMode, len(nodes))
	for _, n := range nodes {
		modes[n.Path] = n.Mode
	}
	kept := desired[:0]
	var warns []conf.Warning
	for _, res := range desired {
		rule := d.cfg.Rules[res.Rule]
		if res.Members != nil {
			// A class: refuse members one by one.
			var ok []conf.Member
			for _, m := range res.Members {
				why := s.hazard(m.Path, modes[m.Path])
				for _, o := range m.Others {
					if why == "" {
						why = s.hazard(o.Path, modes[o.Path])
					}
				}
				if why != "" && !rule.AllowDangerous {
					warns = append(warns, conf.Warning{Device: m.Path, Msg: fmt.Sprintf(
						"refused: %s; rule %s (%q) must say allow_dangerous: true to expose it", why, rule.Pos, rule.Match)})
					continue
				}
				ok = append(ok, m)
			}
			if len(ok) > 0 {
				res.Members = ok
				kept = append(kept, res)
			}
			continue
		}
		why := ""
		if !rule.AllowDangerous {
			for _, c := range rule.With {
				if why = s.hazard(c.Path, modes[c.Path]); why != "" {
					why = "its companion " + c.Path + ": " + why
					break
				}
			}
		}
		if why == "" && res.GPU == "" && !rule.AllowDangerous {
			why = s.hazard(res.Path, modes[res.Path])
			if why == "" && res.Dir {
				prefix := res.Path + "/"
				for _, n := range nodes {
					if strings.HasPrefix(n.Path, prefix) {
						if why = s.hazard(n.Path, n.Mode); why != "" {
							break
						}
					}
				}
			}
		}
		if why != "" {
			warns = append(warns, conf.Warning{Device: res.Path, Msg: fmt.Sprintf(
				"refused: %s; rule %s (%q) must say allow_dangerous: true to expose it", why, rule.Pos, rule.Match)})
			continue
		}
		kept = append(kept, res)
	}
	d.logWarnings(warns)
	// Forget verdicts on devices long gone, so churn cannot grow the cache.
	for id, v := range d.blockVerdicts {
		if s.now.Sub(v.at) > 2*s.ttl {
			delete(d.blockVerdicts, id)
		}
	}
	return kept
}
