package main

import (
	"archive/tar"
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// buildTwice builds the image into two layouts and returns the first layout,
// its SBOM and the digests.
func buildTwice(t *testing.T) (dir, sbomFile string, d1, d2 v1.Hash) {
	t.Helper()
	// podman's oci: transport wants a lower-case path (t.TempDir has the test name).
	base, err := os.MkdirTemp("", "sts-image-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	var digests []v1.Hash
	for _, n := range []string{"a", "b"} {
		o := options{out: filepath.Join(base, n, "oci"), sbom: filepath.Join(base, n, "sbom.spdx.json"), module: "../..",
			version: "0.1.0", arch: runtime.GOARCH, caBundle: "/etc/ssl/certs/ca-certificates.crt", epoch: sourceDateEpoch(-1, "../..")}
		if _, err := os.Stat(o.caBundle); err != nil {
			t.Skipf("no CA bundle on this machine (apt-get install ca-certificates): %v", err)
		}
		res, err := build(o)
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, res.digest)
	}
	return filepath.Join(base, "a", "oci"), filepath.Join(base, "a", "sbom.spdx.json"), digests[0], digests[1]
}

// TestImage builds the image twice (same digest), then checks its config, its
// file system, the binary it runs and its SBOM, and starts it with podman
// where podman can run containers.
func TestImage(t *testing.T) {
	dir, sbomFile, d1, d2 := buildTwice(t)
	if d1 != d2 {
		t.Fatalf("two builds gave %s and %s: not reproducible", d1, d2)
	}
	t.Logf("image digest %s (twice)", d1)
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Digest != d1 || im.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "0.1.0" {
		t.Fatalf("index %+v", im.Manifests)
	}
	img, err := idx.Image(d1)
	if err != nil {
		t.Fatal(err)
	}

	// Config: nonroot, /sts serve, labels, CA bundle, health check, fixed time.
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if c.User != "65532:65532" || !slices.Equal(c.Entrypoint, []string{"/sts"}) || !slices.Equal(c.Cmd, []string{"serve", "--config", "/etc/sts/sts.yaml"}) {
		t.Fatalf("user %q entrypoint %v cmd %v", c.User, c.Entrypoint, c.Cmd)
	}
	for _, l := range []string{"org.opencontainers.image.title", "org.opencontainers.image.source", "org.opencontainers.image.version", "org.opencontainers.image.created"} {
		if c.Labels[l] == "" {
			t.Errorf("label %s missing: %v", l, c.Labels)
		}
	}
	if !slices.Contains(c.Env, "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt") || c.Healthcheck == nil || c.Healthcheck.Test[1] != "/sts" || c.Healthcheck.Test[2] != "healthcheck" {
		t.Fatalf("env %v healthcheck %+v", c.Env, c.Healthcheck)
	}
	// The same runtime contract as deploy/Dockerfile.
	df, err := os.ReadFile("../../deploy/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`ENTRYPOINT ["/sts"]`, `CMD ["serve", "--config", "/etc/sts/sts.yaml"]`, "USER " + c.User, "EXPOSE 8443 9090",
		`CMD ["/sts", "healthcheck", "--config", "/etc/sts/sts.yaml"]`} {
		if !strings.Contains(string(df), want) {
			t.Errorf("deploy/Dockerfile lacks %s, which the daemonless image has", want)
		}
	}
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH || cf.Created.Unix() != sourceDateEpoch(-1, "../..").Unix() {
		t.Fatalf("platform %s/%s created %s", cf.OS, cf.Architecture, cf.Created)
	}

	// File system: no shell, the binaries, the CA bundle, owners and times fixed.
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers %d %v", len(layers), err)
	}
	files := readLayer(t, layers[0])
	for name, h := range files {
		base := filepath.Base(name)
		if base == "sh" || base == "bash" || base == "busybox" || strings.HasPrefix(name, "bin/") || strings.HasPrefix(name, "usr/bin/") {
			t.Errorf("the image holds %s", name)
		}
		if !h.hdr.ModTime.Equal(cf.Created.Time) {
			t.Errorf("%s has mtime %s", name, h.hdr.ModTime)
		}
	}
	for name, want := range map[string]struct {
		mode int64
		uid  int
	}{"sts": {0o755, 0}, "stsctl": {0o755, 0}, caPath: {0o644, 0}, sbomPath: {0o644, 0}, "var/lib/sts/keys/": {0o700, 65532}, "etc/sts/": {0o755, 65532}} {
		f, ok := files[name]
		if !ok || f.hdr.Mode != want.mode || f.hdr.Uid != want.uid {
			t.Errorf("%s: %+v (present %v), want mode %o uid %d", name, f.hdr, ok, want.mode, want.uid)
		}
	}
	if !bytes.Contains(files["etc/passwd"].data, []byte("nonroot:x:65532:65532:")) {
		t.Errorf("/etc/passwd:\n%s", files["etc/passwd"].data)
	}
	ca, _ := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	if !bytes.Equal(files[caPath].data, ca) {
		t.Error("the CA bundle in the image is not the host's")
	}

	// The binary from the layer: static, runs, answers.
	bin := filepath.Join(t.TempDir(), "sts")
	if err := os.WriteFile(bin, files["sts"].data, 0o755); err != nil {
		t.Fatal(err)
	}
	ef, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("sts in the image is dynamically linked")
		}
	}
	ef.Close()
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "sts ") {
		t.Fatalf("sts version from the layer: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "healthcheck", "--config", filepath.Join(t.TempDir(), "absent.yaml")).CombinedOutput()
	if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("sts healthcheck without a config: %v\n%s", err, out)
	}
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range bi.Settings {
		if s.Key == "CGO_ENABLED" && s.Value != "0" || s.Key == "-trimpath" && s.Value != "true" {
			t.Errorf("build setting %s=%s", s.Key, s.Value)
		}
	}

	// SBOM: beside the layout and in the image, every module compiled in.
	sbom, err := os.ReadFile(sbomFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sbom, files[sbomPath].data) {
		t.Error("the SBOM beside the layout differs from the one in the image")
	}
	var doc spdxDocument
	if err := json.Unmarshal(sbom, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.SPDXVersion != "SPDX-2.3" || doc.DocumentNamespace == "" {
		t.Fatalf("sbom header %+v", doc)
	}
	versions := map[string]string{}
	for _, p := range doc.Packages {
		versions[p.Name] = p.VersionInfo
	}
	for _, d := range bi.Deps {
		if versions[d.Path] != d.Version {
			t.Errorf("sbom lists %s at %q, the binary has %s", d.Path, versions[d.Path], d.Version)
		}
	}
	if versions["github.com/go-jose/go-jose/v4"] == "" || versions["stdlib"] == "" {
		t.Errorf("sbom packages %v", versions)
	}

	podmanSmoke(t, dir)
}

type layerFile struct {
	hdr  *tar.Header
	data []byte
}

func readLayer(t *testing.T, l v1.Layer) map[string]layerFile {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	out := map[string]layerFile{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(io.LimitReader(tr, maxBinary))
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = layerFile{hdr: h, data: data}
	}
}

// podmanSmoke runs `sts quickstart --once` in the image with podman (the STS
// starts as the nonroot user, serves TLS, mints and verifies a token inside the
// container, and exits). It is skipped only where podman is absent or cannot
// start a container at all (an OCI runtime error); in a sandbox with hybrid
// cgroups, crun fails there and runc with cgroupfs is tried.
func podmanSmoke(t *testing.T, dir string) {
	podman, err := exec.LookPath("podman")
	if err != nil {
		t.Log("podman smoke test skipped: podman is not installed (apt-get install podman)")
		return
	}
	store := t.TempDir()
	work := t.TempDir()
	if err := os.Chmod(work, 0o777); err != nil { // written by the image's nonroot user
		t.Fatal(err)
	}
	base := []string{"--root", filepath.Join(store, "root"), "--runroot", filepath.Join(store, "run"), "--storage-driver", "vfs"}
	runArgs := []string{"--rm", "--network=none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
		"-v", work + ":/work", "oci:" + dir + ":0.1.0", "quickstart", "--once", "--dir", "/work", "--listen", "127.0.0.1:8443"}
	attempts := [][]string{nil}
	if _, err := exec.LookPath("runc"); err == nil {
		attempts = append(attempts, []string{"--runtime", "runc", "--cgroup-manager", "cgroupfs"})
	}
	var reasons []string
	for _, extra := range attempts {
		args := append(append(append(slices.Clone(base), extra...), "run"), runArgs...)
		start := time.Now()
		out, err := exec.Command(podman, args...).CombinedOutput()
		if err == nil {
			if !strings.Contains(string(out), "verifies from https://127.0.0.1:8443") {
				t.Fatalf("podman %v: the quickstart did not verify its token:\n%s", extra, out)
			}
			t.Logf("podman %v ran the image's quickstart in %s", extra, time.Since(start).Round(time.Second))
			return
		}
		if !strings.Contains(string(out), "OCI runtime") && !strings.Contains(string(out), "OCI permission denied") && !strings.Contains(string(out), "not compatible") {
			t.Fatalf("podman %v: the image failed: %v\n%s", extra, err, out)
		}
		reasons = append(reasons, lastLine(string(out)))
	}
	t.Skipf("podman cannot start containers on this machine: %s", strings.Join(reasons, "; "))
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
