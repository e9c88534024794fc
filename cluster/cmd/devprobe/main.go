// Command devprobe is the workload of the cluster suite's device pods: the
// whole root filesystem of their FROM scratch image. It opens, read-write,
// each node /dev/NAME its arguments name (the device the pod asked for), writes one JSON line per node with what it
// saw, which the suite reads back as the pod's log through the API server,
// and then holds on (as a workload would) until it is stopped.
package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
)

// report is one node's result; Errno is empty when the open succeeded.
type report struct {
	Path  string `json:"path"`
	UID   int    `json:"uid"`
	GID   int    `json:"gid"`
	Errno string `json:"errno"`
}

func main() {
	enc := json.NewEncoder(os.Stdout)
	for _, name := range os.Args[1:] {
		p := filepath.Join("/dev", name)
		r := report{Path: p, UID: os.Getuid(), GID: os.Getgid()}
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			r.Errno = "error: " + err.Error()
			var en syscall.Errno
			if errors.As(err, &en) {
				r.Errno = errnoName(en)
			}
		} else {
			f.Close()
		}
		_ = enc.Encode(r)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	<-sigs
}

func errnoName(e syscall.Errno) string {
	switch e {
	case syscall.EACCES:
		return "EACCES"
	case syscall.EPERM:
		return "EPERM"
	case syscall.ENXIO:
		return "ENXIO"
	case syscall.ENOENT:
		return "ENOENT"
	}
	return e.Error()
}
