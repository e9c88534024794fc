package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// What the Dockerfile says; the image must stay equivalent to it.
const (
	binaryName = "smarter-device-manager"
	// draBinaryName is the DRA mode's binary, beside the daemon's in the
	// image when make release built it there: --mode=dra runs it.
	draBinaryName = "smarter-device-manager-dra"
	entrypoint    = "/" + binaryName
	workingDir    = "/root"
	// The PATH the docker builder gives a FROM scratch image.
	defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// elfTarget is what a binary for one GOARCH looks like.
type elfTarget struct {
	machine elf.Machine
	class   elf.Class
	data    elf.Data
}

// elfTargetFor is the ELF header of a binary for arch, an OCI architecture
// (which is Go's GOARCH); false for one this tool cannot check.
func elfTargetFor(arch string) (elfTarget, bool) {
	t, ok := elfTargets[arch]
	return t, ok
}

var elfTargets = map[string]elfTarget{
	"amd64":   {elf.EM_X86_64, elf.ELFCLASS64, elf.ELFDATA2LSB},
	"arm64":   {elf.EM_AARCH64, elf.ELFCLASS64, elf.ELFDATA2LSB},
	"arm":     {elf.EM_ARM, elf.ELFCLASS32, elf.ELFDATA2LSB},
	"386":     {elf.EM_386, elf.ELFCLASS32, elf.ELFDATA2LSB},
	"ppc64le": {elf.EM_PPC64, elf.ELFCLASS64, elf.ELFDATA2LSB},
	"riscv64": {elf.EM_RISCV, elf.ELFCLASS64, elf.ELFDATA2LSB},
	"s390x":   {elf.EM_S390, elf.ELFCLASS64, elf.ELFDATA2MSB},
}

func checkPlatform(p v1.Platform) error {
	if p.OS != "linux" {
		return fmt.Errorf("OS %q: only linux images are built", p.OS)
	}
	if _, ok := elfTargetFor(p.Architecture); !ok {
		return fmt.Errorf("architecture %q: not one of amd64, arm64, arm, 386, ppc64le, riscv64, s390x", p.Architecture)
	}
	if p.Architecture == "arm" && !strings.HasPrefix(p.Variant, "v") {
		// An arm image without a variant is ambiguous: GOARM 5, 6 and 7
		// binaries run on different boards.
		return errors.New("linux/arm needs a variant, e.g. linux/arm/v7")
	}
	return nil
}

// binaryPath is where make release puts the binary for p:
// dist/linux-arm/ holds the GOARM=7 build.
func binaryPath(dist string, p v1.Platform) string {
	return filepath.Join(dist, p.OS+"-"+p.Architecture, binaryName)
}

type platformImage struct {
	platform v1.Platform
	binary   string // the file it was built from
	image    v1.Image
}

type assembly struct {
	images []platformImage
	index  v1.ImageIndex
}

// pick is the image for want, or when want is nil, the first of arch.
func (a *assembly) pick(want *v1.Platform, arch string) (platformImage, error) {
	for _, pi := range a.images {
		if want == nil && pi.platform.Architecture == arch {
			return pi, nil
		}
		if want != nil && pi.platform.OS == want.OS && pi.platform.Architecture == want.Architecture &&
			(want.Variant == "" || want.Variant == pi.platform.Variant) {
			return pi, nil
		}
	}
	if want == nil {
		return platformImage{}, fmt.Errorf("none of the platforms built is this machine's architecture (%s); name one", arch)
	}
	return platformImage{}, fmt.Errorf("%s is not among the platforms built", want)
}

// assemble builds one image per platform from dist and the index over them.
func assemble(dist string, platforms []v1.Platform, created time.Time) (*assembly, error) {
	a := &assembly{}
	var descs []v1.Descriptor
	for _, p := range platforms {
		path := binaryPath(dist, p)
		img, err := platformImageFrom(path, p, created)
		if err != nil {
			return nil, err
		}
		desc, err := partial.Descriptor(img)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		pp := p
		descs = append(descs, v1.Descriptor{MediaType: desc.MediaType, Size: desc.Size, Digest: desc.Digest, Platform: &pp})
		a.images = append(a.images, platformImage{platform: p, binary: path, image: img})
	}
	idx, err := newIndex(descs, a.images)
	if err != nil {
		return nil, fmt.Errorf("image index: %w", err)
	}
	a.index = idx
	return a, nil
}

// index is an OCI image index over images, written out here rather than by
// mutate.AppendManifests: that one gives each entry an artifactType (the
// config's media type), which no image builder writes and which older
// skopeo (1.9) drops, rewriting the index, so that the digest pushed would
// differ from the one built.
type index struct {
	manifest v1.IndexManifest
	raw      []byte
	digest   v1.Hash
	images   map[v1.Hash]v1.Image
}

var _ v1.ImageIndex = (*index)(nil)

func newIndex(descs []v1.Descriptor, images []platformImage) (*index, error) {
	idx := &index{
		manifest: v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: descs},
		images:   map[v1.Hash]v1.Image{},
	}
	for i, d := range descs {
		idx.images[d.Digest] = images[i].image
	}
	var err error
	if idx.raw, err = json.Marshal(idx.manifest); err != nil {
		return nil, err
	}
	if idx.digest, _, err = v1.SHA256(bytes.NewReader(idx.raw)); err != nil {
		return nil, err
	}
	return idx, nil
}

func (i *index) MediaType() (types.MediaType, error) { return i.manifest.MediaType, nil }
func (i *index) Digest() (v1.Hash, error)            { return i.digest, nil }
func (i *index) Size() (int64, error)                { return int64(len(i.raw)), nil }
func (i *index) RawManifest() ([]byte, error)        { return i.raw, nil }
func (i *index) IndexManifest() (*v1.IndexManifest, error) {
	return i.manifest.DeepCopy(), nil
}

