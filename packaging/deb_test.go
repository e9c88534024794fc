package packaging

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/smarter-project/smarter-device-manager/internal/testutil"
)

const (
	pkgName  = "smarter-device-manager"
	binPath  = "/usr/bin/smarter-device-manager"
	draPath  = "/usr/bin/smarter-device-manager-dra"
	unitPath = "/lib/systemd/system/smarter-device-manager.service"
	confDir  = "/etc/smarter-device-manager"
	confPath = "/etc/smarter-device-manager/rules.toml"
	unitName = "smarter-device-manager.service"

	// What the test asks scripts/package.sh for, and the version it must
	// make of it (git describe of a dirty tree 4 commits after v1.2.3;
	// deb revision 1).
	testVersion = "v1.2.3-4-gabcdef0-dirty"
	wantVersion = "1.2.3+git4.gabcdef0.dirty-1"
)

// Go's architecture names as dpkg's and rpm's (after nfpm's translation;
// arm is GOARM=7).
var (
	debArch = map[string]string{"amd64": "amd64", "arm64": "arm64", "arm": "armhf", "386": "i386", "ppc64le": "ppc64el"}
	rpmArch = map[string]string{"amd64": "x86_64", "arm64": "aarch64", "arm": "armv7hl", "386": "i386"}
)

