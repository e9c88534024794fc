package conf

import (
	"reflect"
	"testing"
)

// owner sets who owns a CDI device's nodes in the container: a non-root
// container opens them with no extra group. It is checked as strictly as
// every other field, in both formats, and refused where it could not take
// effect (without cdi).
func TestOwner(t *testing.T) {
	yaml := func(fields string) string {
		return "version: v1\nrules:\n  - match: ^ttyUSB0$\n" + fields
	}
	for _, c := range []struct {
		name, file, data string
		want             Owner
		errs             []string
	}{
		{name: "all three", file: "r.yaml", data: yaml("    cdi: true\n    owner: {uid: 1000, gid: 1001, mode: \"0660\"}\n"),
			want: Owner{UID: 1000, HasUID: true, GID: 1001, HasGID: true, Mode: 0o660, HasMode: true}},
		{name: "all three, TOML", file: "r.toml", data: "version = \"v1\"\n[[rule]]\nmatch = \"^ttyUSB0$\"\ncdi = true\nowner = { uid = 1000, gid = 1001, mode = \"0660\" }\n",
			want: Owner{UID: 1000, HasUID: true, GID: 1001, HasGID: true, Mode: 0o660, HasMode: true}},
		{name: "mode only, three digits", file: "r.yaml", data: yaml("    cdi: true\n    owner: {mode: \"666\"}\n"),
			want: Owner{Mode: 0o666, HasMode: true}},
		{name: "gid 0 is set, not absent", file: "r.yaml", data: yaml("    cdi: true\n    owner:\n      gid: 0\n"),
			want: Owner{GID: 0, HasGID: true}},
		{name: "without cdi", file: "r.yaml", data: yaml("    owner: {uid: 1000}\n"),
			errs: []string{"r.yaml:4: rules[0].owner: needs cdi: true: the device plugin API cannot set a node's owner or mode, a CDI spec can (without CDI, give a non-root pod the node's group, describe_env's _GID, as a supplemental group)"}},
		{name: "cdi false", file: "r.yaml", data: yaml("    cdi: false\n    owner: {uid: 1000}\n"),
			errs: []string{"r.yaml:5: rules[0].owner: needs cdi: true: the device plugin API cannot set a node's owner or mode, a CDI spec can (without CDI, give a non-root pod the node's group, describe_env's _GID, as a supplemental group)"}},
		{name: "empty", file: "r.yaml", data: yaml("    cdi: true\n    owner: {}\n"),
			errs: []string{"r.yaml:5: rules[0].owner: sets nothing: give uid, gid or mode"}},
		{name: "negative and too large IDs", file: "r.yaml", data: yaml("    cdi: true\n    owner: {uid: -1, gid: 4294967295}\n"),
			errs: []string{"r.yaml:5: rules[0].owner.uid: must be between 0 and 2147483647, got -1", "r.yaml:5: rules[0].owner.gid: must be between 0 and 2147483647, got 4294967295"}},
		{name: "an ID as a string", file: "r.yaml", data: yaml("    cdi: true\n    owner: {uid: \"1000\"}\n"),
			errs: []string{"r.yaml:5: rules[0].owner.uid: must be an integer, got a string"}},
		{name: "unquoted mode", file: "r.yaml", data: yaml("    cdi: true\n    owner: {mode: 0660}\n"),
			errs: []string{"r.yaml:5: rules[0].owner.mode: must be a string, got an integer"}},
		{name: "mode not octal bits", file: "r.yaml", data: yaml("    cdi: true\n    owner: {mode: \"rw\"}\n"),
			errs: []string{`r.yaml:5: rules[0].owner.mode: must be octal permission bits, quoted: "0660", got "rw"`}},
		{name: "setuid bits", file: "r.yaml", data: yaml("    cdi: true\n    owner: {mode: \"4755\"}\n"),
			errs: []string{`r.yaml:5: rules[0].owner.mode: must be octal permission bits, quoted: "0660", got "4755"`}},
		{name: "unknown key", file: "r.yaml", data: yaml("    cdi: true\n    owner:\n      user: 1000\n"),
			errs: []string{`r.yaml:6: rules[0].owner.user: unknown field "user" (known: uid, gid, mode)`}},
		{name: "unknown key, TOML", file: "r.toml", data: "version = \"v1\"\n[[rule]]\nmatch = \"^ttyUSB0$\"\ncdi = true\nowner = { user = 1000 }\n",
			errs: []string{`r.toml:5: rule[0].owner.user: unknown field "user" (known: uid, gid, mode)`}},
		{name: "not a mapping", file: "r.yaml", data: yaml("    cdi: true\n    owner: 1000\n"),
			errs: []string{"r.yaml:5: rules[0].owner: must be a mapping of uid, gid, mode, got an integer"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Parse(c.file, []byte(c.data))
			if c.errs != nil {
				if err == nil {
					t.Fatalf("parsed:\n%s", c.data)
				}
				if got := errStrings(t, err); !reflect.DeepEqual(got, c.errs) {
					t.Errorf("errors\n%q\nwant\n%q", got, c.errs)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Rules[0].Owner; got != c.want {
				t.Errorf("Owner = %+v; want %+v", got, c.want)
			}
		})
	}
}
