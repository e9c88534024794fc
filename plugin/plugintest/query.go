package plugintest

import (
	"context"
	"fmt"
	"slices"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// What the fake kubelet saw, for tests to assert on and wait for.

// lookup returns get of resource's record with f.mu held, or the zero T
// when the fake kubelet never heard of resource.
func lookup[T any](f *FakeKubelet, resource string, get func(*record) T) T {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r := f.resources[resource]; r != nil {
		return get(r)
	}
	var zero T
	return zero
}

// ClosedStreams returns how many ListAndWatch streams of resource the fake
// kubelet ended itself because of CloseStreams.
func (f *FakeKubelet) ClosedStreams(resource string) int {
	return lookup(f, resource, func(r *record) int { return r.closed })
}

// Registrations returns how many registrations of resource were accepted.
func (f *FakeKubelet) Registrations(resource string) int {
	return lookup(f, resource, func(r *record) int { return r.registrations })
}

// Attempts returns how many Register calls named resource, rejected ones
// included.
func (f *FakeKubelet) Attempts(resource string) int {
	return lookup(f, resource, func(r *record) int { return r.attempts })
}

// Request returns a copy of the last accepted RegisterRequest of resource,
// or nil.
func (f *FakeKubelet) Request(resource string) *pluginapi.RegisterRequest {
	return lookup(f, resource, func(r *record) *pluginapi.RegisterRequest {
		if r.req == nil {
			return nil
		}
		return cloneRequest(r.req)
	})
}

// PluginOptions returns what the plugin's GetDevicePluginOptions answered
// while its last accepted registration of resource was handled, or nil.
// The kubelet takes the options from the RegisterRequest (see Request);
// a plugin should answer the same.
func (f *FakeKubelet) PluginOptions(resource string) *pluginapi.DevicePluginOptions {
	return lookup(f, resource, func(r *record) *pluginapi.DevicePluginOptions { return cloneOptions(r.opts) })
}

// Devices returns a copy of the latest device list of resource received on
// the stream of its current registration (nil before the first message).
func (f *FakeKubelet) Devices(resource string) []*pluginapi.Device {
	return lookup(f, resource, func(r *record) []*pluginapi.Device { return cloneDevices(r.devices) })
}

// Messages returns how many ListAndWatch messages the stream of the current
// registration of resource has delivered.
func (f *FakeKubelet) Messages(resource string) int {
	return lookup(f, resource, func(r *record) int { return r.messages })
}

// Streaming reports whether the ListAndWatch stream of the current
// registration of resource has delivered a message and is still open.
func (f *FakeKubelet) Streaming(resource string) bool {
	return lookup(f, resource, func(r *record) bool { return r.streaming })
}

// Listed returns how many resources have had at least one ListAndWatch
// message on their current registration: a cheap condition for waiting on
// many resources (no copies, no sorting).
func (f *FakeKubelet) Listed() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, r := range f.resources {
		if r.messages > 0 {
			n++
		}
	}
	return n
}

// Resources returns the sorted names of every resource that was ever
// accepted.
func (f *FakeKubelet) Resources() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var names []string
	for name, r := range f.resources {
		if r.registrations > 0 {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// Wait returns nil once cond returns true, re-evaluating it after every
// change the fake kubelet sees (no polling), or ctx's error wrapped. cond
// may call the FakeKubelet's methods.
func (f *FakeKubelet) Wait(ctx context.Context, cond func() bool) error {
	for {
		f.mu.Lock()
		changed := f.changed
		f.mu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("fake kubelet: condition not met: %w", ctx.Err())
		case <-changed:
		}
	}
}

// WaitFor waits until cond holds for the latest device list of resource.
func (f *FakeKubelet) WaitFor(ctx context.Context, resource string, cond func([]*pluginapi.Device) bool) error {
	if err := f.Wait(ctx, func() bool { return cond(f.Devices(resource)) }); err != nil {
		return fmt.Errorf("resource %q: %w (devices now %v)", resource, err, f.Devices(resource))
	}
	return nil
}

// Client returns a DevicePlugin client on the connection of the current
// registration of resource, as the kubelet uses for Allocate and
// GetPreferredAllocation. It is valid until the resource registers again
// or the fake kubelet stops.
func (f *FakeKubelet) Client(resource string) (pluginapi.DevicePluginClient, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.resources[resource]
	if r == nil || r.conn == nil {
		return nil, fmt.Errorf("fake kubelet: resource %q is not registered", resource)
	}
	return pluginapi.NewDevicePluginClient(r.conn), nil
}

func cloneRequest(req *pluginapi.RegisterRequest) *pluginapi.RegisterRequest {
	c := &pluginapi.RegisterRequest{
		Version:      req.GetVersion(),
		Endpoint:     req.GetEndpoint(),
		ResourceName: req.GetResourceName(),
	}
	c.Options = cloneOptions(req.GetOptions())
	return c
}

func cloneOptions(o *pluginapi.DevicePluginOptions) *pluginapi.DevicePluginOptions {
	if o == nil {
		return nil
	}
	return &pluginapi.DevicePluginOptions{
		PreStartRequired:                o.GetPreStartRequired(),
		GetPreferredAllocationAvailable: o.GetGetPreferredAllocationAvailable(),
	}
}

func cloneDevices(devs []*pluginapi.Device) []*pluginapi.Device {
	if devs == nil {
		return nil
	}
	out := make([]*pluginapi.Device, 0, len(devs))
	for _, d := range devs {
		c := &pluginapi.Device{ID: d.GetID(), Health: d.GetHealth()}
		if t := d.GetTopology(); t != nil {
			c.Topology = &pluginapi.TopologyInfo{}
			for _, n := range t.GetNodes() {
				c.Topology.Nodes = append(c.Topology.Nodes, &pluginapi.NUMANode{ID: n.GetID()})
			}
		}
		out = append(out, c)
	}
	return out
}
