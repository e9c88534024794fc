// Package plugintest provides a fake kubelet for tests of device plugins:
// a Registration server on <dir>/kubelet.sock that, like the kubelet's
// device manager, dials each registered plugin's endpoint in <dir> while
// handling Register and then follows its ListAndWatch stream.
//
// It is for tests only: of package plugin, of the daemon, and of end-to-end
// runs of the daemon binary.
//
// kubelet.go is the fake kubelet's wire side (Register, following
// ListAndWatch), query.go what it saw, silent.go a kubelet that never
// answers, socket.go the kubelet.sock handling both share and WipeSockets.
//
// Waits are event-driven: every change the fake kubelet sees (a Register
// call, a ListAndWatch message, a stream ending) wakes [FakeKubelet.Wait]
// and [FakeKubelet.WaitFor], so tests need no sleeps.
package plugintest
