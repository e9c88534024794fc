# smarter-device-manager — build, run and test.
# `make test` is what CI runs (.ci/run): it installs what the tests need
# (scripts/test-deps.sh), checks gofmt and vet, runs each fuzz target for a
# short bounded time, then every test: the daemon's own code always under
# -race. `make check` is the fast loop: format, vet and the unit tests in
# -short mode, no root needed.

GO       ?= go
BIN      ?= bin/smarter-device-manager
# A count, not a duration: with a duration, go test -fuzz can end with a
# spurious "context deadline exceeded" when the time runs out mid-input.
FUZZTIME ?= 50000x
# The checkpoint's fuzz target writes (and fsyncs) a file for each input:
# on tmpfs that costs nothing (31 s -> 5 s for its 50,000 inputs on the
# project's VM); what it checks is the parsing, not the disk.
FUZZTMP  ?= $(if $(wildcard /dev/shm/.),/dev/shm,$(or $(TMPDIR),/tmp))
# Go lives here on the project's Debian machines; a PATH that lacks it still works.
export PATH := $(PATH):/usr/local/go/bin

.PHONY: all build run test check deps vet unit fuzz e2e e2e-container e2e-cluster e2e-nodes bench release packages image image-multiarch check-packaging tools clean mutate mutate-pure

all: build

# Static (no libc: runs FROM scratch, and ~1.4 MiB less resident memory) and
# without the symbol table and DWARF (6 MiB smaller; stack traces and pprof
# keep function names, which live in the runtime's own tables).
# (Tests keep cgo: -race needs it.)
# The tags leave out code the daemon never runs: grpcnotrace gRPC's
# golang.org/x/net/trace, which links html/template (2.6 MiB of the binary);
# nethttpomithttp2 net/http's HTTP/2 (0.3 MiB; gRPC has its own, the HTTP
# endpoints are HTTP/1.1). A build without them behaves the same.
BUILDTAGS ?= grpcnotrace,nethttpomithttp2
BUILDFLAGS ?= -trimpath -tags $(BUILDTAGS) -ldflags='-s -w'
# The DRA binary (--mode=dra runs it): the same command built with the dra
# tag, which links the DRA driver, client-go and the API types (~30 MiB
# the device-plugin binary does not carry). It keeps net/http's HTTP/2:
# client-go multiplexes its watches over one connection to the API server.
DRA_BIN  ?= bin/smarter-device-manager-dra
DRATAGS  ?= grpcnotrace,dra
DRAFLAGS ?= -trimpath -tags $(DRATAGS) -ldflags='-s -w'

build:
	CGO_ENABLED=0 $(GO) build $(BUILDFLAGS) -o $(BIN) ./cmd/smarter-device-manager
	CGO_ENABLED=0 $(GO) build $(DRAFLAGS) -o $(DRA_BIN) ./cmd/smarter-device-manager

# Static binaries for the platforms the project serves: dist/linux-<arch>/.
# (arm is the Raspberry Pi's 32-bit userland, GOARM=7.)
release:
	for p in amd64 arm64 arm; do \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$p GOARM=7 $(GO) build $(BUILDFLAGS) -o dist/linux-$$p/smarter-device-manager ./cmd/smarter-device-manager || exit 1; \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$p GOARM=7 $(GO) build $(DRAFLAGS) -o dist/linux-$$p/smarter-device-manager-dra ./cmd/smarter-device-manager || exit 1; \
	done

# .deb and .rpm packages of the release binaries (packaging/nfpm.yaml, nfpm
# pinned in tools/nfpm) into dist/: binary, systemd unit, rules as a conffile.
packages: release
	bash scripts/package.sh

IMAGE ?= smarter-device-manager:latest
# A FROM scratch image of this machine's architecture, from the binary built
# first, into the local Docker engine; all three architectures at once:
# make image-multiarch.
image:
	CGO_ENABLED=0 GOOS=linux $(GO) build $(BUILDFLAGS) -o dist/linux-$$($(GO) env GOARCH)/smarter-device-manager ./cmd/smarter-device-manager
	CGO_ENABLED=0 GOOS=linux $(GO) build $(DRAFLAGS) -o dist/linux-$$($(GO) env GOARCH)/smarter-device-manager-dra ./cmd/smarter-device-manager
	docker build --build-arg TARGETARCH=$$($(GO) env GOARCH) -t $(IMAGE) .

