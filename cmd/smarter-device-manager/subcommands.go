package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/smarter-project/smarter-device-manager/conf"
)

// check validates a rule file the way the daemon loads it and prints every
// problem (file:line: field: problem): exit 0 when it would load, 1 when
// not, 2 for a command-line mistake.
func check(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("smarter-device-manager check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "rule file to check; empty: the embedded default rules")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: smarter-device-manager check [--config FILE]\n\nValidates a rule file and lists every problem.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := flagsFromEnv(fs); err != nil {
		fmt.Fprintf(stderr, "smarter-device-manager check: %v\n", err)
		return exitUsage
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "smarter-device-manager check: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	cfg := conf.Default()
	if *file != "" {
		var err error
		if cfg, err = conf.Load(*file); err != nil {
			fmt.Fprintf(stderr, "%v\n", err)
			return exitError
		}
	}
	fmt.Fprintf(stdout, "%s: %d rules, %s: OK\n", cfg.Source, len(cfg.Rules), cfg.Format)
	return exitOK
}

// version names the build: the module version (or VCS revision) and Go.
func version() string {
	v := "(devel)"
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && v == "(devel)" {
				v = "revision " + s.Value
			}
		}
	}
	return fmt.Sprintf("smarter-device-manager %s, %s %s/%s", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
