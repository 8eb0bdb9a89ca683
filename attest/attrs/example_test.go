package attrs_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/safeconduct/safeconduct/attest/attrs"
)

func Example() {
	m, err := attrs.Compile(attrs.PresetGitHubActions, map[string]string{
		// Overrides the preset's own "environment".
		"environment": `has(claims.environment) ? claims.environment : "none"`,
		"org_repo":    `claims.repository.startsWith("octo-org/") ? claims.repository : ""`,
		"run_number":  `string(int(claims.run_number))`,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	var claims map[string]any
	json.Unmarshal([]byte(`{
		"sub": "repo:octo-org/octo-repo:ref:refs/heads/main",
		"repository": "octo-org/octo-repo", "repository_owner": "octo-org",
		"ref": "refs/heads/main", "run_number": 10
	}`), &claims)

	got, err := m.Apply(claims)
	for _, name := range slices.Sorted(maps.Keys(got)) {
		fmt.Printf("%s=%s\n", name, got[name])
	}
	fmt.Println("errors:", err)
	// Output:
	// environment=none
	// org_repo=octo-org/octo-repo
	// ref=refs/heads/main
	// repository=octo-org/octo-repo
	// repository_owner=octo-org
	// run_number=10
	// errors: <nil>
}

// The preset definitions are CEL expressions like any other. The Kubernetes
// preset derives its attributes only from a token whose kubernetes.io claim
// names the service account its sub names.
func ExampleMapping_Expressions() {
	m, _ := attrs.Compile(attrs.PresetKubernetes, nil)
	fmt.Println(strings.Join(m.Names(), ", "))
	fmt.Println("namespace:", m.Expressions()["namespace"])
	// Output:
	// namespace, node, node_uid, pod, pod_uid, service_account, service_account_uid
	// namespace: has(claims.sub) && "kubernetes.io" in claims && has(claims["kubernetes.io"].namespace) && has(claims["kubernetes.io"].serviceaccount) && has(claims["kubernetes.io"].serviceaccount.name) && claims.sub == "system:serviceaccount:" + claims["kubernetes.io"].namespace + ":" + claims["kubernetes.io"].serviceaccount.name ? claims["kubernetes.io"].namespace : ""
}