func (i *index) Image(h v1.Hash) (v1.Image, error) {
	if img, ok := i.images[h]; ok {
		return img, nil
	}
	return nil, fmt.Errorf("image index: no image %s", h)
}

func (i *index) ImageIndex(h v1.Hash) (v1.ImageIndex, error) {
	return nil, fmt.Errorf("image index: no nested index %s", h)
}

// platformImageFrom is the Dockerfile's image for p, from the binary at path.
func platformImageFrom(path string, p v1.Platform, created time.Time) (v1.Image, error) {
	bin, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: no binary for %s (make release builds it): %w", path, p, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := checkBinary(bin, p); err != nil {
		return nil, fmt.Errorf("%s: refusing to put it in the %s image: %w", path, p, err)
	}
	files := []layerFile{{binaryName, bin}}
	copied := path
	draPath := filepath.Join(filepath.Dir(path), draBinaryName)
	switch dra, err := os.ReadFile(draPath); {
	case err == nil:
		if err := checkBinary(dra, p); err != nil {
			return nil, fmt.Errorf("%s: refusing to put it in the %s image: %w", draPath, p, err)
		}
		files = append(files, layerFile{draBinaryName, dra})
		copied += " " + draPath
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%s: %w", draPath, err)
	}
	layerTar, err := rootfsTar(files, created)
	if err != nil {
		return nil, fmt.Errorf("%s: layer: %w", path, err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressionLevel(gzip.DefaultCompression), tarball.WithCompressedCaching)
	if err != nil {
		return nil, fmt.Errorf("%s: layer: %w", path, err)
	}

	base, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{
		Created:      v1.Time{Time: created},
		OS:           p.OS,
		Architecture: p.Architecture,
		Variant:      p.Variant,
		OSVersion:    p.OSVersion,
		Config: v1.Config{
			Env:        []string{defaultPath},
			Entrypoint: []string{entrypoint},
			WorkingDir: workingDir,
		},
		RootFS: v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, fmt.Errorf("%s: config: %w", path, err)
	}
	base = mutate.MediaType(base, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History: v1.History{
			Created:   v1.Time{Time: created},
			CreatedBy: fmt.Sprintf("COPY %s /; WORKDIR %s # tools/ociimage", copied, workingDir),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("%s: image: %w", path, err)
	}
	return img, nil
}

// layerFile is a binary in the image's root.
type layerFile struct {
	name string
	data []byte
}

// rootfsTar is the image's only layer: the binaries at /smarter-device-manager
// (and /smarter-device-manager-dra), 0755, root's, and the WORKDIR, /root,
// as an empty directory.
func rootfsTar(files []layerFile, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	var hdrs []*tar.Header
	for _, f := range files {
		hdrs = append(hdrs, &tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: 0o755, Size: int64(len(f.data))})
	}
	hdrs = append(hdrs, &tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(workingDir, "/") + "/", Mode: 0o755})
	for i, h := range hdrs {
		h.ModTime = mtime
		h.Format = tar.FormatUSTAR // no PAX records: nothing but what is set here
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("%s: %w", h.Name, err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(files[i].data); err != nil {
				return nil, fmt.Errorf("%s: %w", h.Name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// checkBinary refuses a binary that would not run on p from an empty image:
// another machine, word size or byte order, a dynamically linked one, or a
// Go binary built for another GOOS, GOARCH or GOARM.
func checkBinary(bin []byte, p v1.Platform) error {
	want, ok := elfTargetFor(p.Architecture)
	if !ok {
		return fmt.Errorf("architecture %q: cannot check its binaries", p.Architecture)
	}
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return fmt.Errorf("not an ELF executable: %w", err)
	}
	defer f.Close()
	if f.Machine != want.machine || f.Class != want.class || f.Data != want.data {
		return fmt.Errorf("it is an ELF %s %s %s binary, but %s needs %s %s %s",
			f.Class, f.Data, f.Machine, p, want.class, want.data, want.machine)
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return fmt.Errorf("ELF type %s: not an executable", f.Type)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			interp, _ := io.ReadAll(io.LimitReader(prog.Open(), 256))
			return fmt.Errorf("dynamically linked (interpreter %s): an image FROM scratch has no loader or libc; build it with CGO_ENABLED=0",
				strings.TrimRight(string(interp), "\x00"))
		}
	}

	bi, err := buildinfo.Read(bytes.NewReader(bin))
	if err != nil {
		return nil // not a Go binary (or no build info): the ELF checks are all there is
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if goos := settings["GOOS"]; goos != "" && goos != p.OS {
		return fmt.Errorf("Go binary built for GOOS=%s, not %s", goos, p.OS)
	}
	if goarch := settings["GOARCH"]; goarch != "" && goarch != p.Architecture {
		return fmt.Errorf("Go binary built for GOARCH=%s, not %s", goarch, p.Architecture)
	}
	if p.Architecture == "arm" {
		// GOARM=7 (or 7,hardfloat) is variant v7.
		goarm, _, _ := strings.Cut(settings["GOARM"], ",")
		if goarm != "" && "v"+goarm != p.Variant {
			return fmt.Errorf("Go binary built with GOARM=%s, but the platform's variant is %s", settings["GOARM"], p.Variant)
		}
	}
	if p.Architecture == "amd64" {
		// A v3 binary in an image that claims plain amd64 dies on older CPUs.
		goamd64 := settings["GOAMD64"]
		if goamd64 != "" && goamd64 != "v1" && goamd64 != p.Variant {
			return fmt.Errorf("Go binary built with GOAMD64=%s, but the platform's variant is %q", goamd64, p.Variant)
		}
	}
	return nil
}