# The same image for linux/amd64, linux/arm64 and linux/arm/v7 with an OCI
# index over them, without buildx (tools/ociimage): an OCI-layout tarball,
# reproducible (SOURCE_DATE_EPOCH, default 0). Push it with
#   skopeo copy --all oci-archive:dist/smarter-device-manager-oci.tar docker://REGISTRY/smarter-device-manager:TAG
image-multiarch: release
	$(GO) run -C tools/ociimage . -dist $(CURDIR)/dist -oci-archive $(CURDIR)/dist/smarter-device-manager-oci.tar -tag $(IMAGE)

# Runs the daemon on its embedded default rules (root: it serves sockets in
# the kubelet plugin directory and reads netlink uevents).
run:
	$(GO) run ./cmd/smarter-device-manager --log-format=console

# The phases deps vet fuzz unit check-packaging e2e e2e-container, in that
# order, each timed, with the e2e and packaging test binaries compiled in
# the background meanwhile (scripts/test.sh says how).
test:
	@GO=$(GO) MAKE=$(MAKE) bash scripts/test.sh

# The fast loop while changing code (under a minute warm): gofmt, vet, and
# every unit test of the daemon's module with -race in -short mode, which
# leaves out the slowest (Docker images, long timeouts; each says so). As a
# normal user the tests that need root skip and say why. No e2e suite.
check: vet
	$(GO) test -race -short -count=1 -p 4 ./...

deps:
	bash scripts/test-deps.sh

vet:
	test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...
	$(GO) vet -tags dra ./cmd/...

# (The command's DRA-only files build with -tags dra: their tests run here
# too, the rest of the command's ran untagged.) -p 4: four packages' tests
# at once on 2 cores, as most of their time is spent waiting on sockets,
# timers and the kernel (102 s → 59 s warm, docs/development.md).
unit:
	$(GO) test -race -count=1 -p 4 -timeout 20m ./...
	$(GO) test -race -count=1 -tags dra -run 'DRA' ./cmd/smarter-device-manager
	cd tools/ociimage && $(GO) vet ./... && $(GO) test -race -count=1 ./...

# Mutation testing (issue 23; not in make test: it runs a package's tests
# once per mutant, minutes to hours): gremlins v0.6.0, pinned in
# tools/gremlins, changes one operator or condition at a time in each
# package's code and runs its tests; a change no test notices "lived".
# scripts/mutate.sh prints each package's test efficacy (killed / (killed
# + lived)), its lived mutants and the efficacy of all together, and
# leaves the details in bin/mutate-<package>.json. docs/development.md
# says how to read it. MUTATE_PKGS picks packages (PKG:FILE,FILE for some
# of a package's files); mutate-pure runs the pure code the goals name.
MUTATE_PKGS ?= ./conf ./hotplug ./daemon ./dra ./plugin
mutate:
	@bash scripts/mutate.sh $(MUTATE_PKGS)

mutate-pure:
	@bash scripts/mutate.sh ./conf ./daemon:plan.go,content.go ./dra:names.go,devices.go

# The real-kubelet conformance suite (e2e/, its own module so the daemon's
# go.mod stays small): the daemon binary against k8s.io/kubernetes'
# devicemanager.ManagerImpl. Its first build compiles much of Kubernetes
# and containerd; later runs build in seconds. The daemon it runs is built
# with -race (TestMain), the test binary is not: it only drives the daemon
# and the real kubelet code, and -race would double the suite's first
# compile (docs/development.md has the figures).
# PREBUILT: a directory where scripts/test.sh compiled the e2e and
# packaging test binaries ahead (e2e.test, probe.test, check.test); the
# three targets below run them from there instead of go test linking them.
PREBUILT ?=

