//go:build race

package e2e

// raceEnabled makes TestMain build the daemon with -race too.
const raceEnabled = true
