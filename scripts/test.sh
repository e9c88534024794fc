#!/usr/bin/env bash
# make test (and so .ci/run): every phase of the suite in order, each
# timed, a table of the times at the end. What makes it faster than the
# phases one after another: the other modules' test binaries (e2e/,
# packaging/check/: Kubernetes, containerd) and the tools they run (helm,
# kustomize) are vetted and compiled in the background, at nice 19, from
# the end of vet on, so they use the CPU the fuzz and unit tests leave
# idle while they wait on sockets, timers and the kernel, and yield it
# whenever the foreground wants it. Their phases then run those binaries
# instead of linking them again (docs/development.md has the figures).
# Nothing is skipped that `make deps vet fuzz unit check-packaging e2e
# e2e-container` would run.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
MAKE=${MAKE:-make}
GO=${GO:-go}

prebuilt=$(mktemp -d "${TMPDIR:-/tmp}/sdm-test-bin.XXXXXX") || exit 1
# Every test that skips for want of a part this machine lacks writes a
# line here (testutil.SkipEnv); the summary at the end lists them. Under
# SDM_TEST_STRICT=1 (.ci/run) such a skip fails its test instead.
export SDM_TEST_SKIPLOG="$prebuilt/skipped.log"
if [ "${SDM_TEST_STRICT:-}" = 1 ] && [ "$(id -u)" != 0 ]; then
	echo "SDM_TEST_STRICT=1 (CI): make test must run as root, or the kernel, e2e and container suites do not run" >&2
	exit 1
fi
bg="" # the background build's PID
cleanup() {
	# Only our own background build, by its PID, and only while it runs.
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
		printf '%-18s %5s\n' "${names[$i]}" "${secs[$i]}"
		total=$((total + secs[i]))
	done
	printf '%-18s %5s\n' total "$total"
	skipped
}
skipped() { # one line: the tests that did not run here, and why.
	local n=0 list=""
	if [ -s "$SDM_TEST_SKIPLOG" ]; then
		n=$(sort -u "$SDM_TEST_SKIPLOG" | wc -l)
		list=$(sort -u "$SDM_TEST_SKIPLOG" | paste -sd ';' - | sed 's/;/; /g')
	fi
	if ((n == 0)); then
		echo "=== skipped for want of a part of this machine: none"
	else
		echo "=== skipped for want of a part of this machine ($n, they did not run): $list"
	fi
}

phase deps "$MAKE" --no-print-directory deps

# The background build, in its own process group (so cleanup ends all of
# it), at nice 19, logging to $prebuilt/build.log, shown only on a failure:
# the e2e module's test binaries, vetted first as its make target does,
# then helm and kustomize, which the packaging and e2e tests build into
# bin/ (then only linked), then the packaging module's. One after the
# other, and only once vet has compiled the daemon's module: concurrent go
# commands would each compile what they share (client-go and the API types
# are the same build in all three), where one after the other the later
# finds it in the cache. As a normal user the e2e suite skips: not built.
build_others() {
	local rc=0
	if [ "$(id -u)" = 0 ]; then
		(cd e2e && nice -n 19 "$GO" vet ./... && nice -n 19 "$GO" test -c -o "$prebuilt/" ./...) || rc=$?
	fi
	# The e2e phases start on this; the rest builds while they run.
	echo "$rc" >"$prebuilt/e2e.rc"
	((rc == 0)) || return "$rc"
	# helm and kustomize first: the e2e suite's last test builds them too
	# (then it only links them).
	nice -n 19 "$GO" build -C tools/helm -o "$prebuilt/helm" helm.sh/helm/v3/cmd/helm &&
		nice -n 19 "$GO" build -C tools/kustomize -o "$prebuilt/kustomize" sigs.k8s.io/kustomize/kustomize/v5 &&
		(cd packaging/check && nice -n 19 "$GO" vet ./... && nice -n 19 "$GO" test -c -o "$prebuilt/" .)
}

phase vet "$MAKE" --no-print-directory vet
set -m
(build_others >"$prebuilt/build.log" 2>&1) &
bg=$!
set +m
phase fuzz "$MAKE" --no-print-directory fuzz
phase unit "$MAKE" --no-print-directory unit

failed_build() { # the background build's log, and its exit status.
	echo "=== compiling the e2e and packaging tests failed (exit $1):"
	cat "$prebuilt/build.log"
	return "$1"
}
e2e_built() { # waits until the e2e test binaries are built (or failed).
	local rc
	while ! [ -s "$prebuilt/e2e.rc" ] && kill -0 "$bg" 2>/dev/null; do
		sleep 0.2
	done
	rc=$(cat "$prebuilt/e2e.rc" 2>/dev/null)
	[ -n "$rc" ] || { built; return; } # ended before writing it
	((rc == 0)) || failed_build "$rc"
}
built() { # waits for the whole background build.
	local rc
	[ -n "$bg" ] || return 0
	wait "$bg"
	rc=$?
	bg=""
	((rc == 0)) || failed_build "$rc"
}
# The e2e phases mostly wait (on the kubelet, the API server, sockets and
# timers: 18 CPU-seconds in 72 s): the packaging tests, helm and
# kustomize compile meanwhile, and check-packaging runs last.
phase "(wait for e2e build)" e2e_built
use=()
if [ -x "$prebuilt/e2e.test" ]; then
	use=(PREBUILT="$prebuilt")
fi
phase e2e "$MAKE" --no-print-directory e2e "${use[@]}"
phase e2e-container "$MAKE" --no-print-directory e2e-container "${use[@]}"
phase "(wait for build)" built
phase check-packaging "$MAKE" --no-print-directory check-packaging PREBUILT="$prebuilt"
report
