package main

import (
	"archive/tar"
	"bytes"
	"debug/buildinfo"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

type options struct {
	out, sbom, module, version, arch, caBundle string
	epoch                                      time.Time
}

type result struct {
	digest v1.Hash
}

// Paths and identity inside the image.
const (
	nonroot      = 65532 // distroless's nonroot user and group
	caPath       = "etc/ssl/certs/ca-certificates.crt"
	sbomPath     = "usr/share/doc/safeconduct/sbom.spdx.json"
	configPath   = "/etc/sts/sts.yaml"
	sourceURL    = "https://github.com/safeconduct/safeconduct"
	maxCABundle  = 4 << 20
	maxBinary    = 256 << 20
	layoutMarker = "oci-layout"
)

// sourceDateEpoch picks the build timestamp: the flag, $SOURCE_DATE_EPOCH, the
// HEAD commit time, else the Unix epoch.
func sourceDateEpoch(flagValue int64, module string) time.Time {
	if flagValue >= 0 {
		return time.Unix(flagValue, 0).UTC()
	}
	if v, err := strconv.ParseInt(os.Getenv("SOURCE_DATE_EPOCH"), 10, 64); err == nil && v >= 0 {
		return time.Unix(v, 0).UTC()
	}
	if out, err := exec.Command("git", "-C", module, "log", "-1", "--format=%ct").Output(); err == nil {
		if v, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil {
			return time.Unix(v, 0).UTC()
		}
	}
	return time.Unix(0, 0).UTC()
}

// revision is the HEAD commit ("" outside git).
func revision(module string) string {
	out, err := exec.Command("git", "-C", module, "rev-parse", "HEAD").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// goBuild builds the static binaries reproducibly into dir.
func goBuild(o options, dir string) error {
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w -buildid=", "-o", dir+string(os.PathSeparator), "./cmd/sts", "./cmd/stsctl")
	cmd.Dir = o.module
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+o.arch, "GOFLAGS=-mod=readonly")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w\n%s", err, out)
	}
	return nil
}

// build writes the image layout and the SBOM and returns the image digest.
func build(o options) (*result, error) {
	if err := prepareOut(o.out); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "imagebuild-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	if err := goBuild(o, tmp); err != nil {
		return nil, err
	}
	sts, err := readBounded(filepath.Join(tmp, "sts"), maxBinary)
	if err != nil {
		return nil, err
	}
	stsctl, err := readBounded(filepath.Join(tmp, "stsctl"), maxBinary)
	if err != nil {
		return nil, err
	}
	ca, err := readBounded(o.caBundle, maxCABundle)
	if err != nil {
		return nil, fmt.Errorf("CA bundle: %w", err)
	}
	bi, err := buildinfo.ReadFile(filepath.Join(tmp, "sts"))
	if err != nil {
		return nil, fmt.Errorf("sts build info: %w", err)
	}
	sbom, err := spdxSBOM(bi, o)
	if err != nil {
		return nil, err
	}
	layerTar, err := rootfs(o.epoch, []file{
		{name: "sts", data: sts, mode: 0o755},
		{name: "stsctl", data: stsctl, mode: 0o755},
		{name: caPath, data: ca, mode: 0o644},
		{name: sbomPath, data: sbom, mode: 0o644},
		{name: "etc/passwd", data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"), mode: 0o644},
		{name: "etc/group", data: []byte("root:x:0:\nnonroot:x:65532:\n"), mode: 0o644},
		// Config, policy and TLS come from read-only mounts; keys and the
		// embedded store from volumes that inherit this ownership.
		{name: "etc/sts/", mode: 0o755, owner: nonroot},
		{name: "var/lib/sts/", mode: 0o755, owner: nonroot},
		{name: "var/lib/sts/keys/", mode: 0o700, owner: nonroot},
		{name: "var/lib/sts/data/", mode: 0o700, owner: nonroot},
		{name: "home/nonroot/", mode: 0o700, owner: nonroot},
	})
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	created := v1.Time{Time: o.epoch}
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, MediaType: types.OCILayer,
		History: v1.History{Created: created, CreatedBy: "go run ./cmd/imagebuild", Comment: "sts, stsctl, CA bundle, SBOM"}})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Created, cf.OS, cf.Architecture = created, "linux", o.arch
	cf.Config = imageConfig(o)
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, err
	}
	digest, err := img.Digest()
	if err != nil {
		return nil, err
	}
	p, err := layout.Write(o.out, empty.Index)
	if err != nil {
		return nil, err
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": o.version,
	})); err != nil {
		return nil, err
	}
	if err := os.WriteFile(o.sbom, sbom, 0o644); err != nil {
		return nil, fmt.Errorf("sbom: %w", err)
	}
	return &result{digest: digest}, nil
}

