package main

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// A trivial program, built for each platform: real binaries, so the ELF and
// build-info checks see what make release produces.
const tinyMain = `package main

func main() { println("tiny") }
`

// goBuild builds the package or files in args (run in dir) for linux/goarch
// into out, statically.
func goBuild(t *testing.T, dir, goarch, goarm, out string, args ...string) {
	t.Helper()
	goTool, err := exec.LookPath("go") // go test puts GOROOT/bin first in PATH
	if err != nil {
		t.Fatalf("no go command: %v", err)
	}
	cmd := exec.CommandContext(t.Context(), goTool, append([]string{"build", "-trimpath", "-o", out}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch, "GOARM="+goarm, "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s for %s (GOARM=%s): %v\n%s", strings.Join(args, " "), goarch, goarm, err, b)
	}
}

// tinyBinary builds tinyMain for goarch into out.
func tinyBinary(t *testing.T, goarch, goarm, out string) {
	t.Helper()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(tinyMain), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	goBuild(t, src, goarch, goarm, out, "main.go")
}

// fakeDist is a make release layout of tiny binaries: dist/linux-<arch>/.
func fakeDist(t *testing.T) string {
	t.Helper()
	dist := t.TempDir()
	for _, arch := range []string{"amd64", "arm64", "arm"} {
		tinyBinary(t, arch, "7", filepath.Join(dist, "linux-"+arch, binaryName))
	}
	return dist
}

func runTool(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(args, &o, &e, func(k string) string { return env[k] })
	return o.String(), e.String(), code
}

// readOCIArchive unpacks an OCI-layout tarball and checks its file list.
func readOCIArchive(t *testing.T, archive string) layout.Path {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := t.TempDir()
	var names []string
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", archive, err)
		}
		names = append(names, h.Name)
		if h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(time.Unix(0, 0)) {
			t.Errorf("%s: %s: uid %d gid %d mtime %v, want 0 0 epoch", archive, h.Name, h.Uid, h.Gid, h.ModTime)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("%s: %s: unexpected type %c", archive, h.Name, h.Typeflag)
		}
	}
	// oci-layout, index.json, 2 directories, the index, and per image a
	// manifest, a config and a layer.
	if len(names) != 4+1+3*3 || names[0] != "oci-layout" || names[1] != "index.json" || names[2] != "blobs/" || names[3] != "blobs/sha256/" {
		t.Errorf("%s holds %q", archive, names)
	}
	lp, err := layout.FromPath(dir)
	if err != nil {
		t.Fatalf("%s: not an OCI image layout: %v", archive, err)
	}
	return lp
}

