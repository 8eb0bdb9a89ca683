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
	// The Kubernetes preset's consistency with sub, as a verifier would see it.
	f.Add([]byte(`{"sub":"system:serviceaccount:dev:api","kubernetes.io":{"namespace":"payments","serviceaccount":{"name":"api"}}}`))
	f.Add([]byte(`{"sub":"system:serviceaccount:dev:api","kubernetes.io":{"namespace":"dev","serviceaccount":{"name":"api"},"pod":{"name":"p","uid":"u"}}}`))
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
			// The Kubernetes preset derives nothing from a token whose claim
			// does not name the service account its sub names.
			if m.Preset() == attrs.PresetKubernetes && len(got) > 0 {
				sub, _ := claims["sub"].(string)
				if sub != "system:serviceaccount:"+got["namespace"]+":"+got["service_account"] {
					t.Fatalf("attributes %v from a token with sub %q", got, sub)
				}
			}
		}
	})
}

// FuzzGuard runs arbitrary claim JSON through an upstream guard with a condition
// reading claims and attributes and bounds: Check must never panic, must refuse
// (never admit) when it cannot evaluate, and must refuse exactly the attribute
// values outside the bounds.
func FuzzGuard(f *testing.F) {
	for _, s := range []string{
		`{}`,
		`{"sub":"system:serviceaccount:dev:api","kubernetes.io":{"namespace":"dev","serviceaccount":{"name":"api"}},"tier":"gold"}`,
		`{"sub":"system:serviceaccount:prod:api","kubernetes.io":{"namespace":"prod","serviceaccount":{"name":"api"}},"tier":1}`,
		`{"tier":["gold"],"kubernetes.io":null}`,
	} {
		f.Add([]byte(s))
	}
	m, err := attrs.Compile(attrs.PresetKubernetes, nil)
	if err != nil {
		f.Fatal(err)
	}
	g, err := attrs.NewGuard(attrs.GuardConfig{
		Condition:       `has(claims.tier) && claims.tier == "gold" && (!("pod" in attributes) || attributes.pod.startsWith("api-"))`,
		AttributeBounds: map[string][]string{"namespace": {"dev", "dev-*"}},
		Known:           append(m.Names(), "sub", "iss"),
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		claims, err := strictjson.DecodeObject(data, attest.MaxClaimsDepth)
		if err != nil {
			return
		}
		got, _ := m.Apply(claims)
		ref := g.Check(claims, got)
		ns, hasNS := got["namespace"]
		outside := hasNS && ns != "dev" && (len(ns) < 4 || ns[:4] != "dev-")
		switch {
		case outside && (ref == nil || ref.Check != "attribute_bounds.namespace"):
			t.Fatalf("namespace %q admitted: %v", ns, ref)
		case !outside && ref != nil && ref.Check != "condition":
			t.Fatalf("refused by %s with namespace %q", ref.Check, ns)
		case ref == nil && claims["tier"] != "gold":
			t.Fatalf("admitted with tier %v", claims["tier"])
		}
	})
}
