package conf

import (
	"reflect"
	"testing"
)

// A rule names paths in four fields: match (a regexp on paths below the
// device root), with (companion nodes below it), container_path and mounts
// (absolute paths, in the container and on the host). One that can only
// name a path outside what it is tested against, or that climbs with ..,
// is refused at load, each problem with its file, line and field.
func TestPathsOutsideTheDeviceRootRefused(t *testing.T) {
	const data = `version: v1
rules:
- {match: ^/etc/shadow$, name: a}
- {match: '^\.\./etc', name: b}
- {match: '^snd/\.\./x$', name: c}
- {match: '^snd//x', name: d}
- {match: '^\./x', class: e}
- {match: '(?i)^/DEV/tty', name: f}
- {match: ^ttyUSB0, with: [../etc/shadow, /etc/shadow, snd/../x, "./x?"]}
- {match: ^ttyUSB1, container_path: /dev/../etc/shadow}
- {match: ^ttyUSB2, container_path: dev/x}
- {match: ^ttyUSB3, mounts: ["../etc:/etc", "/etc:../x", "/etc/../root:/r"]}
`
	want := []string{
		`a.yaml:3: rules[0].match: every matching path starts with "/etc/shadow", which is not a path below the device root; match is tested against paths relative to it (ttyUSB0, snd/controlC0), never absolute or with . or ..`,
		`a.yaml:4: rules[1].match: every matching path starts with "../etc", which is not a path below the device root; match is tested against paths relative to it (ttyUSB0, snd/controlC0), never absolute or with . or ..`,
		`a.yaml:5: rules[2].match: every matching path starts with "snd/../x", which is not a path below the device root; match is tested against paths relative to it (ttyUSB0, snd/controlC0), never absolute or with . or ..`,
		`a.yaml:6: rules[3].match: every matching path starts with "snd//x", which is not a path below the device root; match is tested against paths relative to it (ttyUSB0, snd/controlC0), never absolute or with . or ..`,
		`a.yaml:7: rules[4].match: every matching path starts with "./x", which is not a path below the device root; match is tested against paths relative to it (ttyUSB0, snd/controlC0), never absolute or with . or ..`,
		`a.yaml:8: rules[5].match: every matching path starts with "/DEV/TTY", which is not a path below the device root; match is tested against paths relative to it (ttyUSB0, snd/controlC0), never absolute or with . or ..`,
		`a.yaml:9: rules[6].with: "../etc/shadow" is not a path below the device root (nvidiactl, snd/controlC0; a trailing ? makes it optional)`,
		`a.yaml:9: rules[6].with: "/etc/shadow" is not a path below the device root (nvidiactl, snd/controlC0; a trailing ? makes it optional)`,
		`a.yaml:9: rules[6].with: "snd/../x" is not a path below the device root (nvidiactl, snd/controlC0; a trailing ? makes it optional)`,
		`a.yaml:9: rules[6].with: "./x?" is not a path below the device root (nvidiactl, snd/controlC0; a trailing ? makes it optional)`,
		`a.yaml:10: rules[7].container_path: must be a clean absolute path other than /, e.g. /dev/gps0`,
		`a.yaml:11: rules[8].container_path: must be a clean absolute path other than /, e.g. /dev/gps0`,
		`a.yaml:12: rules[9].mounts: "../etc:/etc": "../etc" must be a clean absolute path other than /`,
		`a.yaml:12: rules[9].mounts: "/etc:../x": "../x" must be a clean absolute path other than /`,
		`a.yaml:12: rules[9].mounts: "/etc/../root:/r": "/etc/../root" must be a clean absolute path other than /`,
	}
	c, err := Parse("a.yaml", []byte(data))
	if err == nil {
		t.Fatalf("Parse succeeded with %+v", c.Rules)
	}
	if got := errStrings(t, err); !reflect.DeepEqual(got, want) {
		t.Errorf("errors:\n got %q\nwant %q", got, want)
	}
}

// What only looks like a path outside the root is a name below it.
func TestPathsBelowTheDeviceRootAccepted(t *testing.T) {
	const data = `version: v1
rules:
- {match: '^\.\.x$', name: a}
- {match: '^snd/\.\.x', name: b}
- {match: '^\.', name: c}
- {match: /etc/shadow, name: d}
- {match: '^snd/', name: e}
- {match: ^ttyUSB0, with: [snd/controlC0, "..x?"], container_path: /dev/gps0, mounts: ["/etc/gps:/etc/gps:ro"]}
`
	if _, err := Parse("a.yaml", []byte(data)); err != nil {
		t.Errorf("Parse: %v", err)
	}
}

func TestOutsideRoot(t *testing.T) {
	for _, tt := range []struct {
		prefix   string
		complete bool
		want     bool
	}{
		{"/dev", false, true},
		{"/", false, true},
		{"..", true, true},
		{"..", false, false}, // "..x" is a name
		{"../", false, true},
		{"a/..", true, true},
		{"a/..", false, false},
		{"a/../", false, true},
		{".", true, true},
		{"./", false, true},
		{"a//", false, true},
		{"a/", false, false},
		{"a/b", true, false},
		{"ttyUSB", false, false},
	} {
		if got := outsideRoot(tt.prefix, tt.complete); got != tt.want {
			t.Errorf("outsideRoot(%q, %v) = %v, want %v", tt.prefix, tt.complete, got, tt.want)
		}
	}
}
