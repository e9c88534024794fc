// Command ociimage assembles the smarter-device-manager container image for
// several platforms at once (make image-multiarch), without buildx or a
// registry: from the static release binaries (make release) it builds, for
// each platform, the image the Dockerfile describes (FROM scratch, the binary
// at /smarter-device-manager, WORKDIR /root, that ENTRYPOINT), then an OCI
// image index over them, and writes it as an OCI image-layout tarball that
// skopeo, crane or oras can push:
//
//	skopeo copy --all oci-archive:dist/smarter-device-manager-oci.tar docker://REGISTRY/smarter-device-manager:TAG
//
// or, unpacked (crane reads a layout directory, not a tarball; without
// --index it pushes the one index that index.json names):
//
//	mkdir layout && tar xf dist/smarter-device-manager-oci.tar -C layout
//	crane push layout REGISTRY/smarter-device-manager:TAG
//
// -docker-archive writes one platform as a tarball `docker load` accepts.
//
// The output is reproducible: every timestamp is SOURCE_DATE_EPOCH (0 when
// unset), so the same binaries give the same digests. Each binary's ELF
// machine (and, for Go binaries, its GOOS/GOARCH/GOARM) must match the
// platform it is filed under: a mislabelled image is refused, not built.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

// config is what the flags and the environment ask for.
type config struct {
	dist           string
	platforms      []v1.Platform
	tag            string
	created        time.Time
	ociArchive     string
	dockerArchive  string
	dockerPlatform *v1.Platform // nil: the platform of this machine's architecture
}

func run(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	cfg, err := parseArgs(args, stderr, getenv)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "ociimage: %v\n", err)
		return exitUsage
	}
	if err := assembleAndWrite(cfg, stdout); err != nil {
		fmt.Fprintf(stderr, "ociimage: %v\n", err)
		return exitError
	}
	return exitOK
}

func parseArgs(args []string, stderr io.Writer, getenv func(string) string) (config, error) {
	fs := flag.NewFlagSet("ociimage", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config
	fs.StringVar(&cfg.dist, "dist", "dist", "`dir`ectory holding <os>-<arch>/smarter-device-manager (make release)")
	platforms := fs.String("platforms", "linux/amd64,linux/arm64,linux/arm/v7", "comma-separated `platforms` of the image index")
	fs.StringVar(&cfg.tag, "tag", "smarter-device-manager:latest", "image `name`: the org.opencontainers.image.ref.name annotation, and the docker archive's tag")
	fs.StringVar(&cfg.ociArchive, "oci-archive", "", "write the index as an OCI image-layout tarball to `file` (skopeo copy --all oci-archive:FILE ...)")
	fs.StringVar(&cfg.dockerArchive, "docker-archive", "", "write one platform's image as a `docker load` tarball to `file`")
	dockerPlatform := fs.String("docker-platform", "", "the `platform` -docker-archive writes (default: the one of this machine's architecture, "+runtime.GOARCH+")")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: ociimage [flags]\n\nAssembles the multi-platform smarter-device-manager image from release binaries.\nTimestamps are SOURCE_DATE_EPOCH (default 0).\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}

	var err error
	if cfg.platforms, err = parsePlatforms(*platforms); err != nil {
		return config{}, fmt.Errorf("-platforms: %w", err)
	}
	if _, err := name.NewTag(cfg.tag); err != nil {
		return config{}, fmt.Errorf("-tag: %w", err)
	}
	if *dockerPlatform != "" {
		if cfg.dockerArchive == "" {
			return config{}, errors.New("-docker-platform needs -docker-archive")
		}
		if cfg.dockerPlatform, err = v1.ParsePlatform(*dockerPlatform); err != nil {
			return config{}, fmt.Errorf("-docker-platform: %w", err)
		}
	}
	if cfg.created, err = sourceDateEpoch(getenv("SOURCE_DATE_EPOCH")); err != nil {
		return config{}, err
	}
	return cfg, nil
}

// parsePlatforms parses os/arch[/variant],... and refuses duplicates and
// architectures whose binaries it cannot check.
func parsePlatforms(s string) ([]v1.Platform, error) {
	var ps []v1.Platform
	seen := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := v1.ParsePlatform(f)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", f, err)
		}
		if err := checkPlatform(*p); err != nil {
			return nil, fmt.Errorf("%q: %w", f, err)
		}
		if seen[p.String()] {
			return nil, fmt.Errorf("%q: listed twice", f)
		}
		seen[p.String()] = true
		ps = append(ps, *p)
	}
	if len(ps) == 0 {
		return nil, errors.New("no platform given")
	}
	return ps, nil
}

// sourceDateEpoch is the time every timestamp in the image is set to.
func sourceDateEpoch(v string) (time.Time, error) {
	if v == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	sec, err := strconv.ParseInt(v, 10, 64)
	// A tar header's mtime field holds 11 octal digits: up to the year 2514.
	if err != nil || sec < 0 || sec >= 1<<33 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: not a Unix time in seconds", v)
	}
	return time.Unix(sec, 0).UTC(), nil
}

// assembleAndWrite builds the images and writes the archives asked for.
func assembleAndWrite(cfg config, stdout io.Writer) error {
	a, err := assemble(cfg.dist, cfg.platforms, cfg.created)
	if err != nil {
		return err
	}
	for _, pi := range a.images {
		d, err := pi.image.Digest()
		if err != nil {
			return fmt.Errorf("%s: %w", pi.platform, err)
		}
		fmt.Fprintf(stdout, "%-16s %s  %s\n", pi.platform.String(), d, pi.binary)
	}
	d, err := a.index.Digest()
	if err != nil {
		return fmt.Errorf("image index: %w", err)
	}
	fmt.Fprintf(stdout, "%-16s %s  %s\n", "index", d, cfg.tag)

	if cfg.ociArchive != "" {
		if err := writeFileAtomic(cfg.ociArchive, func(w io.Writer) error {
			return writeOCIArchive(w, a.index, cfg.tag, cfg.created)
		}); err != nil {
			return fmt.Errorf("-oci-archive: %w", err)
		}
		fmt.Fprintf(stdout, "wrote %s (OCI image layout, %d platforms)\n", cfg.ociArchive, len(a.images))
	}
	if cfg.dockerArchive != "" {
		pi, err := a.pick(cfg.dockerPlatform, runtime.GOARCH)
		if err != nil {
			return fmt.Errorf("-docker-platform: %w", err)
		}
		if err := writeFileAtomic(cfg.dockerArchive, func(w io.Writer) error {
			return writeDockerArchive(w, pi.image, cfg.tag)
		}); err != nil {
			return fmt.Errorf("-docker-archive: %w", err)
		}
		fmt.Fprintf(stdout, "wrote %s (docker load, %s, %s)\n", cfg.dockerArchive, pi.platform, cfg.tag)
	}
	return nil
}
