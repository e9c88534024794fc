package cluster

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
)

// imageFile is one file of a FROM scratch image's only layer.
type imageFile struct {
	path string // in the image, without the leading slash
	src  string // on this machine
	mode int64
}

// writeImage writes an OCI image-layout tarball (what `ctr images import`
// reads) of a FROM scratch image: one uncompressed layer with the files and
// the directories dirs, the entrypoint and working directory given, named
// ref (a full reference: docker.io/library/NAME:TAG).
func writeImage(out, ref string, files []imageFile, dirs []string, entrypoint []string, workdir string) error {
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	for _, d := range dirs {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755}); err != nil {
			return fmt.Errorf("image %s: %w", ref, err)
		}
	}
	for _, f := range files {
		b, err := os.ReadFile(f.src)
		if err != nil {
			return fmt.Errorf("image %s: %w", ref, err)
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.path, Mode: f.mode, Size: int64(len(b))}); err != nil {
			return fmt.Errorf("image %s: %w", ref, err)
		}
		if _, err := tw.Write(b); err != nil {
			return fmt.Errorf("image %s: %w", ref, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("image %s: %w", ref, err)
	}
	blobs := map[string][]byte{}
	add := func(b []byte) (string, int) {
		sum := sha256.Sum256(b)
		d := "sha256:" + hex.EncodeToString(sum[:])
		blobs[d] = b
		return d, len(b)
	}
	layerDigest, layerSize := add(layer.Bytes())
	cfg, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"config":       map[string]any{"Entrypoint": entrypoint, "WorkingDir": workdir},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	})
	if err != nil {
		return fmt.Errorf("image %s: %w", ref, err)
	}
	cfgDigest, cfgSize := add(cfg)
	man, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfgDigest, "size": cfgSize},
		"layers":        []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layerDigest, "size": layerSize}},
	})
	if err != nil {
		return fmt.Errorf("image %s: %w", ref, err)
	}
	manDigest, manSize := add(man)
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests": []any{map[string]any{
			"mediaType": "application/vnd.oci.image.manifest.v1+json",
			"digest":    manDigest, "size": manSize,
			"platform": map[string]any{"architecture": runtime.GOARCH, "os": "linux"},
			// containerd's importer names the image after this.
			"annotations": map[string]string{"io.containerd.image.name": ref},
		}},
	})
	if err != nil {
		return fmt.Errorf("image %s: %w", ref, err)
	}

	var arch bytes.Buffer
	aw := tar.NewWriter(&arch)
	put := func(name string, b []byte) error {
		if err := aw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(b))}); err != nil {
			return err
		}
		_, err := aw.Write(b)
		return err
	}
	if err := put("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return fmt.Errorf("image %s: %w", ref, err)
	}
	if err := put("index.json", index); err != nil {
		return fmt.Errorf("image %s: %w", ref, err)
	}
	for d, b := range blobs {
		if err := put("blobs/sha256/"+d[len("sha256:"):], b); err != nil {
			return fmt.Errorf("image %s: %w", ref, err)
		}
	}
	if err := aw.Close(); err != nil {
		return fmt.Errorf("image %s: %w", ref, err)
	}
	if err := os.WriteFile(out, arch.Bytes(), 0o644); err != nil {
		return fmt.Errorf("image %s: %w", ref, err)
	}
	return nil
}
