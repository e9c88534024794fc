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
//     with match and optional fields (count, permissions, name, class, …);
//   - TOML (chosen by a .toml extension): version = "v1" and [[rule]] tables
//     with the same fields as versioned YAML. The TOML decoder keeps no
//     positions, so a line scan of the file finds each key's line.
//
// Decoding is strict (an unknown key is an error) and one Parse reports every
// error it finds as Errors, each naming file, line and field.
//
// A rule field is described once, in the table ruleFields (fields.go): its
// key, its legacy key, the type of its value, and how the value is checked
// and applied to Rule. Both decoders read rules through it (yaml.go,
// toml.go, with the type checks shared in value.go), unknown-key messages
// list its keys, and buildRules (build.go) applies it, then runs the
// checks that span fields and rules. Adding a field is one entry there;
// fields_test.go, generated from the table, checks that it decodes in
// every format and that no exported Rule field lacks an entry.
//
// conf is pure: it starts no goroutines, does not log, and does no I/O except
// Load reading its one file. It does not scan /dev or /sys (hotplug does),
// know the kubelet wire (plugin), or own any running state (daemon).
package conf
