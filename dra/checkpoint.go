package dra

import (
	"k8s.io/dynamic-resource-allocation/kubeletplugin"

	"github.com/smarter-project/smarter-device-manager/dra/internal/claimdata"
)

// prepareResult is a prepared claim as the kubelet is answered. (The
// checkpoint itself, what a restart keeps, is claimdata's.)
func prepareResult(c claimdata.Claim) kubeletplugin.PrepareResult {
	var r kubeletplugin.PrepareResult
	for _, d := range c.Devices {
		r.Devices = append(r.Devices, kubeletplugin.Device{Requests: d.Requests, PoolName: d.Pool, DeviceName: d.Device,
			CDIDeviceIDs: d.CDIDeviceIDs, ShareID: d.ShareID})
	}
	return r
}
