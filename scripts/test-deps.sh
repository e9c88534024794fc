#!/usr/bin/env bash
# Installs what the test suite needs on a Debian machine, so a fresh clone
# passes `make test` with nothing installed by hand:
#   - udev (systemd-udevd), for the udev-mode end-to-end test and the
#     container suite's by-id links;
#   - runc, the OCI runtime the container suite (make e2e-container) runs;
#   - the zram module, whose hot_add/hot_remove give the kernel tests real
#     add/remove uevents.
# Not root, or no apt-get: say so and carry on; the tests that need these
# skip with a message naming what is missing.
set -u

if [ "$(id -u)" != 0 ]; then
	echo "test-deps: not root: no packages installed; kernel tests will skip"
	exit 0
fi

# Debian's packages for what is missing: udev's daemon, runc.
missing=""
[ -x /lib/systemd/systemd-udevd ] || missing="$missing udev"
[ -x /usr/sbin/runc ] || missing="$missing runc"
if [ -n "$missing" ]; then
	if command -v apt-get >/dev/null 2>&1; then
		echo "test-deps: installing Debian's$missing"
		export DEBIAN_FRONTEND=noninteractive
		# policy-rc.d (or its absence of an init system) keeps apt from
		# starting udevd: the tests start and stop their own.
		apt-get -o DPkg::Lock::Timeout=300 update -qq &&
			apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends $missing >/dev/null ||
			echo "test-deps: could not install$missing; the tests that need them will skip"
	else
		echo "test-deps: no apt-get; the tests that need$missing will skip"
	fi
fi

if [ ! -d /sys/class/zram-control ]; then
	modprobe zram num_devices=0 2>/dev/null ||
		echo "test-deps: no zram module; the real-kernel hotplug tests will skip"
fi
exit 0