// layerFiles is the contents of img's only layer by name.
func layerFiles(t *testing.T, img v1.Image) (map[string]*tar.Header, map[string][]byte) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	if mt, _ := layers[0].MediaType(); mt != types.OCILayer {
		t.Errorf("layer media type %s, want %s", mt, types.OCILayer)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	hdrs, data := map[string]*tar.Header{}, map[string][]byte{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return hdrs, data
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		hdrs[h.Name], data[h.Name] = h, b
	}
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestMultiArchIndex(t *testing.T) {
	dist := fakeDist(t)
	out := t.TempDir()
	archive := filepath.Join(out, "oci.tar")
	stdout, stderr, code := runTool(t, nil, "-dist", dist, "-oci-archive", archive, "-tag", "example.org/sdm:1.2")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}

	lp := readOCIArchive(t, archive)
	top, err := lp.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	tm, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(tm.Manifests) != 1 || tm.Manifests[0].MediaType != types.OCIImageIndex ||
		tm.Manifests[0].Annotations[refNameAnnotation] != "example.org/sdm:1.2" {
		t.Fatalf("index.json: %+v", tm.Manifests)
	}
	idx, err := top.ImageIndex(tm.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	// Every digest and size, and each image's config against its platform.
	if err := validate.Index(idx); err != nil {
		t.Fatalf("invalid index: %v", err)
	}
	if !strings.Contains(stdout, "index            "+tm.Manifests[0].Digest.String()) {
		t.Errorf("stdout does not report the index digest %s:\n%s", tm.Manifests[0].Digest, stdout)
	}

	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if im.MediaType != types.OCIImageIndex {
		t.Errorf("index media type %s", im.MediaType)
	}
	want := []v1.Platform{
		{OS: "linux", Architecture: "amd64"},
		{OS: "linux", Architecture: "arm64"},
		{OS: "linux", Architecture: "arm", Variant: "v7"},
	}
	if len(im.Manifests) != len(want) {
		t.Fatalf("index has %d manifests, want %d", len(im.Manifests), len(want))
	}
	for i, desc := range im.Manifests {
		p := want[i]
		if desc.Platform == nil || !desc.Platform.Equals(p) {
			t.Errorf("manifest %d: platform %v, want %v", i, desc.Platform, p)
			continue
		}
		if desc.MediaType != types.OCIManifestSchema1 || desc.ArtifactType != "" {
			t.Errorf("%s: media type %s, artifactType %q; want an image manifest, no artifactType", p, desc.MediaType, desc.ArtifactType)
		}
		img, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.OS != p.OS || cfg.Architecture != p.Architecture || cfg.Variant != p.Variant {
			t.Errorf("%s: config says %s/%s/%s", p, cfg.OS, cfg.Architecture, cfg.Variant)
		}
		if len(cfg.Config.Entrypoint) != 1 || cfg.Config.Entrypoint[0] != "/smarter-device-manager" || cfg.Config.WorkingDir != "/root" {
			t.Errorf("%s: entrypoint %q, workdir %q", p, cfg.Config.Entrypoint, cfg.Config.WorkingDir)
		}
		if !cfg.Created.Equal(time.Unix(0, 0)) {
			t.Errorf("%s: created %v, want the epoch", p, cfg.Created)
		}

		hdrs, data := layerFiles(t, img)
		bin, err := os.ReadFile(filepath.Join(dist, "linux-"+p.Architecture, binaryName))
		if err != nil {
			t.Fatal(err)
		}
		h := hdrs["smarter-device-manager"]
		if h == nil || h.Typeflag != tar.TypeReg || h.Mode != 0o755 || h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s: /smarter-device-manager entry %+v, want a 0755 root file", p, h)
		} else if !bytes.Equal(data["smarter-device-manager"], bin) {
			t.Errorf("%s: /smarter-device-manager differs from the input binary", p)
		}
		if d := hdrs["root/"]; d == nil || d.Typeflag != tar.TypeDir || d.Mode != 0o755 {
			t.Errorf("%s: /root entry %+v, want a 0755 directory", p, d)
		}
		if len(hdrs) != 2 {
			t.Errorf("%s: layer holds %d entries, want 2", p, len(hdrs))
		}
	}

	// Pushed as `crane push LAYOUT REF` does (a layout whose index.json
	// names one index pushes that index): the registry serves the same
	// digest, and each platform resolves to its own image.
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	ref, err := name.ParseReference(strings.TrimPrefix(reg.URL, "http://") + "/sdm:1.2")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx, remote.WithContext(t.Context())); err != nil {
		t.Fatalf("push to a registry: %v", err)
	}
	pushed, err := remote.Index(ref, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatal(err)
	}
	if d, err := pushed.Digest(); err != nil || d != tm.Manifests[0].Digest {
		t.Errorf("the registry serves index %v (%v), want %v", d, err, tm.Manifests[0].Digest)
	}
	for _, p := range want {
		img, err := remote.Image(ref, remote.WithPlatform(p), remote.WithContext(t.Context()))
		if err != nil {
			t.Fatalf("pull %s: %v", p, err)
		}
		if cfg, err := img.ConfigFile(); err != nil || cfg.Architecture != p.Architecture || cfg.Variant != p.Variant {
			t.Errorf("pull %s: config %+v (%v)", p, cfg, err)
		}
	}

	// One platform as a docker load tarball, and one not built refused.
	dockerTar := filepath.Join(out, "docker.tar")
	if _, stderr, code := runTool(t, nil, "-dist", dist, "-docker-archive", dockerTar, "-docker-platform", "linux/arm/v7", "-tag", "sdm:arm"); code != exitOK {
		t.Fatalf("-docker-archive: exit %d: %s", code, stderr)
	}
	if img, err := tarball.ImageFromPath(dockerTar, nil); err != nil {
		t.Errorf("docker archive: %v", err)
	} else if cfg, err := img.ConfigFile(); err != nil || cfg.Architecture != "arm" || cfg.Variant != "v7" {
		t.Errorf("docker archive for linux/arm/v7: config %+v (%v)", cfg, err)
	}
	if _, stderr, code := runTool(t, nil, "-dist", dist, "-docker-archive", dockerTar, "-docker-platform", "linux/s390x"); code != exitError || !strings.Contains(stderr, "not among") {
		t.Errorf("-docker-platform linux/s390x: exit %d, %q", code, stderr)
	}

	// Reproducible: the same binaries give the same digests, and the same
	// archive byte for byte.
	again := filepath.Join(out, "oci-again.tar")
	stdout2, stderr, code := runTool(t, nil, "-dist", dist, "-oci-archive", again, "-tag", "example.org/sdm:1.2")
	if code != exitOK {
		t.Fatalf("second run: exit %d: %s", code, stderr)
	}
	if stdout2 != strings.ReplaceAll(stdout, archive, again) {
		t.Errorf("digests differ between two runs:\n%s\n%s", stdout, stdout2)
	}
	if a, b := fileSHA256(t, archive), fileSHA256(t, again); a != b {
		t.Errorf("archives differ: sha256 %s, then %s", a, b)
	}
	if d2, err := readOCIArchive(t, again).ImageIndex(); err != nil {
		t.Fatal(err)
	} else if m2, err := d2.IndexManifest(); err != nil || m2.Manifests[0].Digest != tm.Manifests[0].Digest {
		t.Errorf("index digest %v (%v), then %v", tm.Manifests[0].Digest, err, m2)
	}

	// SOURCE_DATE_EPOCH sets the timestamps, so it changes the digest.
	stdout3, stderr, code := runTool(t, map[string]string{"SOURCE_DATE_EPOCH": "1700000000"}, "-dist", dist, "-platforms", "linux/amd64")
	if code != exitOK {
		t.Fatalf("SOURCE_DATE_EPOCH run: exit %d: %s", code, stderr)
	}
	amd64Line := func(s string) string { l, _, _ := strings.Cut(s, "\n"); return l }
	if !strings.HasPrefix(stdout3, "linux/amd64 ") || amd64Line(stdout3) == amd64Line(stdout) {
		t.Errorf("SOURCE_DATE_EPOCH did not change the linux/amd64 digest:\n%s\n%s", stdout, stdout3)
	}
	if got, err := sourceDateEpoch("1700000000"); err != nil || !got.Equal(time.Unix(1700000000, 0)) {
		t.Errorf("sourceDateEpoch(1700000000) = %v, %v", got, err)
	}
}