e2e:
	@if [ "$$(id -u)" != 0 ] || [ "$$(uname -s)" != Linux ]; then \
		echo "e2e: SKIPPED: the real-kubelet suite needs root on Linux (kubelet sockets, zram)"; \
	else \
		cd e2e && $(GO) vet ./... && \
		if [ -n "$(PREBUILT)" ]; then \
			$(PREBUILT)/e2e.test -test.count=1 -test.timeout=40m -test.skip='^TestContainer' && \
			echo "ok  	e2e (prebuilt)" && \
			cd probe && $(PREBUILT)/probe.test -test.count=1 -test.timeout=40m && echo "ok  	e2e/probe (prebuilt)"; \
		else \
			$(GO) test -count=1 -timeout 40m -skip '^TestContainer' ./...; \
		fi; \
	fi

# The container suite (e2e/container_*_test.go, same module): what the
# kubelet's device manager hands the runtime for a pod, turned into an OCI
# spec by containerd's own code (pkg/oci, pkg/cdi) and run by Debian's runc
# under the device cgroup; a process inside reports what it could open.
# Prints one CONTAINER line per case (go test in directory mode shows a
# passing test's output).
e2e-container: deps
	@if [ "$$(id -u)" != 0 ] || [ "$$(uname -s)" != Linux ]; then \
		echo "e2e-container: SKIPPED: the container suite needs root on Linux (runc, device cgroups, zram)"; \
	else \
		cd e2e && if [ -n "$(PREBUILT)" ]; then \
			$(PREBUILT)/e2e.test -test.count=1 -test.timeout=20m -test.run='^TestContainer'; \
		else \
			$(GO) test -count=1 -timeout 20m -run '^TestContainer'; \
		fi; \
	fi

# The single-node cluster suite (cluster/, its own module): a real
# kube-apiserver, etcd, kube-scheduler, kube-controller-manager, kubelet and
# containerd (built once per machine into a cache by
# scripts/cluster-build.sh: a cold build compiles Kubernetes, see
# docs/deployment.md), Debian's runc; the plain manifest applied through the
# API server, a pod given a hot-plugged zram device, unplug/replug, a
# rolling update, then DRA mode (the overlay, rendered by the pinned
# kustomize). Not part of `make test`: a cold build alone takes longer
# than the whole of .ci/run may. Everything runs under nice -n 19.
e2e-cluster: deps
	@if [ "$$(id -u)" != 0 ] || [ "$$(uname -s)" != Linux ]; then \
		echo "e2e-cluster: SKIPPED: the cluster suite needs root on Linux (kubelet, containerd, runc, zram)"; \
	else \
		CGO_ENABLED=0 nice -n 19 $(GO) build $(BUILDFLAGS) -o dist/linux-$$($(GO) env GOARCH)/smarter-device-manager ./cmd/smarter-device-manager && \
		CGO_ENABLED=0 nice -n 19 $(GO) build $(DRAFLAGS) -o dist/linux-$$($(GO) env GOARCH)/smarter-device-manager-dra ./cmd/smarter-device-manager && \
		{ [ -x bin/kustomize ] || nice -n 19 $(GO) build -C tools/kustomize -o $(CURDIR)/bin/kustomize sigs.k8s.io/kustomize/kustomize/v5; } && \
		bin=$$(nice -n 19 bash scripts/cluster-build.sh | tail -n 1) && \
		cd cluster && nice -n 19 $(GO) vet ./... && \
		SDM_CLUSTER_BIN=$$bin nice -n 19 $(GO) test -race -v -count=1 -timeout 45m -run '^TestCluster$$' .; \
	fi

