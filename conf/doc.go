// Package conf owns the device rules of smarter-device-manager: it parses
// rule files, fills in defaults, validates and compiles them, and resolves
// them against a list of scanned devices into the resources the daemon
// should advertise.
//
// Three file formats decode to one model (Config, Rule):
//
//   - legacy YAML, the old daemon's format, loaded unchanged: a top-level
//     sequence of {devicematch: <regexp>, nummaxdevices: <int>};
//   - versioned YAML: a mapping with "version: v1" and "rules:", each rule
//     with match, count, permissions and name;
//   - TOML (chosen by a .toml extension): version = "v1" and [[rule]] tables
//     with the same fields as versioned YAML.
//
// Decoding is strict (an unknown key is an error) and one Parse reports every
// error it finds as Errors, each naming file, line and field.
//
// conf is pure: it starts no goroutines, does not log, and does no I/O except
// Load reading its one file. It does not scan /dev or /sys (hotplug does),
// know the kubelet wire (plugin), or own any running state (daemon).
package conf
