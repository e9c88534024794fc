package dra

import (
	"context"
	"maps"
	"slices"
	"time"

	"k8s.io/dynamic-resource-allocation/kubeletplugin"
)

// How device health is reported to the kubelet: a report at once, then
// at every change and every healthResend, each valid for healthTimeout
// (after which the kubelet says Unknown: the driver is gone or stuck).
const (
	healthResend  = 30 * time.Second
	healthTimeout = 90 * time.Second
)

// WatchHealthStatus streams the health of every published device to the
// kubelet, which shows it in the status of the pods that use it: Healthy
// while present, Unhealthy once unplugged (or missing a companion it
// requires) (kubeletplugin.DRAPlugin).
func (d *Driver) WatchHealthStatus(ctx context.Context, reports chan<- kubeletplugin.DeviceHealthReport) error {
	resend := time.NewTicker(healthResend)
	defer resend.Stop()
	for {
		d.mu.Lock()
		report, changed := d.healthReport(time.Now()), d.changed
		d.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil
		case reports <- report:
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-resend.C:
		}
	}
}

// healthReport is every published device's health at now, by name.
// d.mu is held.
func (d *Driver) healthReport(now time.Time) kubeletplugin.DeviceHealthReport {
	r := kubeletplugin.DeviceHealthReport{Devices: make([]kubeletplugin.DeviceHealth, 0, len(d.devices))}
	for _, name := range slices.Sorted(maps.Keys(d.devices)) {
		p := d.devices[name]
		h := kubeletplugin.DeviceHealth{PoolName: d.opts.NodeName, DeviceName: name, Health: kubeletplugin.HealthStatusHealthy,
			LastUpdated: now, HealthCheckTimeout: healthTimeout}
		switch {
		case !p.unit.Present():
			h.Health, h.LastUpdated = kubeletplugin.HealthStatusUnhealthy, p.unit.AbsentSince
			h.Message = p.unit.Device + " unplugged"
		case p.unit.Flapping:
			h.Health, h.Message = kubeletplugin.HealthStatusUnhealthy, p.unit.Device+" keeps coming and going: held until it is quiet"
		case !p.unit.Healthy:
			h.Health, h.Message = kubeletplugin.HealthStatusUnhealthy, p.unit.Device+" misses a companion node its rule requires"
		}
		r.Devices = append(r.Devices, h)
	}
	return r
}
