// Package daemon owns the running state of smarter-device-manager and the
// goroutine tree behind it.
//
// It is level-triggered: a uevent, a plugin-directory change, a reload or a
// slow periodic resync only wakes the reconciler, which then reads the device
// state afresh (hotplug.ScanDev, hotplug.ScanGPUs), turns it into desired
// resources with the rules (conf.Config.Resolve), and diffs desired against
// running: it starts a plugin.Server for a new resource, pushes a full
// snapshot to an existing one (healthy, or unhealthy when its device has
// gone), and stops a resource whose device stayed away longer than
// RemoveAfter or that no rule asks for any more. A lost or spoofed event
// therefore costs nothing: the next read is the truth.
//
// It does not parse rule files (conf), talk netlink (hotplug) or speak gRPC
// (plugin); it declares the small EventSource interface it consumes so tests
// can drive it with a fake.
package daemon
