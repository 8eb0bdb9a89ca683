package deploy_test

// The observability material (deploy/observability) is checked by Prometheus's
// own tool: promtool check rules (syntax, and every dashboard query as a
// recording rule) and promtool test rules (unit tests of every alert). Whether
// every series they query exists is checked against a running STS in
// cmd/sts/observability_e2e_test.go.

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const obsDir = "observability"

// promtool finds promtool; under CI=true a missing promtool fails the test
// (.ci/run installs it), elsewhere it skips.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool is not installed (Debian package prometheus; .ci/run installs it)")
		}
		t.Skip("promtool is not installed (Debian package prometheus)")
	}
	return p
}

func runPromtool(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	cmd.Dir = obsDir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestPromtoolCheckRules(t *testing.T) {
	out := runPromtool(t, "check", "rules", "rules.yaml")
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool check rules:\n%s", out)
	}
	t.Logf("promtool check rules: %s", strings.TrimSpace(out))
}

// TestPromtoolTestRules runs the unit tests and checks that every alert of
// rules.yaml has a test case where it fires.
func TestPromtoolTestRules(t *testing.T) {
	out := runPromtool(t, "test", "rules", "rules_test.yaml")
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool test rules:\n%s", out)
	}
	t.Logf("promtool test rules: %s", strings.TrimSpace(out))
	var rules struct {
		Groups []struct {
			Rules []struct{ Alert string }
		}
	}
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string
				ExpAlerts []any `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		}
	}
	readYAML(t, filepath.Join(obsDir, "rules.yaml"), &rules)
	readYAML(t, filepath.Join(obsDir, "rules_test.yaml"), &tests)
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			n++
			if !fires[r.Alert] || !quiet[r.Alert] {
				t.Errorf("alert %s lacks a unit test where it fires (%v) or one where it does not (%v)", r.Alert, fires[r.Alert], quiet[r.Alert])
			}
		}
	}
	if n == 0 {
		t.Fatal("rules.yaml has no alerts")
	}
}

// TestDashboardQueriesParse: every query of the Grafana dashboard is valid
// PromQL, by promtool, as a recording rule (Grafana variables replaced).
func TestDashboardQueriesParse(t *testing.T) {
	exprs := DashboardExprs(t, filepath.Join(obsDir, "grafana-dashboard.json"))
	if len(exprs) < 20 {
		t.Fatalf("only %d dashboard queries", len(exprs))
	}
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, e := range exprs {
		e = strings.ReplaceAll(e, "$job", ".+")
		q, _ := json.Marshal(e)
		fmt.Fprintf(&b, "      - record: dashboard:query_%d\n        expr: %s\n", i, q)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dashboard-rules.yaml"), []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(promtool(t), "check", "rules", filepath.Join(dir, "dashboard-rules.yaml"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("dashboard queries: %v\n%s", err, out)
	}
}

// DashboardExprs are the PromQL expressions of a Grafana dashboard's panels.
func DashboardExprs(t *testing.T, path string) []string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID    string `json:"uid"`
		Panels []struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if d.UID == "" {
		t.Fatalf("%s has no uid", path)
	}
	var out []string
	for _, p := range d.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			out = append(out, tg.Expr)
		}
	}
	return out
}

var metricName = regexp.MustCompile(`\bsafeconduct_[a-z0-9_]+`)

// TestObservabilityNamesKnown: the dashboard and rules query only metric names
// the STS defines (a typo would be a panel that stays empty); that they are
// exposed by a running server is cmd/sts's TestE2EObservabilitySeries.
func TestObservabilityNamesKnown(t *testing.T) {
	var src []string
	filepath.WalkDir("..", func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") {
			b, _ := os.ReadFile(p)
			src = append(src, string(b))
		}
		return nil
	})
	all := strings.Join(src, "\n")
	rules, _ := os.ReadFile(filepath.Join(obsDir, "rules.yaml"))
	dash, _ := os.ReadFile(filepath.Join(obsDir, "grafana-dashboard.json"))
	var names []string
	for _, n := range metricName.FindAllString(string(rules)+string(dash), -1) {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_count"), "_sum")
		if !slices.Contains(names, base) {
			names = append(names, base)
		}
	}
	for _, n := range names {
		if !strings.Contains(all, `"`+n+`"`) {
			t.Errorf("%s is queried but no Go source defines it", n)
		}
	}
}

// TestServiceMonitor: the monitoring component's ServiceMonitor selects the
// metrics Service by its labels and port name, and that Service selects the
// STS pods of the base on their metrics container port.
func TestServiceMonitor(t *testing.T) {
	dir := filepath.Join("kubernetes", "monitoring")
	var comp struct {
		Kind      string
		Resources []string
	}
	readYAML(t, filepath.Join(dir, "kustomization.yaml"), &comp)
	if comp.Kind != "Component" || !slices.Contains(comp.Resources, "servicemonitor.yaml") || !slices.Contains(comp.Resources, "sts-metrics-service.yaml") {
		t.Fatalf("monitoring kustomization: %+v", comp)
	}
	var sm struct {
		Kind string
		Spec struct {
			Selector struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			}
			Endpoints []struct{ Port, Path, Scheme string }
		}
	}
	readYAML(t, filepath.Join(dir, "servicemonitor.yaml"), &sm)
	var svc struct {
		Metadata struct{ Labels map[string]string }
		Spec     struct {
			Selector map[string]string
			Ports    []struct {
				Name       string
				TargetPort string `yaml:"targetPort"`
			}
		}
	}
	readYAML(t, filepath.Join(dir, "sts-metrics-service.yaml"), &svc)
	for k, v := range sm.Spec.Selector.MatchLabels {
		if svc.Metadata.Labels[k] != v {
			t.Errorf("ServiceMonitor selects %s=%s, the Service has %q", k, v, svc.Metadata.Labels[k])
		}
	}
	if sm.Kind != "ServiceMonitor" || len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Path != "/metrics" || sm.Spec.Endpoints[0].Scheme != "http" {
		t.Fatalf("ServiceMonitor endpoints: %+v", sm.Spec.Endpoints)
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != sm.Spec.Endpoints[0].Port {
		t.Fatalf("Service ports %+v, ServiceMonitor port %q", svc.Spec.Ports, sm.Spec.Endpoints[0].Port)
	}
	var dep struct {
		Spec struct {
			Template struct {
				Metadata struct{ Labels map[string]string }
				Spec     struct {
					Containers []struct {
						Ports []struct {
							Name          string
							ContainerPort int `yaml:"containerPort"`
						}
					}
				}
			}
		}
	}
	readYAML(t, filepath.Join(baseDir, "sts-deployment.yaml"), &dep)
	for k, v := range svc.Spec.Selector {
		if dep.Spec.Template.Metadata.Labels[k] != v {
			t.Errorf("metrics Service selects %s=%s, the STS pods have %q", k, v, dep.Spec.Template.Metadata.Labels[k])
		}
	}
	found := false
	for _, c := range dep.Spec.Template.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == svc.Spec.Ports[0].TargetPort && p.ContainerPort == 9090 {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("no container port %q (9090) in the Deployment", svc.Spec.Ports[0].TargetPort)
	}
}

// TestKustomizeMonitoringOverlay: the overlay deploy/README.md shows for the
// Prometheus Operator (the base plus the kubernetes/monitoring component) builds
// with kustomize's library: the base's objects, the metrics Service and the
// ServiceMonitor, all in namespace safeconduct.
func TestKustomizeMonitoringOverlay(t *testing.T) {
	fSys := readmeOverlay(t, "prod")
	prod := objects(t, build(t, fSys, "/deploy/kubernetes/prod"), "safeconduct")
	base := objects(t, build(t, fSys, "/deploy/kubernetes/base"), "safeconduct")
	for _, want := range []string{"ServiceMonitor/sts", "Service/sts-metrics", "Deployment/sts"} {
		if prod[want] == nil {
			t.Errorf("the monitoring overlay lacks %s (has %v)", want, keys(prod))
		}
	}
	if len(prod) != len(base)+2 {
		t.Errorf("the monitoring overlay has %d objects, the base %d: want 2 more", len(prod), len(base))
	}
}