// imageConfig is the runtime configuration: nonroot, /sts serve, the CA bundle,
// the ports, a health check and the OCI labels.
func imageConfig(o options) v1.Config {
	labels := map[string]string{
		"org.opencontainers.image.title":       "safeconduct",
		"org.opencontainers.image.description": "RFC 8693 Security Token Service",
		"org.opencontainers.image.source":      sourceURL,
		"org.opencontainers.image.version":     o.version,
		"org.opencontainers.image.created":     o.epoch.UTC().Format(time.RFC3339),
	}
	if rev := revision(o.module); rev != "" {
		labels["org.opencontainers.image.revision"] = rev
	}
	return v1.Config{
		User:         strconv.Itoa(nonroot) + ":" + strconv.Itoa(nonroot),
		Entrypoint:   []string{"/sts"},
		Cmd:          []string{"serve", "--config", configPath},
		WorkingDir:   "/",
		Env:          []string{"SSL_CERT_FILE=/" + caPath},
		ExposedPorts: map[string]struct{}{"8443/tcp": {}, "9090/tcp": {}},
		Labels:       labels,
		// Docker's HEALTHCHECK (podman keeps it with --format docker; Kubernetes
		// uses its own probes on /healthz and /readyz).
		Healthcheck: &v1.HealthConfig{
			Test:     []string{"CMD", "/sts", "healthcheck", "--config", configPath},
			Interval: 30 * time.Second, Timeout: 5 * time.Second, StartPeriod: 10 * time.Second, Retries: 3,
		},
	}
}

// prepareOut makes out an empty directory: it must not exist, be empty, or
// hold an OCI layout (a previous build), which is replaced.
func prepareOut(out string) error {
	entries, err := os.ReadDir(out)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return err
	case len(entries) > 0:
		if _, err := os.Stat(filepath.Join(out, layoutMarker)); err != nil {
			return fmt.Errorf("%s is not empty and holds no OCI layout: refusing to replace it", out)
		}
		if err := os.RemoveAll(out); err != nil {
			return err
		}
	}
	return os.MkdirAll(out, 0o755)
}

// file is one entry of the root file system: a regular file, or a directory
// when name ends in "/".
type file struct {
	name  string
	data  []byte
	mode  int64
	owner int
}

// rootfs renders the layer tar: parent directories first (root-owned 0755),
// every entry with mtime epoch and numeric owners only, in a fixed order.
func rootfs(epoch time.Time, files []file) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	made := map[string]bool{}
	dir := func(name string, mode int64, owner int) error {
		if made[name] {
			return nil
		}
		made[name] = true
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, Uid: owner, Gid: owner, ModTime: epoch, Format: tar.FormatPAX})
	}
	for _, f := range files {
		parts := strings.Split(strings.TrimSuffix(f.name, "/"), "/")
		for i := 1; i < len(parts); i++ {
			if err := dir(strings.Join(parts[:i], "/")+"/", 0o755, 0); err != nil {
				return nil, err
			}
		}
		if strings.HasSuffix(f.name, "/") {
			if err := dir(f.name, f.mode, f.owner); err != nil {
				return nil, err
			}
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: f.mode, Size: int64(len(f.data)), Uid: f.owner, Gid: f.owner, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// readBounded reads a regular file of at most max bytes.
func readBounded(path string, max int64) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() || st.Size() > max {
		return nil, fmt.Errorf("%s: not a regular file of at most %d bytes", path, max)
	}
	return os.ReadFile(path)
}
