package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/smarter-project/smarter-device-manager/daemon"
)

// check validates a rule file the way the daemon loads it and prints every
// problem (file:line: field: problem): exit 0 when it would load, 1 when
// not, 2 for a command-line mistake.
func check(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("smarter-device-manager check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "rule file to check; empty: the one the daemon would use (see smarter-device-manager --help)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: smarter-device-manager check [--config FILE]\n\nValidates a rule file and lists every problem.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if code, ok := parseSub(fs, args, stderr); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "smarter-device-manager check: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	cfg, src, err := loadRules(*file, defaultRuleFiles())
	if err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		return exitError
	}
	if src.file == "" {
		fmt.Fprintf(stdout, "no --config and none of %s exists: the embedded default rules\n", strings.Join(defaultRuleFiles(), ", "))
	}
	fmt.Fprintf(stdout, "%s: %d rules, %s: OK\n", cfg.Source, len(cfg.Rules), cfg.Format)
	return exitOK
}

// list is a dry run on this host: every device node, the rule that took
// it (or why none did), and the resource and IDs it would get.
func list(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("smarter-device-manager list", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "rule file; empty: the one the daemon would use (see smarter-device-manager --help)")
	devRoot := fs.String("dev-root", "/dev", "device root to scan")
	sysRoot := fs.String("sys-root", "/sys", "sysfs root")
	runDir := fs.String("run-dir", "/run", "udev's run directory (its database)")
	prefix := fs.String("resource-prefix", "smarter-devices", "resource domain")
	output := fs.String("output", "table", "table|json")
	matched := fs.Bool("matched", false, "only the devices a rule matched (or warned about)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: smarter-device-manager list [flags]\n\n"+
			"A dry run on this host: each device node, the rule that matched it (or why none\n"+
			"did), the resource and the device IDs it would get.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if code, ok := parseSub(fs, args, stderr); !ok {
		return code
	}
	if *output != "table" && *output != "json" {
		fmt.Fprintf(stderr, "smarter-device-manager list: --output: %q is not table or json\n", *output)
		return exitUsage
	}
	cfg, _, err := loadRules(*file, defaultRuleFiles())
	if err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		return exitError
	}
	entries, err := daemon.Plan(daemon.Options{Config: cfg, DevRoot: *devRoot, SysRoot: *sysRoot, RunDir: *runDir, Prefix: *prefix})
	if err != nil {
		fmt.Fprintf(stderr, "smarter-device-manager list: %v\n", err)
		return exitError
	}
	if *matched {
		entries = slices.DeleteFunc(entries, func(e daemon.PlanEntry) bool { return e.Rule == "" && e.Note == "no rule matches" })
	}
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(entries); err != nil {
			fmt.Fprintf(stderr, "smarter-device-manager list: %v\n", err)
			return exitError
		}
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tRESOURCE\tIDS\tRULE\tNOTE")
	for _, e := range entries {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Device, dash(e.Resource), dash(strings.Join(e.IDs, ",")), dash(e.Rule), e.Note)
	}
	tw.Flush()
	return exitOK
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// parseSub applies the environment and then args to a subcommand's
// flags; ok false means return code (0 after --help).
func parseSub(fs *flag.FlagSet, args []string, stderr io.Writer) (code int, ok bool) {
	if err := flagsFromEnv(fs); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return exitUsage, false
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, false
		}
		return exitUsage, false
	}
	return 0, true
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
