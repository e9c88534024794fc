// Package plugin owns the kubelet device-plugin wire (API v1beta1) for one
// extended resource: the DevicePlugin gRPC service on a unix socket in the
// kubelet's plugin directory, its registration with the kubelet, and the
// recovery when the kubelet restarts.
//
// A [Server] is fed whole [Snapshot]s by its owner through [Server.Update]
// and never calls back upstream. It knows nothing of udev, /dev or rules:
// what a device is, and which host paths a container gets, is decided by the
// caller. [Server.Run] loops listen → serve → register → watch until its
// context ends. The servers of one kubelet share a [Registrar]: one
// connection for their registrations, and [Registrar.WatchDir], which turns
// every change in the plugin directory into a [Server.Kick] of each server
// running with it (and says once when the kubelet socket is missing);
// [Registrar.Kick] is the periodic safety net. The owner never relays
// directory events.
//
// Files by concern: snapshot.go (the value types), options.go, server.go
// (Server, Status, Update, Run), serve.go (the registration loop's I/O),
// regstate.go (the registration state and its transitions, no I/O),
// instance.go (one serving round's socket), service.go (the gRPC handlers),
// registrar.go, hub.go, listener.go, codec.go, watch.go and fanout.go
// (what the servers of one kubelet share: the registration connection, one
// gRPC server for every socket and the bounds on what a client can cost,
// the sockets' listeners, the codec, the directory watch, its fan-out).
//
// Kubelet contract facts this package is built around
// (k8s.io/kubernetes pkg/kubelet/cm/devicemanager):
//   - every ListAndWatch message carries the whole device list, not a delta;
//   - a closed ListAndWatch stream marks every device of the resource
//     unhealthy until the plugin registers again;
//   - the kubelet dials the plugin's socket while handling Register, so the
//     plugin must serve before it registers;
//   - the kubelet removes every plugin socket in its directory when it
//     starts, which is the plugin's signal to serve and register again;
//   - device IDs are checkpointed by the kubelet, so callers must keep them
//     stable across restarts of this daemon.
package plugin
