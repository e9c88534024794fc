package plugin

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/smarter-project/smarter-device-manager/internal/natural"
)

// service is the DevicePlugin gRPC API of one serving round of a Server.
// done is closed when that round stops, which ends its ListAndWatch
// streams so that GracefulStop does not wait on them.
type service struct {
	pluginapi.UnimplementedDevicePluginServer
	s    *Server
	done <-chan struct{}
}

// GetDevicePluginOptions tells the kubelet that PreStartContainer need not
// be called, and whether GetPreferredAllocation is available
// (Options.PreferredAllocation), as the registration did.
func (v *service) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return v.s.pluginOptions(), nil
}

// ListAndWatch sends the whole device list at once, then again after every
// change; the kubelet treats each message as the complete list. It returns
// when the kubelet ends the stream or this serving round stops; the
// kubelet then marks every device unhealthy until we register again.
func (v *service) ListAndWatch(_ *pluginapi.Empty, stream grpc.ServerStreamingServer[pluginapi.ListAndWatchResponse]) error {
	s := v.s
	ctx := stream.Context()
	id, epoch := s.openStream()
	byKubelet := false
	defer func() { s.closeStream(id, epoch, byKubelet) }()
	s.log.Debug().Uint64("stream", id).Msg("ListAndWatch stream opened")

	var sent []Device
	first := true
	send := func(st *state) error {
		if !first && slices.Equal(st.snap.Devices, sent) {
			return nil
		}
		if err := stream.Send(listResponse(st.snap.Devices)); err != nil {
			return fmt.Errorf("send device list: %w", err)
		}
		sent, first = st.snap.Devices, false
		return nil
	}
	for {
		st, changed := s.current()
		if err := send(st); err != nil {
			byKubelet = ctx.Err() != nil && !isClosed(v.done)
			return err
		}
		select {
		case <-v.done:
			// Best effort: a last Update just before stopping (an empty
			// list, say) still reaches the kubelet.
			st, _ := s.current()
			_ = send(st)
			return nil
		case <-ctx.Done():
			byKubelet = !isClosed(v.done)
			s.log.Debug().Uint64("stream", id).Msg("ListAndWatch stream ended by the kubelet")
			return nil
		case <-changed:
		}
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func listResponse(devs []Device) *pluginapi.ListAndWatchResponse {
	resp := &pluginapi.ListAndWatchResponse{Devices: make([]*pluginapi.Device, 0, len(devs))}
	for _, d := range devs {
		health := pluginapi.Unhealthy
		if d.Healthy {
			health = pluginapi.Healthy
		}
		dev := &pluginapi.Device{ID: d.ID, Health: health}
		if d.HasNUMA {
			dev.Topology = &pluginapi.TopologyInfo{Nodes: []*pluginapi.NUMANode{{ID: int64(d.NUMANode)}}}
		}
		resp.Devices = append(resp.Devices, dev)
	}
	return resp
}

// Allocate returns, for every container, the device specs and environment
// of the current snapshot. An unknown device ID is NotFound and an
// unhealthy one FailedPrecondition; the kubelet then fails the pod's
// admission rather than starting it without its device.
func (v *service) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	s := v.s
	st, _ := s.current()
	resp := &pluginapi.AllocateResponse{
		ContainerResponses: make([]*pluginapi.ContainerAllocateResponse, 0, len(req.GetContainerRequests())),
	}
	for _, cr := range req.GetContainerRequests() {
		for _, id := range cr.GetDevicesIds() {
			healthy, ok := st.health[id]
			if !ok {
				return nil, status.Errorf(codes.NotFound, "device %q is not a device of resource %q", id, s.opts.ResourceName)
			}
			if !healthy {
				return nil, status.Errorf(codes.FailedPrecondition, "device %q of resource %q is unhealthy", id, s.opts.ResourceName)
			}
		}
		if st.snap.CDIKind != "" {
			car := &pluginapi.ContainerAllocateResponse{}
			for _, id := range cr.GetDevicesIds() {
				car.CdiDevices = append(car.CdiDevices, &pluginapi.CDIDevice{Name: st.snap.CDIKind + "=" + id})
			}
			resp.ContainerResponses = append(resp.ContainerResponses, car)
			s.log.Info().Strs("devices", cr.GetDevicesIds()).Str("cdi", st.snap.CDIKind).Msg("allocated")
			continue
		}
		car := &pluginapi.ContainerAllocateResponse{
			Envs:    maps.Clone(st.snap.Envs),
			Devices: make([]*pluginapi.DeviceSpec, 0, len(st.snap.Specs)),
		}
		seen := map[string]bool{} // by container path: a node appears once
		add := func(sp DeviceSpec) {
			if seen[sp.ContainerPath] {
				return
			}
			seen[sp.ContainerPath] = true
			car.Devices = append(car.Devices, &pluginapi.DeviceSpec{
				HostPath:      sp.HostPath,
				ContainerPath: sp.ContainerPath,
				Permissions:   sp.Permissions,
			})
		}
		for _, sp := range st.snap.Specs {
			add(sp)
		}
		for _, id := range cr.GetDevicesIds() {
			for _, sp := range st.snap.PerDevice[id] {
				add(sp)
			}
		}
		for _, m := range st.snap.Mounts {
			car.Mounts = append(car.Mounts, &pluginapi.Mount{HostPath: m.HostPath, ContainerPath: m.ContainerPath, ReadOnly: m.ReadOnly})
		}
		resp.ContainerResponses = append(resp.ContainerResponses, car)
		s.log.Info().Strs("devices", cr.GetDevicesIds()).Int("specs", len(car.Devices)).Msg("allocated")
	}
	s.change(func() { s.allocations++ })
	return resp, nil
}

// GetPreferredAllocation prefers, for every container, the must-include
// IDs first, then the other available IDs that are healthy in the current
// snapshot in numeric-aware order ("2" before "10"), up to the allocation
// size. The kubelet calls it only when the options offer it, but it answers
// either way.
func (v *service) GetPreferredAllocation(_ context.Context, req *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	defer v.s.change(func() { v.s.preferredAllocations++ })
	st, _ := v.s.current()
	resp := &pluginapi.PreferredAllocationResponse{
		ContainerResponses: make([]*pluginapi.ContainerPreferredAllocationResponse, 0, len(req.GetContainerRequests())),
	}
	for _, cr := range req.GetContainerRequests() {
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerPreferredAllocationResponse{
			DeviceIDs: preferred(st.health, cr.GetMustIncludeDeviceIDs(), cr.GetAvailableDeviceIDs(), int(cr.GetAllocationSize())),
		})
	}
	return resp, nil
}

// preferred picks must first (all of them: the kubelet requires them), then
// healthy available IDs in natural order, until size IDs are picked.
func preferred(health map[string]bool, must, available []string, size int) []string {
	ids := make([]string, 0, max(size, len(must)))
	seen := make(map[string]bool, len(must)+len(available))
	for _, id := range must {
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	var rest []string
	for _, id := range available {
		if !seen[id] && health[id] {
			seen[id] = true
			rest = append(rest, id)
		}
	}
	slices.SortFunc(rest, natural.Compare)
	for _, id := range rest {
		if len(ids) >= size {
			break
		}
		ids = append(ids, id)
	}
	return ids
}

// PreStartContainer is not required (see GetDevicePluginOptions); it
// answers with an empty response.
func (v *service) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}
