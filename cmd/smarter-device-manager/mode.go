package main

import (
	"flag"
	"fmt"
)

// Modes: how the node's resources are served. A node serves each
// resource one way only: KEP-5004 forbids one extended resource name
// from being served both by a device plugin and through a DeviceClass's
// extendedResourceName on the same node.
const (
	modeDevicePlugin = "device-plugin" // one kubelet device-plugin server per resource
	modeDRA          = "dra"           // one DRA driver publishing ResourceSlices
)

// draBinary is the DRA mode's binary, shipped beside this one: DRA links
// client-go and the API types (many MiB), which device-plugin mode does
// not carry. It is this package built with -tags dra.
const draBinary = "smarter-device-manager-dra"

// defaultDriverName is the DRA driver's name unless --dra-driver-name says
// otherwise (dra.DefaultDriverName; a test built with -tags dra checks
// they agree).
const defaultDriverName = "device-manager.smarter-project.github.io"

// modeFlags are the flags of the mode and of DRA mode. Both binaries
// take them all, so one command line, handed from one to the other,
// serves either.
type modeFlags struct {
	mode       string
	nodeName   string
	kubeconfig string
	driverName string
}

func (m *modeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&m.mode, "mode", defaultMode, "device-plugin|dra: serve every resource through the kubelet's device plugin API, or as DRA devices in ResourceSlices (runs "+draBinary+", found beside this binary)")
	fs.StringVar(&m.nodeName, "node-name", "", "DRA: the node's name, its pool's and its ResourceSlices' (a DaemonSet sets it from spec.nodeName); empty: the host name, lowercased")
	fs.StringVar(&m.kubeconfig, "kubeconfig", "", "DRA: kubeconfig file to reach the API server; empty: the pod's service account")
	fs.StringVar(&m.driverName, "dra-driver-name", defaultDriverName, "DRA: the driver's name: its ResourceSlices', attributes' and taints' domain")
}

func (m *modeFlags) check() error {
	switch m.mode {
	case modeDevicePlugin, modeDRA:
		return nil
	}
	return fmt.Errorf("--mode: %q is not %s or %s", m.mode, modeDevicePlugin, modeDRA)
}
