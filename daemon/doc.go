// Package daemon owns the running state of smarter-device-manager and the
// goroutine tree behind it.
//
// It is level-triggered: a uevent, a plugin-directory change, a reload or a
// slow periodic resync only wakes the event loop, which then reconciles in
// four steps, one direction of data:
//
//   - read (resolve.go): scan the device state afresh (hotplug.ScanDev,
//     hotplug.ScanGPUs), resolve it against the rules (conf.Config.Resolve)
//     and read what each unit's content needs (nodes, links, NUMA node,
//     serial, node group): a resolvedUnit, so nothing later does I/O;
//   - desire (desire.go, content.go): the resources the rules make, each
//     with its units (a plain resource is a class of one) and each unit's
//     content, a pure function of the resolved unit and its rule;
//   - plan (plan.go): a pure function of desired, running and the time:
//     start, update, stop, with each unit present or absent (unhealthy)
//     until RemoveAfter, and when to look again;
//   - apply (apply.go): the device-plugin output, one plugin.Server per
//     resource, given each resource rendered as a plugin.Snapshot and, for
//     cdi rules, a CDI spec (render.go, cdi.go: two renderings of one
//     value). With Options.Output set (output.go), the plan goes there
//     instead: every running resource, its units with their content and
//     Identity (what sysfs and udev say the device is), and what changed.
//     The DRA driver (package dra) is that output; daemon does not import
//     it, nor anything of Kubernetes' API.
//
// A lost or spoofed event therefore costs nothing: the next read is the
// truth. The servers of resources that go are stopped all at once, off the
// loop (a kubelet that holds its connections makes each stop last the
// plugin's grace period), so the loop keeps answering meanwhile; a
// resource back before its old server has stopped starts once it has.
//
// It does not parse rule files (conf), talk netlink (hotplug) or speak gRPC
// (plugin); it declares the small EventSource interface it consumes so tests
// can drive it with a fake.
package daemon
