package attrs

import (
	"maps"
	"slices"
)

// Preset names.
const (
	// PresetKubernetes maps the `kubernetes.io` claim of a Kubernetes projected
	// service account token.
	PresetKubernetes = "kubernetes"
	// PresetGitHubActions maps the claims of a GitHub Actions OIDC token.
	PresetGitHubActions = "github_actions"
)

// presets are plain CEL expressions, compiled like any other. Each guards the path it
// reads with `in` and has(), so that a claim the token does not carry yields "" (an
// absent attribute) rather than an evaluation error. A claim of the wrong type (a
// number where a string belongs) still fails and is reported by Apply.
var presets = map[string]map[string]string{
	// The layout of k8s.io/kubernetes pkg/serviceaccount/claims.go:
	//
	//	"kubernetes.io": {
	//	  "namespace": "...",
	//	  "serviceaccount": {"name": "...", "uid": "..."},
	//	  "pod":  {"name": "...", "uid": "..."},  // pod-bound tokens
	//	  "node": {"name": "...", "uid": "..."},  // pod-bound (1.30+) or node-bound tokens
	//	  "secret": {...}, "warnafter": 1700000000
	//	}
	PresetKubernetes: {
		"namespace":           `"kubernetes.io" in claims && has(claims["kubernetes.io"].namespace) ? claims["kubernetes.io"].namespace : ""`,
		"service_account":     k8sRef("serviceaccount", "name"),
		"service_account_uid": k8sRef("serviceaccount", "uid"),
		"pod":                 k8sRef("pod", "name"),
		"pod_uid":             k8sRef("pod", "uid"),
		"node":                k8sRef("node", "name"),
		"node_uid":            k8sRef("node", "uid"),
	},
	// Top-level string claims of token.actions.githubusercontent.com (ids and
	// run numbers are JSON strings there too).
	PresetGitHubActions: {
		"repository":       topLevel("repository"),
		"repository_owner": topLevel("repository_owner"),
		"repository_id":    topLevel("repository_id"),
		"ref":              topLevel("ref"),
		"ref_type":         topLevel("ref_type"),
		"sha":              topLevel("sha"),
		"workflow":         topLevel("workflow"),
		"workflow_ref":     topLevel("workflow_ref"),
		"job_workflow_ref": topLevel("job_workflow_ref"),
		"environment":      topLevel("environment"),
		"run_id":           topLevel("run_id"),
		"run_attempt":      topLevel("run_attempt"),
		"actor":            topLevel("actor"),
		"event_name":       topLevel("event_name"),
	},
}

// k8sRef is the guarded expression for claims["kubernetes.io"][obj][field], e.g.
//
//	"kubernetes.io" in claims && has(claims["kubernetes.io"].pod) && has(claims["kubernetes.io"].pod.uid)
//	  ? claims["kubernetes.io"].pod.uid : ""
func k8sRef(obj, field string) string {
	k := `claims["kubernetes.io"]`
	return `"kubernetes.io" in claims && has(` + k + `.` + obj + `) && has(` + k + `.` + obj + `.` + field + `) ? ` +
		k + `.` + obj + `.` + field + ` : ""`
}

// topLevel is the guarded expression for claims[name]: has(claims.name) ? claims.name : "".
func topLevel(name string) string {
	return `has(claims.` + name + `) ? claims.` + name + ` : ""`
}

// Presets returns the preset names Compile accepts, sorted.
func Presets() []string {
	return slices.Sorted(maps.Keys(presets))
}
