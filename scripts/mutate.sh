#!/usr/bin/env bash
# Mutation testing (make mutate, make mutate-pure; issue 23): runs gremlins
# (bin/gremlins, built from tools/gremlins) over each package named, prints
# its counts, test efficacy and lived mutants, and at the end the efficacy
# over all of them together, as gremlins reckons it: killed / (killed +
# lived); a timed-out mutant counts in neither.
#
#   scripts/mutate.sh ./conf ./daemon:plan.go,content.go ...
#
# PKG:FILE,FILE mutates only those files of the package (gremlins'
# --exclude-files takes the others out) while the package's whole test
# suite still judges each mutant. Details: bin/mutate-<name>.json and .log.
# MUTATE_RUN, a go test -run pattern, narrows the tests run per mutant (a
# quicker, pessimistic figure: fewer tests kill fewer mutants).
set -euo pipefail
export PATH="$PATH:/usr/local/go/bin"
cd "$(dirname "$0")/.."
GO=${GO:-go}
[ -x bin/gremlins ] || $GO build -C tools/gremlins -o "$PWD/bin/gremlins" github.com/go-gremlins/gremlins/cmd/gremlins
# gremlins times each mutant's run against its coverage run, which go
# test would answer from its cache in a second when nothing changed: every
# slow package's mutants then "timed out" (22 of daemon's 67). -count=1
# makes the coverage run, and so the timeout, real.
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-count=1"
if [ -n "${MUTATE_RUN:-}" ]; then
	export GOFLAGS="${GOFLAGS:+$GOFLAGS }-run=$MUTATE_RUN"
fi

total_killed=0 total_lived=0
for arg in "$@"; do
	pkg=${arg%%:*}
	name=$(basename "$pkg")
	# The fakes tests run against (plugin/plugintest's kubelet,
	# dra/internal/claimdata/claimdatatest) are no code of the daemon's.
	excludes=(--exclude-files '(^|/)[a-z0-9]+test/')
	if [[ "$arg" == *:* ]]; then
		focus=",${arg#*:},"
		name="$name-$(echo "${arg#*:}" | tr ',' '-' | sed 's/\.go//g')"
		excludes+=(--exclude-files '/') # the package's subpackages (paths are the package's own)
		for f in "$pkg"/*.go; do
			b=$(basename "$f")
			[[ "$b" == *_test.go || "$focus" == *",$b,"* ]] && continue
			excludes+=(--exclude-files "(^|/)${b//./\\.}\$")
		done
	fi
	log=bin/mutate-$name.log
	echo "=== $arg"
	if ! bin/gremlins unleash --workers 2 --timeout-coefficient 20 "${excludes[@]}" \
		--output "$PWD/bin/mutate-$name.json" "$pkg" >"$log" 2>&1; then
		cat "$log"
		exit 1
	fi
	# gremlins colours its counts on a terminal only; strip any escape.
	sed -i 's/\x1b\[[0-9;]*m//g' "$log"
	grep -E '^(Killed|Timed out|Test efficacy|Mutator coverage)' "$log"
	grep -E 'LIVED' "$log" || true
	k=$(sed -n 's/^Killed: \([0-9]*\), Lived: \([0-9]*\).*/\1/p' "$log")
	l=$(sed -n 's/^Killed: \([0-9]*\), Lived: \([0-9]*\).*/\2/p' "$log")
	total_killed=$((total_killed + ${k:-0}))
	total_lived=$((total_lived + ${l:-0}))
done
if ((total_killed + total_lived > 0)); then
	awk -v k="$total_killed" -v l="$total_lived" \
		'BEGIN { printf "=== all together: killed %d, lived %d, test efficacy %.2f%%\n", k, l, 100 * k / (k + l) }'
fi
