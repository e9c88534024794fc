#!/usr/bin/env bash
# make test (and so .ci/run): every phase of the suite in order, each
# timed, a table of the times at the end. What makes it faster than the
# phases one after another: the two other modules' test binaries (e2e/,
# packaging/check/: Kubernetes, containerd, helm) are vetted and compiled
# in the background, at nice 19, from the start, so they use the CPU the
# unit tests leave idle while they wait on sockets, timers and the kernel,
# and yield it whenever the foreground wants it. Their phases then run
# those binaries instead of linking them again (docs/development.md has
# the figures). Nothing is skipped that `make deps vet fuzz unit
# check-packaging e2e e2e-container` would run.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
MAKE=${MAKE:-make}
GO=${GO:-go}

prebuilt=$(mktemp -d "${TMPDIR:-/tmp}/sdm-test-bin.XXXXXX") || exit 1
declare -A bg=() # background builds: name -> PID
cleanup() {
	# Only our own background builds, by PID, and only while they run.
	local pid
	for pid in "${bg[@]}"; do
		if [[ "$pid" =~ ^[0-9]+$ ]] && ((pid > 1)) && kill -0 "$pid" 2>/dev/null; then
			kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null
			wait "$pid" 2>/dev/null
		fi
	done
	rm -rf "$prebuilt"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

declare -a names=() secs=()
phase() { # name, command...: runs it, records its time; a failure ends the suite.
	local name=$1 start end rc
	shift
	echo "=== $name"
	start=$(date +%s.%N)
	"$@"
	rc=$?
	end=$(date +%s.%N)
	names+=("$name")
	secs+=("$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", b - a }')")
	if ((rc != 0)); then
		echo "=== $name FAILED (exit $rc)"
		report
		exit "$rc"
	fi
}
report() {
	local i total=0
	echo "=== time per phase (s)"
	for i in "${!names[@]}"; do
		printf '%-18s %5s\n' "${names[$i]}" "${secs[$i]}"
		total=$((total + secs[i]))
	done
	printf '%-18s %5s\n' total "$total"
}

phase deps "$MAKE" --no-print-directory deps

# The background builds, each in its own process group (so cleanup ends
# all of it), at nice 19, logging to $prebuilt/<name>.log, shown only on a
# failure: the packaging module's test binary and the helm and kustomize
# its tests run (they build them into bin/ again: compiled already, only
# linked), and the e2e module's test binaries, each vetted first as its
# make target does. As a normal user the e2e suite skips: not built.
background() { # name, command...
	local name=$1
	shift
	set -m
	("$@" >"$prebuilt/$name.log" 2>&1) &
	bg[$name]=$!
	set +m
}
build_packaging() {
	cd packaging/check && nice -n 19 "$GO" vet ./... && nice -n 19 "$GO" test -c -o "$prebuilt/" . &&
		cd ../../tools/helm && nice -n 19 "$GO" build -o "$prebuilt/helm" helm.sh/helm/v3/cmd/helm &&
		cd ../kustomize && nice -n 19 "$GO" build -o "$prebuilt/kustomize" sigs.k8s.io/kustomize/kustomize/v5
}
build_e2e() {
	cd e2e && nice -n 19 "$GO" vet ./... && nice -n 19 "$GO" test -c -o "$prebuilt/" ./...
}
background packaging build_packaging
if [ "$(id -u)" = 0 ]; then
	background e2e build_e2e
fi

phase vet "$MAKE" --no-print-directory vet
phase fuzz "$MAKE" --no-print-directory fuzz
phase unit "$MAKE" --no-print-directory unit

built() { # name: waits for that background build; its log if it failed.
	local pid=${bg[$1]:-} rc
	[ -n "$pid" ] || return 0
	wait "$pid"
	rc=$?
	unset "bg[$1]"
	if ((rc != 0)); then
		echo "=== compiling the $1 tests failed (exit $rc):"
		cat "$prebuilt/$1.log"
		return "$rc"
	fi
}
phase "(wait: packaging)" built packaging
phase check-packaging "$MAKE" --no-print-directory check-packaging PREBUILT="$prebuilt"
phase "(wait: e2e)" built e2e
use=()
if [ -x "$prebuilt/e2e.test" ]; then
	use=(PREBUILT="$prebuilt")
fi
phase e2e "$MAKE" --no-print-directory e2e "${use[@]}"
phase e2e-container "$MAKE" --no-print-directory e2e-container "${use[@]}"
report