// TestDebInstallsAndRemoves builds the .deb and .rpm for this machine's
// architecture with scripts/package.sh (so packaging/nfpm.yaml and the
// maintainer scripts), installs the .deb with dpkg, checks what it put
// where, that a user's edit to the conffile survives a reinstall, and that
// a purge removes everything.
func TestDebInstallsAndRemoves(t *testing.T) {
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		testutil.SkipEnv(t, "SKIPPED: installs a .deb with dpkg: needs root on Linux")
	}
	for _, tool := range []string{"dpkg", "dpkg-deb", "dpkg-query", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			testutil.SkipEnv(t, "SKIPPED: installs a .deb: %s not found (a Debian-family system is needed)", tool)
		}
	}
	wantDeb, ok := debArch[runtime.GOARCH]
	if !ok {
		testutil.SkipEnv(t, "SKIPPED: no known dpkg architecture for GOARCH=%s", runtime.GOARCH)
	}
	if out, err := run(t, time.Minute, nil, "dpkg", "--print-architecture"); err != nil {
		t.Fatalf("dpkg --print-architecture: %v\n%s", err, out)
	} else if got := strings.TrimSpace(out); got != wantDeb {
		testutil.SkipEnv(t, "SKIPPED: dpkg's architecture is %s, a GOARCH=%s build would be %s", got, runtime.GOARCH, wantDeb)
	}
	// Never touch a user's install (nor the conffile of a removed one).
	if st := pkgStatus(t); st != "" && st != "not-installed" {
		testutil.SkipEnv(t, "SKIPPED: package %s is already on this machine (status %q): not touching it", pkgName, st)
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = "/usr/local/go/bin/go"
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	systemd := isDir("/run/systemd/system")

	// From here on the package may get installed: purge it whatever
	// happens. Registered before anything is built or installed.
	t.Cleanup(func() {
		// (Of a package not installed, a purge only warns.)
		if out, err := dpkg(t, "--purge", pkgName); err != nil {
			t.Errorf("cleanup: dpkg --purge %s: %v\n%s", pkgName, err, out)
		}
		if systemd {
			run(t, time.Minute, nil, "systemctl", "unmask", "--runtime", unitName)
			run(t, time.Minute, nil, "systemctl", "daemon-reload")
		}
	})
	if systemd {
		// The postinst would enable and start the daemon on this host (and
		// register devices with a kubelet here): a runtime mask makes that
		// fail, which must only warn, not fail the install.
		if out, err := run(t, time.Minute, nil, "systemctl", "mask", "--runtime", unitName); err != nil {
			t.Fatalf("systemctl mask --runtime: %v\n%s", err, out)
		}
	}

	// The release binaries for this architecture, in make release's layout.
	tmp := t.TempDir()
	dist := filepath.Join(tmp, "dist")
	outDir := filepath.Join(tmp, "out")
	// With make release's tags (BUILDTAGS, DRATAGS): the binaries that
	// ship, and the same build the other static builds of the suite make,
	// so a cold run compiles it once.
	for name, tags := range map[string]string{pkgName: "grpcnotrace,nethttpomithttp2", pkgName + "-dra": "grpcnotrace,dra"} {
		bin := filepath.Join(dist, "linux-"+runtime.GOARCH, name)
		if out, err := run(t, 10*time.Minute, []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=" + runtime.GOARCH, "GOARM=7"},
			goTool, "build", "-C", root, "-trimpath", "-tags="+tags, "-ldflags=-s -w", "-o", bin, "./cmd/smarter-device-manager"); err != nil {
			t.Fatalf("go build %s: %v\n%s", name, err, out)
		}
	}

	// The packages, as make packages builds them.
	if out, err := run(t, 10*time.Minute, []string{"ARCHS=" + runtime.GOARCH, "OUT=" + outDir, "DIST=" + dist, "VERSION=" + testVersion},
		"bash", filepath.Join(root, "scripts", "package.sh")); err != nil {
		t.Fatalf("scripts/package.sh: %v\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(outDir, "*.deb"))
	rpms, _ := filepath.Glob(filepath.Join(outDir, "*.rpm"))
	if len(debs) != 1 || len(rpms) != 1 {
		t.Fatalf("want one .deb and one .rpm in %s, got %q and %q", outDir, debs, rpms)
	}
	deb, rpm := debs[0], rpms[0]
	t.Logf("built %s and %s", filepath.Base(deb), filepath.Base(rpm))

	// The .rpm: an RPM file (the lead's magic), named for its architecture.
	if f, err := os.ReadFile(rpm); err != nil {
		t.Fatal(err)
	} else if !bytes.HasPrefix(f, []byte{0xed, 0xab, 0xee, 0xdb}) {
		t.Errorf("%s does not start with the RPM lead magic ed ab ee db: % x", rpm, f[:min(4, len(f))])
	}
	if a, ok := rpmArch[runtime.GOARCH]; ok && !strings.HasSuffix(rpm, "."+a+".rpm") {
		t.Errorf("rpm file name %s: want architecture %s", filepath.Base(rpm), a)
	}

	// The .deb's control fields.
	for field, want := range map[string]string{"Package": pkgName, "Architecture": wantDeb, "Version": wantVersion} {
		out, err := run(t, time.Minute, nil, "dpkg-deb", "-f", deb, field)
		if err != nil {
			t.Fatalf("dpkg-deb -f %s: %v\n%s", field, err, out)
		}
		if got := strings.TrimSpace(out); got != want {
			t.Errorf("control field %s = %q, want %q", field, got, want)
		}
	}
	if want := "_" + wantDeb + ".deb"; !strings.HasSuffix(deb, want) {
		t.Errorf("deb file name %s: want suffix %s", filepath.Base(deb), want)
	}

	// Install.
	out, err := dpkg(t, "-i", deb)
	if err != nil {
		t.Fatalf("dpkg -i: %v\n%s", err, out)
	}
	if !systemd && !strings.Contains(out, "systemd is not running") {
		t.Errorf("dpkg -i without systemd: want the postinst's how-to-start line, got:\n%s", out)
	}
	if st := pkgStatus(t); st != "installed" {
		t.Fatalf("after dpkg -i: package status %q, want installed", st)
	}

	if out, err := run(t, time.Minute, nil, binPath, "version"); err != nil || !strings.Contains(out, pkgName) {
		t.Errorf("%s version: %v\n%s", binPath, err, out)
	}
	// --mode=dra hands over to the DRA binary installed beside it, which
	// (no API server here) says what it needs.
	if out, err := run(t, time.Minute, nil, binPath, "--mode=dra", "--kubeconfig=/nonexistent/kubeconfig"); err == nil ||
		!strings.Contains(out, "handing over to the DRA binary") || !strings.Contains(out, "DRA mode: the API server") {
		t.Errorf("%s --mode=dra: %v, want the DRA binary's own error about the API server:\n%s", binPath, err, out)
	}
	if out, err := run(t, time.Minute, nil, "dpkg-query", "-W", "-f=${Conffiles}", pkgName); err != nil {
		t.Errorf("dpkg-query Conffiles: %v\n%s", err, out)
	} else if !strings.Contains(out, confPath+" ") {
		t.Errorf("conffiles of %s do not list %s:\n%s", pkgName, confPath, out)
	}
	checkRules := func(when string) {
		t.Helper()
		if out, err := run(t, time.Minute, nil, binPath, "check", "--config", confPath); err != nil {
			t.Errorf("%s: %s check --config %s: %v\n%s", when, binPath, confPath, err, out)
		}
	}
	checkRules("after install")
	// With no --config the installed file is the one used (it comes first
	// in the daemon's default rule files).
	if out, err := run(t, time.Minute, nil, binPath, "check"); err != nil || !strings.Contains(string(out), confPath+":") {
		t.Errorf("%s check (no --config): %v, want it to check %s:\n%s", binPath, err, confPath, out)
	}
	sameFile(t, unitPath, filepath.Join(root, "systemd", unitName))
	sameFile(t, confPath, filepath.Join(root, "packaging", "rules.toml"))
	for _, p := range []string{binPath, draPath} {
		if fi, err := os.Stat(p); err != nil {
			t.Error(err)
		} else if fi.Mode().Perm() != 0o755 {
			t.Errorf("%s mode %v, want 0755", p, fi.Mode().Perm())
		}
	}

	// A user's edit to the conffile survives reinstalling.
	const edit = "# edited by deb_test: must survive a reinstall\n"
	f, err := os.OpenFile(confPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString(edit)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	if out, err := dpkg(t, "-i", "--force-confold", deb); err != nil {
		t.Fatalf("dpkg -i --force-confold (reinstall): %v\n%s", err, out)
	}
	if b, err := os.ReadFile(confPath); err != nil {
		t.Error(err)
	} else if !strings.HasSuffix(string(b), edit) {
		t.Errorf("the edit to %s did not survive a reinstall; now:\n%s", confPath, b)
	}
	checkRules("after reinstall")

	// Purge removes it all, the conffile and its directory included.
	if out, err := dpkg(t, "--purge", pkgName); err != nil {
		t.Fatalf("dpkg --purge: %v\n%s", err, out)
	}
	for _, p := range []string{binPath, draPath, unitPath, confPath, confDir} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("after dpkg --purge, %s: want it gone, got err %v", p, err)
		}
	}
	if st := pkgStatus(t); st != "" && st != "not-installed" {
		t.Errorf("after dpkg --purge: package status %q", st)
	}
}

// run runs a command with extra environment and a timeout, and returns its
// combined output.
func run(t *testing.T, timeout time.Duration, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Env = append(cmd.Env, "DEBIAN_FRONTEND=noninteractive")
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = errors.Join(err, ctx.Err())
	}
	return string(out), err
}

// dpkg runs dpkg, waiting (up to 2 minutes) while another dpkg or apt
// holds its lock.
func dpkg(t *testing.T, args ...string) (string, error) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, err := run(t, 3*time.Minute, nil, "dpkg", args...)
		if err == nil || !strings.Contains(out, "lock") || time.Now().After(deadline) {
			return out, err
		}
		time.Sleep(2 * time.Second)
	}
}

// pkgStatus is dpkg's status of the package ("installed", "config-files",
// "not-installed", ...), or "" if dpkg does not know it.
func pkgStatus(t *testing.T) string {
	t.Helper()
	out, err := run(t, time.Minute, nil, "dpkg-query", "-W", "-f=${db:Status-Status}", pkgName)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

func sameFile(t *testing.T, installed, source string) {
	t.Helper()
	got, err := os.ReadFile(installed)
	if err != nil {
		t.Errorf("installed file: %v", err)
		return
	}
	want, err := os.ReadFile(source)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from %s", installed, source)
	}
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}