# The node suite (cluster/nodes_*_test.go, TestNode*; issue 21): a Debian
# bookworm container whose PID 1 is the real systemd, made by
# scripts/node-image.sh (mmdebstrap from Debian's mirror, then docker import;
# cached by the script's hash), with the project's .deb installed in it and
# its unit checked through systemctl and journalctl; TestNodeReboot joins
# two such nodes, running the cluster suite's kubelet and containerd
# (scripts/cluster-build.sh's cache, built first if missing) as units, to a
# control plane on this machine and reboots them (TestNodeReboot), upgrades
# the daemon under running pods (TestNodeUpgrade) and moves a device from
# one to the other (TestNodeDeviceFollows*: the DRA overlay, rendered by
# the pinned kustomize, and the .deb), and installs the Helm chart as
# docs/deployment.md does (TestNodeHelmChart, the pinned helm). Needs root, a Docker
# engine and, for the first image build, Debian's mirror (mmdebstrap is
# installed with apt-get when missing); no container registry. Not part of
# `make test`. Everything runs under nice -n 19.
e2e-nodes:
	@if [ "$$(id -u)" != 0 ] || [ "$$(uname -s)" != Linux ]; then \
		echo "e2e-nodes: SKIPPED: the node suite needs root on Linux (Docker, systemd in a container)"; \
	else \
		{ [ -x bin/kustomize ] || nice -n 19 $(GO) build -C tools/kustomize -o $(CURDIR)/bin/kustomize sigs.k8s.io/kustomize/kustomize/v5; } && \
		{ [ -x bin/helm ] || nice -n 19 $(GO) build -C tools/helm -o $(CURDIR)/bin/helm helm.sh/helm/v3/cmd/helm; } && \
		bin=$$(nice -n 19 bash scripts/cluster-build.sh | tail -n 1) && \
		cd cluster && nice -n 19 $(GO) vet ./... && \
		SDM_CLUSTER_BIN=$$bin nice -n 19 $(GO) test -v -count=1 -timeout 45m -run '^TestNode' .; \
	fi

# What packaging/ ships: every manifest decoded strictly into the API types,
# the kustomize overlays and the Helm chart rendered (helm lint, helm
# template) and compared with the plain manifest. Its own module
# (packaging/check); helm and kustomize are built from tools/ (pinned).
# Its first run builds helm, kustomize and the API server's validation code
# inside the test (10+ minutes on 2 busy cores), hence the long timeout.
# No -race: the test decodes and renders files in one goroutine, and the
# race build of that code would double its first compile.
check-packaging:
	cd packaging/check && $(GO) vet ./... && \
	if [ -n "$(PREBUILT)" ]; then $(PREBUILT)/check.test -test.count=1 -test.timeout=40m; else $(GO) test -count=1 -timeout 40m ./...; fi

# The pinned tools (tools/*/go.mod): bin/helm, bin/kustomize, bin/nfpm.
tools:
	$(GO) build -C tools/helm -o $(CURDIR)/bin/helm helm.sh/helm/v3/cmd/helm
	$(GO) build -C tools/kustomize -o $(CURDIR)/bin/kustomize sigs.k8s.io/kustomize/kustomize/v5
	$(GO) build -C tools/nfpm -o $(CURDIR)/bin/nfpm github.com/goreleaser/nfpm/v2/cmd/nfpm

# Each fuzz target for a bounded number of inputs; longer runs: make fuzz FUZZTIME=10m.
fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzParseYAML$$' -fuzztime=$(FUZZTIME) ./conf
	$(GO) test -run='^$$' -fuzz='^FuzzParseTOML$$' -fuzztime=$(FUZZTIME) ./conf
	$(GO) test -run='^$$' -fuzz='^FuzzParseEvent$$' -fuzztime=$(FUZZTIME) ./hotplug
	$(GO) test -run='^$$' -fuzz='^FuzzDeviceConfig$$' -fuzztime=$(FUZZTIME) ./dra/internal/claimdata
	TMPDIR=$(FUZZTMP) $(GO) test -run='^$$' -fuzz='^FuzzCheckpoint$$' -fuzztime=$(FUZZTIME) ./dra/internal/claimdata

# Measures hotplug latency, start-up, footprint, idle CPU and a uevent storm
# on this machine and writes BENCHMARKS.md (as root: zram, tmpfs, netlink).
bench: deps
	$(GO) run ./cmd/sdm-bench -out BENCHMARKS.md

clean:
	rm -rf bin dist
