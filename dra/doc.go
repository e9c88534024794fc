// Package dra is the daemon's Dynamic Resource Allocation output: a
// daemon.Output that publishes every unit the rules make (a device, a
// directory of devices, a class member with all its nodes) as one device
// of the node's pool in ResourceSlices, and a kubelet DRA plugin that
// prepares claims for them. It is linked only into the DRA binary
// (smarter-device-manager-dra): client-go and the API types it needs are
// many MiB that the device-plugin binary does not carry.
//
// One pool per node, named after it, published through
// k8s.io/dynamic-resource-allocation's kubeletplugin helper (its
// ResourceSlice controller writes only what changed):
//
//   - names (names.go): a device's name is a pure function of its
//     resource and member key (DeviceName), so it survives replugs and
//     restarts;
//   - devices (devices.go): attributes from the unit's Identity (path,
//     subsystem, major, minor, bus, vendor, product, serial, model, port,
//     driver, NUMA node, PCI address) and the extended resource it is in
//     device-plugin mode; count N > 1 as consumable capacity (N shares,
//     AllowMultipleAllocations); an absent unit tainted NoSchedule (rule
//     evict_on_unplug: NoExecute) until the daemon drops it after
//     --remove-after;
//   - prepare (prepare.go, config.go): one CDI spec per claim, named by
//     its UID, with each allocated unit's content (daemon.Content: nodes,
//     links, environment, mounts) and the owner from the rule or the
//     claim's opaque DeviceConfig; unprepare removes it; both idempotent;
//   - checkpoint (internal/claimdata, which also parses the claim's
//     config: both are bytes others wrote, fuzzed without client-go): the
//     prepared claims, in the plugin's directory, so unprepare and a
//     repeated prepare work after a restart; one it cannot read is moved
//     aside and the driver starts without it;
//   - claim UIDs name files: any not a DNS label is refused
//     (claimdata.CheckUID, on prepare, unprepare and the checkpoint);
//   - health (health.go): WatchHealthStatus streams each device's health
//     to the kubelet, which shows it in the pod's status.
//
// It does not read devices or rules (daemon does) and knows nothing of the
// device plugin API.
package dra
