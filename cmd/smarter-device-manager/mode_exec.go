//go:build !dra

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/smarter-project/smarter-device-manager/daemon"
)

// defaultMode: this binary serves the device plugin itself.
const defaultMode = modeDevicePlugin

// draOutput hands DRA mode over to the DRA binary beside this one: it
// replaces this process with it, with the same arguments and environment,
// so one flag (--mode=dra, or SMARTER_DEVICE_MANAGER_MODE=dra) switches a
// DaemonSet or a systemd unit. It returns only when it cannot.
func draOutput(_ *flags, args []string, _ *daemon.Stats, log zerolog.Logger) (daemon.Output, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("DRA mode: finding %s: %w", draBinary, err)
	}
	bin := filepath.Join(filepath.Dir(self), draBinary)
	log.Info().Str("binary", bin).Msg("DRA mode: handing over to the DRA binary")
	err = syscall.Exec(bin, append([]string{bin}, args...), os.Environ())
	return nil, fmt.Errorf("DRA mode needs %s beside %s (the image and the packages ship both): %w", draBinary, self, err)
}
