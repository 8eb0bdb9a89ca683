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
	//
	// Every attribute is derived only when the token is consistent with its
	// subject (the preset's gate, presetGates): `sub` must be exactly "system:serviceaccount:" + namespace + ":" +
	// serviceaccount.name. An upstream whose `subjects` allow
	// "system:serviceaccount:dev:*" therefore cannot assert namespace=payments
	// (or any pod or node) through its `kubernetes.io` claim: the claim and the
	// bounded subject must agree, or every Kubernetes attribute is absent.
	PresetKubernetes: {
		"namespace":           k8s + `.namespace`,
		"service_account":     k8s + `.serviceaccount.name`,
		"service_account_uid": k8sRef("serviceaccount", "uid"),
		"pod":                 k8sRef("pod", "name"),
		"pod_uid":             k8sRef("pod", "uid"),
		"node":                k8sRef("node", "name"),
		"node_uid":            k8sRef("node", "uid"),
	},
	// Top-level string claims of token.actions.githubusercontent.com (ids, run
	// numbers and ref_protected are JSON strings there too). See
	// docs/presets.md for the attack each one stops.
	PresetGitHubActions: {
		"repository":            topLevel("repository"),
		"repository_owner":      topLevel("repository_owner"),
		"repository_id":         topLevel("repository_id"),
		"repository_owner_id":   topLevel("repository_owner_id"),
		"repository_visibility": topLevel("repository_visibility"),
		"ref":                   topLevel("ref"),
		"ref_type":              topLevel("ref_type"),
		"ref_protected":         topLevel("ref_protected"),
		"head_ref":              topLevel("head_ref"),
		"base_ref":              topLevel("base_ref"),
		"sha":                   topLevel("sha"),
		"workflow":              topLevel("workflow"),
		"workflow_ref":          topLevel("workflow_ref"),
		"workflow_sha":          topLevel("workflow_sha"),
		"job_workflow_ref":      topLevel("job_workflow_ref"),
		"job_workflow_sha":      topLevel("job_workflow_sha"),
		"environment":           topLevel("environment"),
		"runner_environment":    topLevel("runner_environment"),
		"run_id":                topLevel("run_id"),
		"run_attempt":           topLevel("run_attempt"),
		"actor":                 topLevel("actor"),
		"actor_id":              topLevel("actor_id"),
		"event_name":            topLevel("event_name"),
	},
}

// k8s is the `kubernetes.io` claim.
const k8s = `claims["kubernetes.io"]`

// k8sSubject is true when the token's `kubernetes.io` claim names the service
// account its (bounded) `sub` names.
const k8sSubject = `has(claims.sub) && "kubernetes.io" in claims && has(` + k8s + `.namespace) && has(` + k8s + `.serviceaccount) && has(` + k8s + `.serviceaccount.name) && ` +
	`claims.sub == "system:serviceaccount:" + ` + k8s + `.namespace + ":" + ` + k8s + `.serviceaccount.name`

// presetGates are conditions evaluated once per credential before a preset's
// own attributes (those not overridden): when one yields false or fails, every
// such attribute is absent. Mapping.Expressions shows each gated attribute as
// `GATE ? EXPR : ""`, which is what it means.
var presetGates = map[string]string{
	PresetKubernetes: k8sSubject,
}

// k8sRef is the guarded expression for claims["kubernetes.io"][obj][field], after
// the preset's gate (k8sSubject), e.g.
//
//	has(claims["kubernetes.io"].pod) && has(claims["kubernetes.io"].pod.uid)
//	  ? claims["kubernetes.io"].pod.uid : ""
func k8sRef(obj, field string) string {
	return `has(` + k8s + `.` + obj + `) && has(` + k8s + `.` + obj + `.` + field + `) ? ` +
		k8s + `.` + obj + `.` + field + ` : ""`
}

// topLevel is the guarded expression for claims[name]: has(claims.name) ? claims.name : "".
func topLevel(name string) string {
	return `has(claims.` + name + `) ? claims.` + name + ` : ""`
}

// Presets returns the preset names Compile accepts, sorted.
func Presets() []string {
	return slices.Sorted(maps.Keys(presets))
}
