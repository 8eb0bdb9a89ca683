package deploy_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/resmap"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// build runs kustomize (its library, krusty, as `kustomize build` does) on dir
// of fSys.
func build(t *testing.T, fSys filesys.FileSystem, dir string) resmap.ResMap {
	t.Helper()
	rm, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fSys, dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	return rm
}

// objects indexes a build's objects as "Kind/name" (namespace checked).
func objects(t *testing.T, rm resmap.ResMap, namespace string) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, r := range rm.Resources() {
		m, err := r.Map()
		if err != nil {
			t.Fatal(err)
		}
		if ns := r.GetNamespace(); ns != namespace {
			t.Errorf("%s/%s in namespace %q, want %q", r.GetKind(), r.GetName(), ns, namespace)
		}
		out[r.GetKind()+"/"+r.GetName()] = m
	}
	return out
}

// TestKustomizeBuild: `kustomize build deploy/kubernetes` (and the base) works:
// every object of the base, in namespace safeconduct, the sts.yaml ConfigMap with
// a content hash that the Deployment refers to, the policy ConfigMap without one.
func TestKustomizeBuild(t *testing.T) {
	fSys := filesys.MakeFsOnDisk()
	top := objects(t, build(t, fSys, "kubernetes"), "safeconduct")
	base := objects(t, build(t, fSys, baseDir), "safeconduct")
	if len(top) != len(base) {
		t.Fatalf("deploy/kubernetes builds %d objects, the base %d", len(top), len(base))
	}
	var cfgName string
	for _, want := range []string{"Deployment/sts", "StatefulSet/sts-redis", "Service/sts", "Service/sts-redis",
		"PodDisruptionBudget/sts", "ServiceAccount/sts", "ConfigMap/sts-policy"} {
		if top[want] == nil {
			t.Errorf("the build lacks %s (has %v)", want, keys(top))
		}
	}
	for k := range top {
		if strings.HasPrefix(k, "ConfigMap/sts-config-") {
			cfgName = strings.TrimPrefix(k, "ConfigMap/")
		}
	}
	if !regexp.MustCompile(`^sts-config-[a-z0-9]{10}$`).MatchString(cfgName) {
		t.Fatalf("no hashed sts-config ConfigMap in %v", keys(top))
	}
	var volumes []string
	spec := dig(top["Deployment/sts"], "spec", "template", "spec")
	for _, v := range asList(spec["volumes"]) {
		vm := v.(map[string]any)
		sources := []any{vm}
		if p := dig(vm, "projected"); p != nil {
			sources = asList(p["sources"])
		}
		for _, src := range sources {
			if cm := dig(src.(map[string]any), "configMap"); cm != nil {
				volumes = append(volumes, cm["name"].(string))
			}
		}
	}
	if !slices.Contains(volumes, cfgName) || !slices.Contains(volumes, "sts-policy") {
		t.Fatalf("the Deployment's ConfigMap volumes %v do not name %s and sts-policy", volumes, cfgName)
	}
}

// TestKustomizeTrialOverlay: the overlay deploy/README.md shows ("A trial without
// a signing-key Secret") builds against the base and does what it says: one
// replica, an emptyDir for the keys, a writable mount, no PodDisruptionBudget.
func TestKustomizeTrialOverlay(t *testing.T) {
	fSys := readmeOverlay(t, "trial")
	trial := objects(t, build(t, fSys, "/deploy/kubernetes/trial"), "safeconduct")
	if trial["PodDisruptionBudget/sts"] != nil {
		t.Error("the trial overlay keeps the PodDisruptionBudget")
	}
	spec := dig(trial["Deployment/sts"], "spec")
	if spec["replicas"] != 1 {
		t.Errorf("trial replicas %v, want 1", spec["replicas"])
	}
	pod := dig(spec, "template", "spec")
	var emptyDir bool
	for _, v := range asList(pod["volumes"]) {
		vm := v.(map[string]any)
		if vm["name"] == "signing-keys" {
			emptyDir = vm["emptyDir"] != nil && vm["secret"] == nil
		}
	}
	if !emptyDir {
		t.Errorf("the signing-keys volume is not an emptyDir: %v", pod["volumes"])
	}
	for _, vm := range asList(dig(asList(pod["containers"])[0].(map[string]any))["volumeMounts"]) {
		if mm := vm.(map[string]any); mm["name"] == "signing-keys" && mm["readOnly"] == true {
			t.Error("the signing-keys mount stays read-only")
		}
	}
}

// readmeOverlay returns an in-memory copy of deploy/kubernetes with the overlay
// deploy/README.md shows for deploy/kubernetes/NAME (its yaml block starting
// with "# deploy/kubernetes/NAME/kustomization.yaml") written in place.
func readmeOverlay(t *testing.T, name string) filesys.FileSystem {
	t.Helper()
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	marker := "# deploy/kubernetes/" + name + "/kustomization.yaml"
	m := regexp.MustCompile("(?s)```yaml\n(" + regexp.QuoteMeta(marker) + "[^\n]*\n.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatalf("deploy/README.md has no yaml block starting with %q", marker)
	}
	fSys := filesys.MakeFsInMemory()
	err = filepath.WalkDir("kubernetes", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return fSys.WriteFile("/deploy/"+filepath.ToSlash(p), data)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := fSys.WriteFile("/deploy/kubernetes/"+name+"/kustomization.yaml", m[1]); err != nil {
		t.Fatal(err)
	}
	return fSys
}

func keys(m map[string]map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// dig walks nested maps; nil when a step is missing.
func dig(m map[string]any, path ...string) map[string]any {
	for _, p := range path {
		next, _ := m[p].(map[string]any)
		if next == nil {
			return nil
		}
		m = next
	}
	return m
}

func asList(v any) []any { l, _ := v.([]any); return l }
