package attrs_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/attest/attrs"
	"github.com/safeconduct/safeconduct/attest/internal/strictjson"
)

// FuzzMapping runs arbitrary claim JSON, decoded as verifiers decode it, through both
// presets: Apply must never panic, and must only ever return attributes the Mapping
// defines, with non-empty string values within MaxValueLength.
func FuzzMapping(f *testing.F) {
	for _, name := range []string{"kubernetes.json", "kubernetes-unbound.json", "github-actions.json", "github-actions-pull-request.json"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		`{}`,
		`{"kubernetes.io":null}`,
		`{"kubernetes.io":"x"}`,
		`{"kubernetes.io":[{"namespace":"x"}]}`,
		`{"kubernetes.io":{"namespace":1,"pod":[],"node":{"name":{}},"serviceaccount":{"name":"a","uid":true}}}`,
		`{"repository":1,"ref":null,"sha":[],"actor":{},"environment":""}`,
	} {
		f.Add([]byte(s))
	}
	var mappings []*attrs.Mapping
	for _, p := range attrs.Presets() {
		m, err := attrs.Compile(p, nil)
		if err != nil {
			f.Fatal(err)
		}
		mappings = append(mappings, m)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		claims, err := strictjson.DecodeObject(data, attest.MaxClaimsDepth)
		if err != nil {
			return
		}
		for _, m := range mappings {
			got, _ := m.Apply(claims)
			names := m.Names()
			for k, v := range got {
				if !slices.Contains(names, k) {
					t.Fatalf("%s: attribute %q not defined", m.Preset(), k)
				}
				if v == "" || len(v) > attrs.MaxValueLength {
					t.Fatalf("%s: attribute %q = %q", m.Preset(), k, v)
				}
			}
		}
	})
}
