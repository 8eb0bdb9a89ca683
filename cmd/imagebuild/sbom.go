package main

import (
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"encoding/json"
	"strings"
	"time"
)

// SPDX 2.3 JSON (https://spdx.github.io/spdx-spec/v2.3/), the fields a scanner
// (Trivy, Grype, GitHub's dependency graph) reads: one package per Go module
// compiled into sts (from its build info), each with a purl.
type spdxDocument struct {
	SPDXVersion       string             `json:"spdxVersion"`
	DataLicense       string             `json:"dataLicense"`
	SPDXID            string             `json:"SPDXID"`
	Name              string             `json:"name"`
	DocumentNamespace string             `json:"documentNamespace"`
	CreationInfo      spdxCreationInfo   `json:"creationInfo"`
	Packages          []spdxPackage      `json:"packages"`
	Relationships     []spdxRelationship `json:"relationships"`
}

type spdxCreationInfo struct {
	Created  string   `json:"created"`
	Creators []string `json:"creators"`
}

type spdxPackage struct {
	Name             string            `json:"name"`
	SPDXID           string            `json:"SPDXID"`
	VersionInfo      string            `json:"versionInfo,omitempty"`
	DownloadLocation string            `json:"downloadLocation"`
	FilesAnalyzed    bool              `json:"filesAnalyzed"`
	Checksums        []spdxChecksum    `json:"checksums,omitempty"`
	ExternalRefs     []spdxExternalRef `json:"externalRefs,omitempty"`
}

type spdxChecksum struct {
	Algorithm     string `json:"algorithm"`
	ChecksumValue string `json:"checksumValue"`
}

type spdxExternalRef struct {
	ReferenceCategory string `json:"referenceCategory"`
	ReferenceType     string `json:"referenceType"`
	ReferenceLocator  string `json:"referenceLocator"`
}

type spdxRelationship struct {
	Element string `json:"spdxElementId"`
	Type    string `json:"relationshipType"`
	Related string `json:"relatedSpdxElement"`
}

// spdxID makes an SPDX identifier from a module path (letters, digits, . and -).
func spdxID(prefix, path string) string {
	var b strings.Builder
	b.WriteString("SPDXRef-" + prefix + "-")
	for _, r := range path {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	return b.String()
}

// spdxSBOM renders the SBOM of bi: the main module, the Go toolchain (its
// standard library is compiled in) and every dependency module (replacements
// resolved). The namespace is derived from the content, so the document is as
// reproducible as the build.
func spdxSBOM(bi *buildinfo.BuildInfo, o options) ([]byte, error) {
	doc := spdxDocument{
		SPDXVersion: "SPDX-2.3", DataLicense: "CC0-1.0", SPDXID: "SPDXRef-DOCUMENT",
		Name:         "safeconduct-sts-" + o.version,
		CreationInfo: spdxCreationInfo{Created: o.epoch.UTC().Format(time.RFC3339), Creators: []string{"Tool: safeconduct-imagebuild"}},
	}
	mainID := spdxID("Package", bi.Main.Path)
	doc.Packages = append(doc.Packages, spdxPackage{
		Name: bi.Main.Path, SPDXID: mainID, VersionInfo: o.version, DownloadLocation: sourceURL,
		ExternalRefs: []spdxExternalRef{{"PACKAGE-MANAGER", "purl", "pkg:golang/" + bi.Main.Path + "@" + o.version}},
	})
	doc.Relationships = append(doc.Relationships, spdxRelationship{"SPDXRef-DOCUMENT", "DESCRIBES", mainID})
	goVer := strings.TrimPrefix(bi.GoVersion, "go")
	goID := spdxID("Package", "golang.org/toolchain")
	doc.Packages = append(doc.Packages, spdxPackage{
		Name: "stdlib", SPDXID: goID, VersionInfo: goVer, DownloadLocation: "https://go.dev/dl/",
		ExternalRefs: []spdxExternalRef{{"PACKAGE-MANAGER", "purl", "pkg:golang/stdlib@" + goVer}},
	})
	doc.Relationships = append(doc.Relationships, spdxRelationship{mainID, "DEPENDS_ON", goID})
	for _, d := range bi.Deps {
		if d.Replace != nil {
			d = d.Replace
		}
		id := spdxID("Package", d.Path+"-"+d.Version)
		p := spdxPackage{
			Name: d.Path, SPDXID: id, VersionInfo: d.Version, DownloadLocation: "https://proxy.golang.org/" + strings.ToLower(d.Path) + "/@v/" + d.Version + ".zip",
			ExternalRefs: []spdxExternalRef{{"PACKAGE-MANAGER", "purl", "pkg:golang/" + d.Path + "@" + d.Version}},
		}
		if h, ok := strings.CutPrefix(d.Sum, "h1:"); ok {
			// The go.sum h1: hash is a SHA-256 (of the module's file list), base64.
			p.ExternalRefs = append(p.ExternalRefs, spdxExternalRef{"OTHER", "go-module-sum", "h1:" + h})
		}
		doc.Packages = append(doc.Packages, p)
		doc.Relationships = append(doc.Relationships, spdxRelationship{mainID, "DEPENDS_ON", id})
	}
	body, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(body)
	doc.DocumentNamespace = sourceURL + "/sbom/" + o.version + "-" + hex.EncodeToString(sum[:8])
	return json.MarshalIndent(doc, "", "  ")
}
