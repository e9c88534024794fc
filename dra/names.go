package dra

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// maxNameLen is the longest DNS label, what a device name may be.
const maxNameLen = 63

// DeviceName is the name of a unit's device in the node's pool, a pure
// function of the resource and the unit's member key, so a device keeps
// its name across replugs, restarts and nodes: the resource's name part,
// then for a class member its key ("smarter-devices/usb-serial" and
// "0403_6001_A1B2C3" make "usb-serial-0403-6001-a1b2c3"; a plain
// "smarter-devices/ttyUSB0" makes "ttyusb0"), lowercased, with every
// character that a DNS label may not hold turned into '-'. A name longer
// than 63 characters is cut to 54 and ends in '-' and 8 hex digits of the
// SHA-256 of resource and key, as conf shortens a resource name. Two
// units can still meet on one name (ttyUSB0 and ttyusb0); the pool tells
// them apart (uniqueNames).
func DeviceName(resource, key string) string {
	part := resource[strings.LastIndexByte(resource, '/')+1:]
	if key != "" {
		part += "-" + key
	}
	name := strings.Trim(strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r - 'A' + 'a'
		}
		return '-'
	}, part), "-")
	if len(name) > maxNameLen || name == "" {
		name = strings.TrimRight(name[:min(len(name), maxNameLen-9)], "-") + "-" + nameHash(resource, key)
	}
	return strings.TrimLeft(name, "-")
}

// nameHash is 8 hex digits of the SHA-256 of a unit's resource and key.
func nameHash(resource, key string) string {
	sum := sha256.Sum256([]byte(resource + "\x00" + key))
	return hex.EncodeToString(sum[:4])
}

// uniqueNames makes the names of a pool's units distinct: a name that
// several units share (their names differ only in case or punctuation)
// gets each unit's hash appended, cut to fit, so each keeps a name of its
// own whatever else is plugged in with it. names[i] is the name of the
// unit ids[i] (resource and key); both are in publishing order.
func uniqueNames(names []string, ids [][2]string) []string {
	seen := make(map[string]int, len(names))
	for _, n := range names {
		seen[n]++
	}
	out := make([]string, len(names))
	for i, n := range names {
		if seen[n] > 1 {
			n = strings.TrimRight(n[:min(len(n), maxNameLen-9)], "-") + "-" + nameHash(ids[i][0], ids[i][1])
		}
		out[i] = n
	}
	return out
}
