#!/usr/bin/env bash
# Builds the single-node cluster's parts (make e2e-cluster) once per machine:
#   kube-apiserver, kube-scheduler, kube-controller-manager, kubelet
#   (k8s.io/kubernetes), etcd (go.etcd.io/etcd/server/v3), containerd, ctr
#   and containerd-shim-runc-v2 (github.com/containerd/containerd/v2), and
#   the pause binary of cluster/cmd/pause, at the versions cluster/go.mod pins.
# Runc is Debian's (scripts/test-deps.sh installs it).
#
# The binaries go to a cache keyed by those versions, the Go version and a
# hash of this script and the pause source, so a version bump (or a change
# of build flags) rebuilds and nothing else does (a test-only dependency of
# cluster/go.mod does not):
#   ${SDM_CLUSTER_CACHE:-/var/cache/smarter-device-manager/cluster}/<key>/
# (root; otherwise ${XDG_CACHE_HOME:-$HOME/.cache}/smarter-device-manager/cluster).
# Prints the directory on its last line. A cold build compiles much of
# Kubernetes and containerd: see docs/deployment.md for how long it takes.
set -euo pipefail
export PATH="$PATH:/usr/local/go/bin"
GO=${GO:-go}
self=$(readlink -f "$0")
cd "$(dirname "$self")/../cluster"

ver() { $GO list -m -f '{{.Version}}' "$1"; }
k8s=$(ver k8s.io/kubernetes)
ctrd=$(ver github.com/containerd/containerd/v2)
etcd=$(ver go.etcd.io/etcd/server/v3)
gov=$($GO env GOVERSION)
sum=$(cat "$self" cmd/pause/*.go | sha256sum | cut -c1-12)
key="k8s-$k8s.containerd-$ctrd.etcd-$etcd.$gov.$sum"

if [ -n "${SDM_CLUSTER_CACHE:-}" ]; then
	base=$SDM_CLUSTER_CACHE
elif [ "$(id -u)" = 0 ]; then
	base=/var/cache/smarter-device-manager/cluster
else
	base=${XDG_CACHE_HOME:-$HOME/.cache}/smarter-device-manager/cluster
fi
out=$base/$key

if [ -f "$out/.complete" ]; then
	echo "cluster-build: cached: $out" >&2
	echo "$out"
	exit 0
fi

mkdir -p "$out.tmp"
start=$(date +%s)
echo "cluster-build: building $key (a cold build takes long: see docs/deployment.md)" >&2
# The versions the binaries report (the Node's kubeletVersion, the
# runtime's version), as their own release builds stamp them.
cv=k8s.io/component-base/version
minor=$(echo "$k8s" | cut -d. -f2)
kldflags="-s -w -X $cv.gitVersion=$k8s -X $cv.gitMajor=1 -X $cv.gitMinor=$minor -X $cv.gitTreeState=clean -X $cv.buildDate=1970-01-01T00:00:00Z"
kldflags="$kldflags -X github.com/containerd/containerd/v2/version.Version=$ctrd"
kldflags="$kldflags -X go.etcd.io/etcd/api/v3/version.GitSHA=release"
# One go build for all of them, so shared packages compile once. The tags
# leave out containerd's snapshotters the suite does not use (btrfs needs
# cgo headers; devmapper and zfs need their tools): overlayfs and native
# stay. Static (CGO_ENABLED=0), as Kubernetes' own release builds are for
# all but the kubelet, which needs no cgo either.
CGO_ENABLED=0 $GO build -trimpath \
	-tags 'no_btrfs,no_devmapper,no_zfs,urfave_cli_no_docs' \
	-ldflags "$kldflags" -o "$out.tmp/" \
	k8s.io/kubernetes/cmd/kube-apiserver \
	k8s.io/kubernetes/cmd/kube-scheduler \
	k8s.io/kubernetes/cmd/kube-controller-manager \
	k8s.io/kubernetes/cmd/kubelet \
	github.com/containerd/containerd/v2/cmd/containerd \
	github.com/containerd/containerd/v2/cmd/ctr \
	github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
	./cmd/pause
CGO_ENABLED=0 $GO build -trimpath -ldflags "$kldflags" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3
end=$(date +%s)
echo "$((end - start))" >"$out.tmp/.build-seconds"
rm -rf "$out"
mv "$out.tmp" "$out"
touch "$out/.complete"
echo "cluster-build: built in $((end - start)) s: $out" >&2
echo "$out"
