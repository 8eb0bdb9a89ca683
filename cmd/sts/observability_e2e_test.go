package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"
)

// selectorRE finds the series selectors of a PromQL expression: a safeconduct_
// metric name and its label matchers.
var (
	selectorRE = regexp.MustCompile(`\b(safeconduct_[a-z0-9_]+)(\{[^}]*\})?`)
	matcherRE  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"`)
)

// TestE2EObservabilitySeries: every series the Grafana dashboard and the
// Prometheus rules of deploy/observability query (metric name and label
// matchers, job and instance aside) is in the /metrics exposition of a started
// server with an audit file, before any request: a panel or alert never waits
// for a series that the STS does not export or only creates on a first event.
func TestE2EObservabilitySeries(t *testing.T) {
	e := setup(t, "")
	cfg, err := os.ReadFile(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	// An audit file, an upstream with runtime binding and an audit-mode rule:
	// the series of those features exist too.
	withBinding := strings.Replace(string(cfg), "    jwks_file: cluster-a-jwks.json\n",
		"    jwks_file: cluster-a-jwks.json\n    binding_attributes: [sub]\n", 1)
	e.write("sts.yaml", withBinding+"audit: {path: audit.log}\n")
	e.write("policy.yaml", e2ePolicy+`  - name: dry-run-deny-ledger
    effect: deny
    mode: audit
    upstreams: [cluster-a]
    subjects: ["system:serviceaccount:payments:*"]
    audiences: ["https://ledger.internal"]
`)
	e.start()
	plain := &http.Client{Timeout: 10 * time.Second}
	resp, err := plain.Get("http://" + e.ops + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}

	obs := filepath.Join("..", "..", "deploy", "observability")
	var exprs []string
	var rules struct {
		Groups []struct {
			Rules []struct{ Expr string }
		}
	}
	raw, err := os.ReadFile(filepath.Join(obs, "rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &rules); err != nil {
		t.Fatal(err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
		}
	}
	var dash struct {
		Panels []struct {
			Targets []struct{ Expr string } `json:"targets"`
		} `json:"panels"`
	}
	raw, err = os.ReadFile(filepath.Join(obs, "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}

	checked := map[string]bool{}
	for _, expr := range exprs {
		for _, m := range selectorRE.FindAllStringSubmatch(expr, -1) {
			sel := m[0]
			if checked[sel] {
				continue
			}
			checked[sel] = true
			if !exposed(families, m[1], matcherRE.FindAllStringSubmatch(m[2], -1)) {
				t.Errorf("%s (queried by %q) is not in /metrics at start", sel, strings.TrimSpace(expr))
			}
		}
	}
	if len(checked) < 20 {
		t.Fatalf("only %d selectors found", len(checked))
	}
	t.Logf("%d selectors of %d queries found in /metrics", len(checked), len(exprs))
}

// exposed reports whether a sample of name (a family, or a histogram's
// _bucket, _count or _sum) matches every matcher but job's and instance's.
func exposed(families map[string]*dto.MetricFamily, name string, matchers [][]string) bool {
	fam, suffix := families[name], ""
	for _, s := range []string{"_bucket", "_count", "_sum"} {
		if fam == nil && strings.HasSuffix(name, s) {
			fam, suffix = families[strings.TrimSuffix(name, s)], s
		}
	}
	if fam == nil {
		return false
	}
	if suffix != "" && fam.GetType() != dto.MetricType_HISTOGRAM {
		return false
	}
	for _, metric := range fam.GetMetric() {
		labels := map[string]string{}
		for _, lp := range metric.GetLabel() {
			labels[lp.GetName()] = lp.GetValue()
		}
		if matchAll(labels, matchers) {
			return true
		}
	}
	return false
}

func matchAll(labels map[string]string, matchers [][]string) bool {
	for _, m := range matchers {
		name, op, want := m[1], m[2], m[3]
		if name == "job" || name == "instance" || name == "le" {
			continue
		}
		got := labels[name]
		switch op {
		case "=":
			if got != want {
				return false
			}
		case "!=":
			if got == want {
				return false
			}
		case "=~", "!~":
			re, err := regexp.Compile("^(?:" + want + ")$")
			if err != nil || re.MatchString(got) != (op == "=~") {
				return false
			}
		}
	}
	return true
}
