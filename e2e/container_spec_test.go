package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/containerd/containerd/v2/core/containers"
	containerdcdi "github.com/containerd/containerd/v2/pkg/cdi"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	runtimespec "github.com/opencontainers/runtime-spec/specs-go"
	"k8s.io/kubernetes/pkg/kubelet/cm/devicemanager"
	kubecontainer "k8s.io/kubernetes/pkg/kubelet/container"
	"tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/smarter-project/smarter-device-manager/internal/testutil"
)

// The container tests run what the kubelet hands the runtime for a pod
// (GetDeviceRunContainerOptions) through the container runtime's own spec
// code, containerd's pkg/oci and pkg/cdi as its CRI plugin calls them, into
// a real runc, and ask a process inside (probe/) what it can open.

// runcPath is the OCI runtime: Debian's runc (scripts/test-deps.sh
// installs it).
const runcPath = "/usr/sbin/runc"

// cgroupParent holds the containers' cgroups, below the root of every
// hierarchy, as kubelet's kubepods does.
const cgroupParent = "/sdm-e2e"

// probeBin is the static test program (probe/run) that is each
// container's whole root filesystem, built once.
var probeBin struct {
	once sync.Once
	path string
	err  error
	dir  string // removed by TestMain
}

// ctrSeq numbers the containers of this process.
var ctrSeq atomic.Int64

// requireContainers skips the test unless it can run containers here:
// root, runc, and a device cgroup (v1's devices controller, or cgroup v2,
// where runc installs an eBPF device filter); and builds the probe.
func requireContainers(t *testing.T) {
	t.Helper()
	requireSuite(t)
	if _, err := os.Stat(runcPath); err != nil {
		testutil.SkipEnv(t, "skipping: no runc at %s (scripts/test-deps.sh installs Debian's runc): %v", runcPath, err)
	}
	_, v1err := os.Stat("/sys/fs/cgroup/devices/devices.allow")
	_, v2err := os.Stat("/sys/fs/cgroup/cgroup.controllers")
	if v1err != nil && v2err != nil {
		testutil.SkipEnv(t, "skipping: no device cgroup (neither /sys/fs/cgroup/devices nor cgroup v2): a container could open any node")
	}
	probeBin.once.Do(func() {
		probeBin.dir, probeBin.err = os.MkdirTemp("", "sdm-e2e-probe")
		if probeBin.err != nil {
			return
		}
		probeBin.path = filepath.Join(probeBin.dir, "probe")
		cmd := exec.Command(goTool(), "build", "-trimpath", "-o", probeBin.path, "./probe/run")
		// Static: the binary is the container's whole root filesystem.
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			probeBin.err = fmt.Errorf("building the probe: %w\n%s", err, out)
			return
		}
		fmt.Println("CONTAINER runtime:", runtimeVersions())
	})
	if probeBin.err != nil {
		t.Fatal(probeBin.err)
	}
}

// runtimeVersions says whose behaviour the suite reproduces: runc's
// version, the device cgroup, and the containerd and CDI modules the spec
// is built with (from go.mod: a test binary carries no dependency
// versions).
func runtimeVersions() string {
	out, _ := exec.Command(runcPath, "--version").Output()
	runc, _, _ := strings.Cut(string(out), "\n")
	cgroup := "cgroup v1 devices controller"
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		cgroup = "cgroup v2 (eBPF device filter)"
	}
	mod, _ := os.ReadFile("go.mod")
	version := func(path string) string {
		m := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(path) + `\s+(\S+)`).FindSubmatch(mod)
		if m == nil {
			return "?"
		}
		return string(m[1])
	}
	return fmt.Sprintf("%s, %s; spec from containerd %s pkg/oci and pkg/cdi, CDI library %s", runc, cgroup,
		version("github.com/containerd/containerd/v2"), version("tags.cncf.io/container-device-interface"))
}

// podSecurity is the part of a pod's securityContext, and of containerd's
// configuration, that decides what a non-root process may open.
type podSecurity struct {
	// RunAsUser and RunAsGroup; nil runs as root (0:0).
	runAsUser, runAsGroup *uint32
	// supplementalGroups of the pod.
	supplementalGroups []uint32
	// deviceOwnership is containerd's device_ownership_from_security_context:
	// the nodes of non-CDI devices are owned by the runAsUser/runAsGroup.
	deviceOwnership bool
}

func ptr[T any](v T) *T { return &v }

