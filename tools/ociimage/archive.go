package main

import (
	"archive/tar"
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The annotation an OCI image layout's index.json names an image by.
const refNameAnnotation = "org.opencontainers.image.ref.name"

// blob is one file under blobs/sha256/ of an image layout.
type blob struct {
	digest v1.Hash
	size   int64
	open   func() (io.ReadCloser, error)
}

func bytesBlob(b []byte) blob {
	d, size, _ := v1.SHA256(bytes.NewReader(b)) // reading a bytes.Reader cannot fail
	return blob{digest: d, size: size, open: func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}}
}

// indexBlobs is every blob idx refers to, idx's own manifest first.
func indexBlobs(idx v1.ImageIndex) ([]blob, error) {
	raw, err := idx.RawManifest()
	if err != nil {
		return nil, fmt.Errorf("image index: %w", err)
	}
	blobs := []blob{bytesBlob(raw)}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("image index: %w", err)
	}
	for _, desc := range im.Manifests {
		if !desc.MediaType.IsImage() {
			return nil, fmt.Errorf("image index: %s is a %s, not an image", desc.Digest, desc.MediaType)
		}
		img, err := idx.Image(desc.Digest)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", desc.Digest, err)
		}
		manifest, err := img.RawManifest()
		if err != nil {
			return nil, fmt.Errorf("image %s: manifest: %w", desc.Digest, err)
		}
		config, err := img.RawConfigFile()
		if err != nil {
			return nil, fmt.Errorf("image %s: config: %w", desc.Digest, err)
		}
		blobs = append(blobs, bytesBlob(manifest), bytesBlob(config))
		layers, err := img.Layers()
		if err != nil {
			return nil, fmt.Errorf("image %s: layers: %w", desc.Digest, err)
		}
		for _, l := range layers {
			d, err := l.Digest()
			if err != nil {
				return nil, fmt.Errorf("image %s: layer: %w", desc.Digest, err)
			}
			size, err := l.Size()
			if err != nil {
				return nil, fmt.Errorf("image %s: layer %s: %w", desc.Digest, d, err)
			}
			blobs = append(blobs, blob{digest: d, size: size, open: l.Compressed})
		}
	}
	return blobs, nil
}

// writeOCIArchive writes idx as a tarball of an OCI image layout whose
// index.json holds one entry, idx, named tag. The same index and time give
// the same bytes: entries in a fixed order, every mtime set to mtime.
func writeOCIArchive(w io.Writer, idx v1.ImageIndex, tag string, mtime time.Time) error {
	blobs, err := indexBlobs(idx)
	if err != nil {
		return err
	}
	mt, err := idx.MediaType()
	if err != nil {
		return fmt.Errorf("image index: %w", err)
	}
	// index.json names the image index.
	top := v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests: []v1.Descriptor{{
			MediaType:   mt,
			Size:        blobs[0].size,
			Digest:      blobs[0].digest,
			Annotations: map[string]string{refNameAnnotation: tag},
		}},
	}
	indexJSON, err := json.Marshal(top)
	if err != nil {
		return fmt.Errorf("index.json: %w", err)
	}

	slices.SortFunc(blobs, func(a, b blob) int { return cmp.Compare(a.digest.String(), b.digest.String()) })
	blobs = slices.CompactFunc(blobs, func(a, b blob) bool { return a.digest == b.digest })

	tw := tar.NewWriter(w)
	file := func(name string, b []byte) error {
		return writeEntry(tw, &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: mtime},
			bytesBlob(b).open, "")
	}
	dir := func(name string) error {
		return writeEntry(tw, &tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: mtime}, nil, "")
	}
	if err := file("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := file("index.json", indexJSON); err != nil {
		return err
	}
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := dir(d); err != nil {
			return err
		}
	}
	for _, b := range blobs {
		if b.digest.Algorithm != "sha256" {
			return fmt.Errorf("blob %s: only sha256 digests are written", b.digest)
		}
		h := &tar.Header{Typeflag: tar.TypeReg, Name: "blobs/sha256/" + b.digest.Hex, Mode: 0o644, Size: b.size, ModTime: mtime}
		if err := writeEntry(tw, h, b.open, b.digest.Hex); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("closing the tar: %w", err)
	}
	return nil
}

// writeEntry writes one tar entry, its content from open (nil for none);
// when sha256Hex is set, the content must have that digest.
func writeEntry(tw *tar.Writer, h *tar.Header, open func() (io.ReadCloser, error), sha256Hex string) error {
	h.Format = tar.FormatUSTAR
	if err := tw.WriteHeader(h); err != nil {
		return fmt.Errorf("%s: %w", h.Name, err)
	}
	if open == nil {
		return nil
	}
	rc, err := open()
	if err != nil {
		return fmt.Errorf("%s: %w", h.Name, err)
	}
	defer rc.Close()
	sum := sha256.New()
	n, err := io.Copy(io.MultiWriter(tw, sum), rc)
	if err != nil {
		return fmt.Errorf("%s: %w", h.Name, err)
	}
	if n != h.Size {
		return fmt.Errorf("%s: %d bytes, but its descriptor says %d", h.Name, n, h.Size)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); sha256Hex != "" && got != sha256Hex {
		return fmt.Errorf("%s: content has digest sha256:%s", h.Name, got)
	}
	return nil
}

// writeDockerArchive writes img as a tarball that `docker load` reads,
// tagged tag.
func writeDockerArchive(w io.Writer, img v1.Image, tag string) error {
	ref, err := name.NewTag(tag)
	if err != nil {
		return fmt.Errorf("tag %q: %w", tag, err)
	}
	if err := tarball.Write(ref, img, w); err != nil {
		return fmt.Errorf("%s: %w", tag, err)
	}
	return nil
}

// writeFileAtomic writes path through write: a temporary file beside it,
// renamed over it once complete, so a failed run leaves no partial archive.
func writeFileAtomic(path string, write func(io.Writer) error) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := write(f); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
