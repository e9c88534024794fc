#!/usr/bin/env bash
# Builds the node image of make e2e-nodes (cluster/nodes_*_test.go): a
# Debian bookworm root file system whose PID 1 is the real systemd, made by
# mmdebstrap from Debian's own packages and imported into the local Docker
# engine. No `FROM debian`: no container registry need be reachable, only
# Debian's mirror.
#
# The tag is a hash of this script, the only thing that defines the image:
# an edit here rebuilds, anything else reuses it (a newer bookworm point
# release does not: `docker rmi` the image to pick one up). Older tags of
# the image that this script made are removed. Prints the image
# (NAME:TAG) on its last line; progress goes to stderr.
#
# A container of it runs systemd as PID 1 with (what the test passes):
#   docker run -d --cap-add ALL --cap-drop SYS_RESOURCE \
#     --security-opt seccomp=unconfined --cgroupns=host \
#     -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /run/lock IMAGE
set -euo pipefail

name=${SDM_NODE_IMAGE:-smarter-device-manager-node}
# Marks the images this script made, so only those are ever removed.
label=smarter-device-manager-node-image
self=$(readlink -f "$0")
image=$name:$(sha256sum "$self" | cut -c1-12)

if docker image inspect "$image" >/dev/null 2>&1; then
	echo "node-image: cached: $image" >&2
	echo "$image"
	exit 0
fi

if ! command -v mmdebstrap >/dev/null 2>&1; then
	echo "node-image: installing Debian's mmdebstrap" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
	apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends mmdebstrap >&2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "node-image: building $image (mmdebstrap from deb.debian.org)" >&2

# Units masked (as kind's node image masks systemd-binfmt): without the
# masks the node boots to "running" all the same, but these reach the
# host's kernel, which the container's capabilities (ALL but SYS_RESOURCE)
# would let them change; a node under test must not:
#   systemd-binfmt: binfmt_misc registrations are kernel-global.
#   systemd-modules-load: so are kernel modules (CAP_SYS_MODULE is held, so
#     its condition would not stop it).
#   sys-kernel-{config,debug,tracing}.mount, sys-fs-fuse-connections.mount:
#     the host kernel's configfs, debugfs, tracefs and fusectl, writable.
#   systemd-journald-audit.socket: the host's audit records are not the
#     node's; its journal should hold only its own units' logs.
masked="systemd-binfmt.service systemd-modules-load.service
	sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount
	sys-fs-fuse-connections.mount systemd-journald-audit.socket"

# minbase: Essential packages and apt, the smallest base; then only what a
# node's init needs: systemd and /sbin/init (systemd-sysv), dbus (logind,
# systemctl's bus clients) and udev (the unit under test Wants= it; in a
# container it skips itself: ConditionPathIsReadWrite=/sys); for a worker
# node (nodes_reboot_test.go: kubelet and containerd, bind-mounted from the
# cluster suite's cache, run as units) Debian's runc, as on the host, and
# mount (the kubelet mounts tmpfs volumes with it), and iptables (the node
# has no kube-proxy: nodes_follow_test.go sends the kubernetes Service's
# address to the API server with one DNAT rule). No Recommends:
# the image holds what is named here and what that depends on.
# The mirrors are named, -updates and -security included, so the image
# carries bookworm's current fixes whatever mmdebstrap's defaults are.
mmdebstrap --variant=minbase \
	--include=systemd,systemd-sysv,dbus,udev,runc,mount,iptables \
	--aptopt='APT::Install-Recommends "false"' \
	--customize-hook='chroot "$1" systemctl mask '"$(echo $masked)" \
	bookworm "$tmp/rootfs.tar" \
	"deb http://deb.debian.org/debian bookworm main" \
	"deb http://deb.debian.org/debian bookworm-updates main" \
	"deb http://deb.debian.org/debian-security bookworm-security main" >&2

# container=docker tells systemd it runs in a container (systemd.io's
# CONTAINER_INTERFACE), so it skips what a container must not do. (systemd
# shuts down on SIGRTMIN+3, not docker stop's SIGTERM, but docker 20.10's
# import refuses STOPSIGNAL: `docker run --stop-signal SIGRTMIN+3` for a
# clean stop; the test removes its container with rm -f.)
docker import \
	--change 'CMD ["/sbin/init"]' \
	--change 'ENV container=docker' \
	--change "LABEL $label=1" \
	"$tmp/rootfs.tar" "$image" >&2

# Older tags of this image from this script. One a container still uses is
# kept (rmi refuses it): that run removes its container, a later build the tag.
docker images --filter "label=$label" --format '{{.Repository}}:{{.Tag}}' "$name" |
	while read -r old; do
		if [ "$old" != "$image" ]; then
			docker rmi "$old" >&2 || echo "node-image: kept $old (in use)" >&2
		fi
	done

echo "node-image: built in $(($(date +%s) - start)) s: $image" >&2
echo "$image"
