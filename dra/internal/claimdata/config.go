// Package claimdata parses what the DRA driver reads that another wrote:
// a claim's opaque DeviceConfig (the claim author's bytes) and the
// driver's own checkpoint of prepared claims (bytes a crash, a disk or a
// downgrade may have changed). It links neither client-go nor the API
// types, so its fuzz targets build in seconds where the driver's package
// takes a minute (docs/development.md).
package claimdata

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"regexp"
	"strconv"

	"github.com/smarter-project/smarter-device-manager/conf"
)

// DeviceConfig is the opaque configuration a DeviceClass or a
// ResourceClaim may give the driver's devices (spec.config[].opaque with
// driver set to the driver's name), as JSON. Unknown fields are refused,
// so a misspelt one fails the pod's start rather than being ignored:
//
//	{"owner": {"uid": 1000, "gid": 1000, "mode": "0660"}}
type DeviceConfig struct {
	// APIVersion and Kind, when given, must be "<driver>/v1" and
	// "DeviceConfig".
	APIVersion string `json:"apiVersion,omitempty"`
	Kind       string `json:"kind,omitempty"`
	// Owner sets the owner and mode of the device's nodes in the
	// container, as the rule's owner does, part by part: what it leaves
	// out the rule (or the runtime) decides.
	Owner *OwnerConfig `json:"owner,omitempty"`
}

// OwnerConfig is DeviceConfig's owner.
type OwnerConfig struct {
	UID  *int64  `json:"uid,omitempty"`
	GID  *int64  `json:"gid,omitempty"`
	Mode *string `json:"mode,omitempty"` // octal permission bits, "0660"
}

// modeRE is what a mode may be: octal permission bits (conf's owner.mode).
var modeRE = regexp.MustCompile(`^0?[0-7]{3}$`)

// ApplyConfig decodes one opaque config of the driver's, strictly (an
// unknown field, or anything after the object, is an error), and sets
// what it says on o. The bytes are the claim author's, checked by the
// API server only as JSON of at most 10 KiB.
func ApplyConfig(driver string, raw []byte, o *conf.Owner) error {
	var dc DeviceConfig
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&dc); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("data after the config object")
	}
	return dc.apply(driver, o)
}

// apply sets what the config says on o, after checking it.
func (dc DeviceConfig) apply(driver string, o *conf.Owner) error {
	if dc.APIVersion != "" && dc.APIVersion != driver+"/v1" {
		return fmt.Errorf("apiVersion %q, want %q", dc.APIVersion, driver+"/v1")
	}
	if dc.Kind != "" && dc.Kind != "DeviceConfig" {
		return fmt.Errorf("kind %q, want DeviceConfig", dc.Kind)
	}
	if dc.Owner == nil {
		return nil
	}
	for _, id := range []struct {
		name string
		v    *int64
		dst  *uint32
		has  *bool
	}{{"uid", dc.Owner.UID, &o.UID, &o.HasUID}, {"gid", dc.Owner.GID, &o.GID, &o.HasGID}} {
		if id.v == nil {
			continue
		}
		// runc refuses IDs above MaxInt32, as conf does.
		if *id.v < 0 || *id.v > math.MaxInt32 {
			return fmt.Errorf("owner.%s: must be between 0 and %d, got %d", id.name, math.MaxInt32, *id.v)
		}
		*id.dst, *id.has = uint32(*id.v), true
	}
	if m := dc.Owner.Mode; m != nil {
		if !modeRE.MatchString(*m) {
			return fmt.Errorf(`owner.mode: must be octal permission bits, quoted: "0660", got %q`, *m)
		}
		bits, _ := strconv.ParseUint(*m, 8, 32)
		o.Mode, o.HasMode = fs.FileMode(bits), true
	}
	return nil
}
