#!/usr/bin/env bash
# Builds the .deb and .rpm packages (packaging/nfpm.yaml) from the release
# binaries: run `make release` first (make packages does both).
#
#   ARCHS    Go architectures to package (default: amd64 arm64 arm)
#   OUT      where the packages go (default: dist)
#   VERSION  package version (default: from git describe, made valid for
#            dpkg and rpm)
#   DIST     where the binaries are: DIST/linux-<arch>/smarter-device-manager
#            and smarter-device-manager-dra (default: dist)
#   SDM_MAINTAINER  the packages' Maintainer/Packager field
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$PATH:/usr/local/go/bin"

ARCHS=${ARCHS:-amd64 arm64 arm}
OUT=${OUT:-dist}
DIST=${DIST:-dist}
export SDM_MAINTAINER=${SDM_MAINTAINER:-SMARTER project <https://github.com/smarter-project/smarter-device-manager>}

# nfpm, pinned by tools/nfpm/go.mod; go build is cached, so this is quick
# when the binary is up to date.
go build -C tools/nfpm -o "$root/bin/nfpm" github.com/goreleaser/nfpm/v2/cmd/nfpm
nfpm="$root/bin/nfpm"

# Version: git describe, without the tag's "v". dpkg needs a leading digit
# and rpm no "-" in a version, so:
#   v1.2.3             -> 1.2.3
#   v1.2.3-4-gabc1234  -> 1.2.3+git4.gabc1234 (after 1.2.3)
#   ...-dirty          -> ...+dirty / ....dirty
#   abc1234 (no tag)   -> 0.0.0~gitabc1234 (before any release)
if [ -z "${VERSION:-}" ]; then
	VERSION=$(git describe --tags --always --dirty 2>/dev/null || true)
fi
v=${VERSION#v}
meta=
case "$v" in
	*-dirty) v=${v%-dirty}; meta=dirty ;;
esac
if [[ "$v" =~ ^(.+)-([0-9]+)-g([0-9a-f]+)$ ]]; then
	v=${BASH_REMATCH[1]}
	meta="git${BASH_REMATCH[2]}.g${BASH_REMATCH[3]}${meta:+.$meta}"
fi
if ! [[ "$v" =~ ^[0-9]+\.[0-9]+ ]]; then
	# No release tag: a bare commit hash (or nothing at all).
	v="0.0.0~git${v:-unknown}"
fi
if [ -n "$meta" ]; then
	v="$v+$meta"
fi
export SDM_VERSION=$v SDM_DIST=$DIST

mkdir -p "$OUT"
for arch in $ARCHS; do
	for bin in "$DIST/linux-$arch/smarter-device-manager" "$DIST/linux-$arch/smarter-device-manager-dra"; do
		if [ ! -f "$bin" ]; then
			echo "package.sh: $bin is missing: run \`make release\` first (or \`make packages\`)" >&2
			exit 1
		fi
	done
	case "$arch" in
		arm) nfpm_arch=arm7 ;; # GOARM=7: deb armhf, rpm armv7hl
		*) nfpm_arch=$arch ;;
	esac
	export SDM_GOARCH=$arch SDM_NFPM_ARCH=$nfpm_arch
	# Paths in nfpm.yaml are relative to the repository root.
	for packager in deb rpm; do
		"$nfpm" package --config packaging/nfpm.yaml --packager "$packager" --target "$OUT/"
	done
done
