package attrs_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"

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

// The preset definitions are CEL expressions like any other.
func ExampleMapping_Expressions() {
	m, _ := attrs.Compile(attrs.PresetKubernetes, nil)
	exprs := m.Expressions()
	for _, name := range m.Names() {
		fmt.Printf("%s: %s\n", name, exprs[name])
	}
	// Output:
	// namespace: "kubernetes.io" in claims && has(claims["kubernetes.io"].namespace) ? claims["kubernetes.io"].namespace : ""
	// node: "kubernetes.io" in claims && has(claims["kubernetes.io"].node) && has(claims["kubernetes.io"].node.name) ? claims["kubernetes.io"].node.name : ""
	// node_uid: "kubernetes.io" in claims && has(claims["kubernetes.io"].node) && has(claims["kubernetes.io"].node.uid) ? claims["kubernetes.io"].node.uid : ""
	// pod: "kubernetes.io" in claims && has(claims["kubernetes.io"].pod) && has(claims["kubernetes.io"].pod.name) ? claims["kubernetes.io"].pod.name : ""
	// pod_uid: "kubernetes.io" in claims && has(claims["kubernetes.io"].pod) && has(claims["kubernetes.io"].pod.uid) ? claims["kubernetes.io"].pod.uid : ""
	// service_account: "kubernetes.io" in claims && has(claims["kubernetes.io"].serviceaccount) && has(claims["kubernetes.io"].serviceaccount.name) ? claims["kubernetes.io"].serviceaccount.name : ""
	// service_account_uid: "kubernetes.io" in claims && has(claims["kubernetes.io"].serviceaccount) && has(claims["kubernetes.io"].serviceaccount.uid) ? claims["kubernetes.io"].serviceaccount.uid : ""
}
