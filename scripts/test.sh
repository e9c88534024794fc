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
bg=""
cleanup() {
	# Only our own background build, by its PID, and only if it is still ours.
	if [[ "$bg" =~ ^[0-9]+$ ]] && ((bg > 1)) && kill -0 "$bg" 2>/dev/null; then
		kill -- "-$bg" 2>/dev/null || kill "$bg" 2>/dev/null
		wait "$bg" 2>/dev/null
	fi
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
		printf '%-16s %5s\n' "${names[$i]}" "${secs[$i]}"
		total=$((total + secs[i]))
	done
	printf '%-16s %5s\n' total "$total"
}

phase deps "$MAKE" --no-print-directory deps

# The background build: vet (as the e2e and check-packaging targets do)
# and compile the test binaries into $prebuilt; its log is shown only if
# it fails. As a normal user the e2e suite skips anyway: nothing to build.
if [ "$(id -u)" = 0 ]; then
	set -m # its own process group, so cleanup can end all of it
	(
		exec >"$prebuilt/build.log" 2>&1
		cd e2e && nice -n 19 "$GO" vet ./... && nice -n 19 "$GO" test -c -o "$prebuilt/" ./... &&
			cd ../packaging/check && nice -n 19 "$GO" vet ./... && nice -n 19 "$GO" test -c -o "$prebuilt/" .
	) &
	bg=$!
	set +m
fi

phase vet "$MAKE" --no-print-directory vet
phase fuzz "$MAKE" --no-print-directory fuzz
phase unit "$MAKE" --no-print-directory unit

prebuilt_ok() {
	[ -n "$bg" ] || return 0
	wait "$bg"
	local rc=$?
	bg=""
	if ((rc != 0)); then
		echo "=== compiling the e2e and packaging tests failed (exit $rc):"
		cat "$prebuilt/build.log"
		return "$rc"
	fi
}
phase "(wait for build)" prebuilt_ok
use=()
if [ -x "$prebuilt/e2e.test" ]; then
	use=(PREBUILT="$prebuilt")
fi
phase check-packaging "$MAKE" --no-print-directory check-packaging "${use[@]}"
phase e2e "$MAKE" --no-print-directory e2e "${use[@]}"
phase e2e-container "$MAKE" --no-print-directory e2e-container "${use[@]}"
report