func TestRefusesMislabelledBinary(t *testing.T) {
	dist := t.TempDir()
	// An amd64 binary filed as arm64: the classic multi-arch mistake.
	tinyBinary(t, "amd64", "", filepath.Join(dist, "linux-amd64", binaryName))
	tinyBinary(t, "amd64", "", filepath.Join(dist, "linux-arm64", binaryName))
	tinyBinary(t, "arm", "7", filepath.Join(dist, "linux-arm", binaryName))
	out := filepath.Join(t.TempDir(), "oci.tar")
	_, stderr, code := runTool(t, nil, "-dist", dist, "-oci-archive", out)
	wrong := filepath.Join(dist, "linux-arm64", binaryName)
	if code != exitError || !strings.Contains(stderr, wrong) || !strings.Contains(stderr, "EM_X86_64") || !strings.Contains(stderr, "EM_AARCH64") {
		t.Errorf("exit %d, stderr %q; want 1 and an error naming %s, EM_X86_64 and EM_AARCH64", code, stderr, wrong)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an archive was written all the same: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(out)); len(entries) != 0 {
		t.Errorf("left behind: %v", entries)
	}

	// The right machine but the wrong GOARM: a GOARM=6 binary is no v7 image.
	tinyBinary(t, "arm", "6", filepath.Join(dist, "linux-arm", binaryName))
	_, err := assemble(dist, []v1.Platform{{OS: "linux", Architecture: "arm", Variant: "v7"}}, time.Unix(0, 0))
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dist, "linux-arm", binaryName)) || !strings.Contains(err.Error(), "GOARM=6") {
		t.Errorf("GOARM=6 binary as linux/arm/v7: %v", err)
	}
	// A 32-bit arm binary is no arm64 one either.
	tinyBinary(t, "arm", "7", filepath.Join(dist, "linux-arm64", binaryName))
	if _, err := assemble(dist, []v1.Platform{{OS: "linux", Architecture: "arm64"}}, time.Unix(0, 0)); err == nil || !strings.Contains(err.Error(), "EM_ARM") {
		t.Errorf("arm binary as linux/arm64: %v", err)
	}

	// Missing binary: named, with the make target that builds it.
	_, err = assemble(t.TempDir(), []v1.Platform{{OS: "linux", Architecture: "amd64"}}, time.Unix(0, 0))
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "make release") {
		t.Errorf("missing binary: %v", err)
	}
	// Not an ELF file at all.
	junk := t.TempDir()
	if err := os.MkdirAll(filepath.Join(junk, "linux-amd64"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(junk, "linux-amd64", binaryName), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := assemble(junk, []v1.Platform{{OS: "linux", Architecture: "amd64"}}, time.Unix(0, 0)); err == nil || !strings.Contains(err.Error(), "not an ELF") {
		t.Errorf("shell script as a binary: %v", err)
	}
}

// A dynamically linked binary would fail FROM scratch with a baffling
// "no such file or directory": refused. /bin/ls is one on any distribution.
func TestRefusesDynamicBinary(t *testing.T) {
	ls, err := os.ReadFile("/bin/ls")
	if err != nil || runtime.GOOS != "linux" {
		skipEnv(t, "skipping: no /bin/ls to serve as a dynamically linked binary")
	}
	dist := t.TempDir()
	p := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	if p.Architecture == "arm" {
		p.Variant = "v7"
	}
	if err := os.MkdirAll(filepath.Dir(binaryPath(dist, p)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(binaryPath(dist, p), ls, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := assemble(dist, []v1.Platform{p}, time.Unix(0, 0)); err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Errorf("/bin/ls as the daemon: %v", err)
	}
}

func TestArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  string
		want string
	}{
		{args: []string{"-platforms", "linux/arm"}, want: "needs a variant"},
		{args: []string{"-platforms", "windows/amd64"}, want: "only linux"},
		{args: []string{"-platforms", "linux/mips"}, want: "architecture"},
		{args: []string{"-platforms", "linux/amd64,linux/amd64"}, want: "twice"},
		{args: []string{"-platforms", ","}, want: "no platform"},
		{args: []string{"-tag", "Not A Tag"}, want: "-tag"},
		{args: []string{"-docker-platform", "linux/amd64"}, want: "needs -docker-archive"},
		{args: []string{"extra"}, want: "unexpected argument"},
		{env: "yesterday", want: "SOURCE_DATE_EPOCH"},
		{env: "-5", want: "SOURCE_DATE_EPOCH"},
	} {
		_, stderr, code := runTool(t, map[string]string{"SOURCE_DATE_EPOCH": tc.env}, tc.args...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("%q SOURCE_DATE_EPOCH=%q: exit %d, %q; want 2 and %q", tc.args, tc.env, code, stderr, tc.want)
		}
	}
	if _, stderr, code := runTool(t, nil, "-h"); code != exitOK || !strings.Contains(stderr, "-oci-archive") {
		t.Errorf("-h: exit %d, %q", code, stderr)
	}
}

// The image the Dockerfile would build, loaded into this machine's docker
// and run: it must be the daemon, and it must start.
func TestDockerRunsDaemon(t *testing.T) {
	if os.Geteuid() != 0 {
		skipEnv(t, "skipping the docker check: it needs root")
	}
	if _, err := exec.LookPath("docker"); err != nil {
		skipEnv(t, "skipping the docker check: no docker command here")
	}
	if b, err := exec.CommandContext(t.Context(), "docker", "info").CombinedOutput(); err != nil {
		skipEnv(t, "skipping the docker check: `docker info` failed (%v): %s", err, firstLine(b))
	}

	// The real daemon, built from this repository as make release does.
	p := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	goarm := ""
	if p.Architecture == "arm" {
		p.Variant, goarm = "v7", "7"
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dist := t.TempDir()
	// make release's build (BUILDFLAGS): what ships, compiled once with the
	// suite's other static builds of it.
	goBuild(t, root, runtime.GOARCH, goarm, binaryPath(dist, p), "-tags=grpcnotrace,nethttpomithttp2", "-ldflags=-s -w", "./cmd/smarter-device-manager")

	suffix := make([]byte, 6)
	if _, err := rand.Read(suffix); err != nil {
		t.Fatal(err)
	}
	tag := "smarter-device-manager-ocitest:" + hex.EncodeToString(suffix)
	archive := filepath.Join(t.TempDir(), "docker.tar")
	if _, stderr, code := runTool(t, nil, "-dist", dist, "-platforms", p.String(), "-tag", tag, "-docker-archive", archive); code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}

	docker := func(args ...string) (string, error) {
		b, err := exec.CommandContext(t.Context(), "docker", args...).CombinedOutput()
		return string(b), err
	}
	if out, err := docker("load", "-i", archive); err != nil {
		t.Fatalf("docker load: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		// t.Context is done by now.
		if b, err := exec.Command("docker", "rmi", tag).CombinedOutput(); err != nil {
			t.Errorf("docker rmi %s: %v\n%s", tag, err, b)
		}
	})
	out, err := docker("image", "inspect", "-f", "{{.Os}}/{{.Architecture}} {{json .Config.Entrypoint}} {{.Config.WorkingDir}}", tag)
	if err != nil {
		t.Fatalf("docker image inspect: %v\n%s", err, out)
	}
	if want := "linux/" + runtime.GOARCH + ` ["/smarter-device-manager"] /root`; strings.TrimSpace(out) != want {
		t.Errorf("docker image inspect: %q, want %q", strings.TrimSpace(out), want)
	}
	out, err = docker("run", "--rm", "--network=none", tag, "version")
	if err != nil {
		t.Fatalf("docker run %s version: %v\n%s", tag, err, out)
	}
	if !strings.Contains(out, "smarter-device-manager") || !strings.Contains(out, "go1.") {
		t.Errorf("docker run %s version: %q, want the daemon's version line", tag, out)
	}
	t.Logf("docker run %s version: %s", tag, strings.TrimSpace(out))
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return s
}

// The DRA binary, where make release put one beside the daemon's, is in
// the image too (--mode=dra runs it from there), checked like it: one for
// another machine is refused.
func TestDRABinaryBeside(t *testing.T) {
	dist := t.TempDir()
	p := v1.Platform{OS: "linux", Architecture: "amd64"}
	tinyBinary(t, "amd64", "", filepath.Join(dist, "linux-amd64", binaryName))
	tinyBinary(t, "amd64", "", filepath.Join(dist, "linux-amd64", draBinaryName))
	a, err := assemble(dist, []v1.Platform{p}, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	hdrs, data := layerFiles(t, a.images[0].image)
	want, _ := os.ReadFile(filepath.Join(dist, "linux-amd64", draBinaryName))
	if h := hdrs[draBinaryName]; h == nil || h.Mode != 0o755 || !bytes.Equal(data[draBinaryName], want) || len(hdrs) != 3 {
		t.Errorf("layer %v; want %s (0755, the input binary) beside the daemon's and /root", hdrs, draBinaryName)
	}
	tinyBinary(t, "arm64", "", filepath.Join(dist, "linux-amd64", draBinaryName))
	if _, err := assemble(dist, []v1.Platform{p}, time.Unix(0, 0)); err == nil || !strings.Contains(err.Error(), draBinaryName) {
		t.Errorf("an arm64 DRA binary in the amd64 image: %v", err)
	}
}

// skipEnv is the daemon module's testutil.SkipEnv (this module does not
// import that one): a lack of this machine's skips the test, fails it
// under SDM_TEST_STRICT=1 (.ci/run), and is logged to SDM_TEST_SKIPLOG for
// make test's summary.
func skipEnv(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("SDM_TEST_STRICT") == "1" {
		t.Fatalf("%s did not run, and CI's machine must run it (SDM_TEST_STRICT=1): %s", t.Name(), msg)
	}
	if log := os.Getenv("SDM_TEST_SKIPLOG"); log != "" {
		if f, err := os.OpenFile(log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); err == nil {
			fmt.Fprintf(f, "%s: %s\n", t.Name(), strings.ReplaceAll(msg, "\n", " "))
			f.Close()
		}
	}
	t.Skip(msg)
}
