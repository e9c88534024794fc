// Command pause is the pod sandbox's process for the cluster suite's pause
// image: it holds the pod's namespaces open until it is told to stop, and as
// the pod's PID 1 it reaps any orphan re-parented to it. It is built static
// (CGO_ENABLED=0) so the image can be FROM scratch.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			return
		}
		// Reap every child that has ended; several may share one SIGCHLD.
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