// ctrSpec builds the OCI spec for one container of a pod the way
// containerd 2.x's CRI plugin does (internal/cri/server/container_create*.go),
// from the kubelet's run options: containerd's default spec, the
// environment and mounts, the devices (withCRIDevices), the user and its
// groups, and the CDI devices injected by containerd's own pkg/cdi option.
// cdiDir is the spec directory containerd's CDI cache reads; bundle
// holds the root filesystem, rootfs.
func ctrSpec(id, bundle string, opts *devicemanager.DeviceRunContainerOptions, sec podSecurity, cdiDir string) (*oci.Spec, error) {
	// containerd's CRI plugin works in the k8s.io namespace.
	ctx := namespaces.WithNamespace(context.Background(), "k8s.io")
	var env []string
	for _, e := range opts.Envs {
		env = append(env, e.Name+"="+e.Value)
	}
	// The kubelet's mounts become CRI mounts with private propagation,
	// which the CRI plugin turns into rbind mounts (withMounts).
	var mounts []runtimespec.Mount
	for _, m := range opts.Mounts {
		mode := "rw"
		if m.ReadOnly {
			mode = "ro"
		}
		src, err := filepath.EvalSymlinks(m.HostPath)
		if err != nil {
			return nil, err
		}
		mounts = append(mounts, runtimespec.Mount{Source: src, Destination: m.ContainerPath, Type: "bind", Options: []string{"rbind", "rprivate", mode}})
	}
	user := "0"
	if sec.runAsUser != nil {
		user = fmt.Sprint(*sec.runAsUser)
		if sec.runAsGroup != nil {
			user += fmt.Sprintf(":%d", *sec.runAsGroup)
		}
	}
	specOpts := []oci.SpecOpts{
		oci.WithRootFSPath(filepath.Join(bundle, "rootfs")),
		oci.WithProcessArgs("/probe"),
		oci.WithDefaultPathEnv,
		oci.WithEnv(env),
		oci.WithMounts(mounts),
		withCRIDevices(opts.Devices, sec),
		// containerd's default set has it already; case 2 depends on it.
		oci.WithAddedCapabilities([]string{"CAP_MKNOD"}),
		oci.WithUser(user),
		withSupplementalGroups(sec.supplementalGroups),
		oci.WithCgroup(cgroupParent + "/" + id),
	}
	if len(opts.CDIDevices) > 0 {
		// containerd configures its CDI cache's directories once
		// (cdi_spec_dirs) and refreshes it before each injection.
		if err := cdi.Configure(cdi.WithSpecDirs(cdiDir), cdi.WithAutoRefresh(false)); err != nil {
			return nil, fmt.Errorf("CDI cache: %w", err)
		}
		var names []string
		for _, d := range opts.CDIDevices {
			names = append(names, d.Name)
		}
		specOpts = append(specOpts, containerdcdi.WithCDIDevices(names...))
	}
	return oci.GenerateSpec(ctx, nil, &containers.Container{ID: id}, specOpts...)
}

// withCRIDevices is the CRI plugin's WithDevices (internal/cri/opts, not
// importable): each device's host path with its symlinks resolved, then
// containerd's oci.WithDevices (node, type, numbers, owner and mode read
// from the host node, and a cgroup rule with the permissions); with
// device_ownership_from_security_context, the nodes are owned by a
// non-zero runAsUser/runAsGroup instead.
func withCRIDevices(devices []kubecontainer.DeviceInfo, sec podSecurity) oci.SpecOpts {
	return func(ctx context.Context, client oci.Client, c *containers.Container, s *oci.Spec) error {
		if s.Linux == nil {
			s.Linux = &runtimespec.Linux{}
		}
		if s.Linux.Resources == nil {
			s.Linux.Resources = &runtimespec.LinuxResources{}
		}
		old := len(s.Linux.Devices)
		for _, d := range devices {
			path, err := filepath.EvalSymlinks(d.PathOnHost)
			if err != nil {
				return err
			}
			if err := oci.WithDevices(path, d.PathInContainer, d.Permissions)(ctx, client, c, s); err != nil {
				return err
			}
		}
		if sec.deviceOwnership {
			for i := old; i < len(s.Linux.Devices); i++ {
				if sec.runAsUser != nil && *sec.runAsUser != 0 {
					*s.Linux.Devices[i].UID = *sec.runAsUser
				}
				if sec.runAsGroup != nil && *sec.runAsGroup != 0 {
					*s.Linux.Devices[i].GID = *sec.runAsGroup
				}
			}
		}
		return nil
	}
}

// withSupplementalGroups is the CRI plugin's option of that name: the
// pod's supplementalGroups added to the process's groups.
func withSupplementalGroups(groups []uint32) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		s.Process.User.AdditionalGids = append(s.Process.User.AdditionalGids, groups...)
		return nil
	}
}
