// Command imagebuild builds the safeconduct container image without a Docker
// daemon or registry: static sts and stsctl binaries (CGO_ENABLED=0, -trimpath,
// no VCS stamp, no build ID), the host's CA bundle, a nonroot user and no shell,
// in one layer with fixed timestamps, written as an OCI image layout, with an
// SPDX 2.3 SBOM of the Go modules compiled in (in the image and beside the
// layout). The same sources, toolchain and CA bundle give the same digest.
//
//	go run ./cmd/imagebuild --out build/image/oci     # or: make image
//	podman run --rm oci:build/image/oci:0.1.0 version
//
// The image's binaries have no PKCS#11 (it needs cgo): see the README's HSM
// section for a cgo build.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("imagebuild", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.out, "out", "build/image/oci", "the OCI image layout directory to write (replaced if it holds a layout)")
	fs.StringVar(&o.sbom, "sbom", "", "where to write the SPDX SBOM as well (default: beside the layout, OUT.spdx.json)")
	fs.StringVar(&o.module, "module", ".", "the safeconduct module directory")
	fs.StringVar(&o.version, "version", "0.1.0", "the image version: the layout's ref name and the version label")
	fs.StringVar(&o.arch, "arch", runtime.GOARCH, "GOARCH of the image")
	fs.StringVar(&o.caBundle, "ca-bundle", "/etc/ssl/certs/ca-certificates.crt", "the CA bundle to ship (Debian's ca-certificates)")
	epoch := fs.Int64("source-date-epoch", -1, "the timestamp of every file and of the image (default: $SOURCE_DATE_EPOCH, else the HEAD commit time, else 0)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: imagebuild [--out DIR] [--sbom FILE] [--version V] [--arch A] [--source-date-epoch N]")
		return 2
	}
	if o.sbom == "" {
		o.sbom = o.out + ".spdx.json"
	}
	o.epoch = sourceDateEpoch(*epoch, o.module)
	res, err := build(o)
	if err != nil {
		fmt.Fprintln(stderr, "imagebuild:", err)
		return 1
	}
	fmt.Fprintf(stdout, "image %s\nlayout %s (ref %s)\nsbom %s\ncreated %s\n", res.digest, o.out, o.version, o.sbom, o.epoch.UTC().Format(time.RFC3339))
	return 0
}
