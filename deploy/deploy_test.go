package deploy_test

// These tests hold the deployment material together: every YAML file parses, the
// kustomize base refers to files that exist and to Secrets and ConfigMaps that are
// either generated or documented as the operator's, its selectors, probes, ports and
// mounts agree with each other and with the STS configuration it ships, that
// configuration and every example pass the STS's own loader, the compose file refers to
// files that exist, and the Dockerfile builds a non-root image from pinned tags. They
// need no cluster and no Docker engine (see deploy/README.md for what they cannot
// check).

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/safeconduct/safeconduct/config"
	"github.com/safeconduct/safeconduct/internal/watch"
)

const baseDir = "kubernetes/base"

// The objects the base refers to but does not generate: the operator creates them
// (deploy/README.md says how). Anything else a workload refers to must come from the
// kustomization's generators.
var (
	operatorSecrets    = []string{"sts-tls", "sts-signing-keys", "sts-redis"}
	operatorConfigMaps = []string{"sts-upstream-jwks"}
)

// Files the compose setup's sts.yaml names that the user makes locally (compose.yaml
// says how; deploy/compose/.gitignore keeps them out of git).
var composeLocalFiles = []string{"tls.crt", "tls.key", "demo-upstream-jwks.json"}

// stsDrain is how long the STS drains in-flight requests on SIGTERM (cmd/sts).
const stsDrain = 10

// ---------------------------------------------------------------------------
// YAML syntax

func TestYAMLFilesParse(t *testing.T) {
	n := 0
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !(strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			return nil
		}
		n++
		docs, err := decodeAll(p)
		if err != nil {
			t.Errorf("%s: %v", p, err)
		} else if len(docs) == 0 {
			t.Errorf("%s: no YAML document", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Fatalf("found only %d YAML files under deploy/", n)
	}
}

// decodeAll parses every document of a (multi-document) YAML file.
func decodeAll(p string) ([]*yaml.Node, error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []*yaml.Node
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if n.Kind == yaml.DocumentNode && len(n.Content) == 1 && n.Content[0].Tag == "!!null" {
			continue // an empty document (e.g. after a trailing ---)
		}
		docs = append(docs, &n)
	}
}

// ---------------------------------------------------------------------------
// Kubernetes object shapes: only the fields the checks read.

type intOrString string

func (v *intOrString) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a number or a name", n.Line)
	}
	*v = intOrString(n.Value)
	return nil
}

type labelSelector struct {
	MatchLabels      map[string]string `yaml:"matchLabels"`
	MatchExpressions []yaml.Node       `yaml:"matchExpressions"`
}

// matches reports whether the selector selects labels. Only matchLabels is
// supported; an empty selector would select everything and is refused here.
func (s labelSelector) matches(t *testing.T, labels map[string]string) bool {
	t.Helper()
	if len(s.MatchExpressions) > 0 {
		t.Fatal("matchExpressions are not supported by this test; use matchLabels")
	}
	if len(s.MatchLabels) == 0 {
		t.Fatal("empty label selector")
	}
	return subset(s.MatchLabels, labels)
}

func subset(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

type meta struct {
	Name        string            `yaml:"name"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type keyToPath struct {
	Key  string `yaml:"key"`
	Path string `yaml:"path"`
}

type objectRef struct {
	Name     string      `yaml:"name"`
	Items    []keyToPath `yaml:"items"`
	Optional bool        `yaml:"optional"`
}

type volume struct {
	Name      string     `yaml:"name"`
	ConfigMap *objectRef `yaml:"configMap"`
	Secret    *struct {
		SecretName  string      `yaml:"secretName"`
		Items       []keyToPath `yaml:"items"`
		DefaultMode *int        `yaml:"defaultMode"`
	} `yaml:"secret"`
	Projected *struct {
		Sources []struct {
			ConfigMap *objectRef `yaml:"configMap"`
			Secret    *objectRef `yaml:"secret"`
		} `yaml:"sources"`
	} `yaml:"projected"`
	EmptyDir *yaml.Node `yaml:"emptyDir"`
}

type keyRef struct {
	Name string `yaml:"name"`
	Key  string `yaml:"key"`
}

type probe struct {
	HTTPGet *struct {
		Path   string      `yaml:"path"`
		Port   intOrString `yaml:"port"`
		Scheme string      `yaml:"scheme"`
	} `yaml:"httpGet"`
	Exec *struct {
		Command []string `yaml:"command"`
	} `yaml:"exec"`
}

type container struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Env []struct {
		Name      string `yaml:"name"`
		ValueFrom *struct {
			SecretKeyRef    *keyRef `yaml:"secretKeyRef"`
			ConfigMapKeyRef *keyRef `yaml:"configMapKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
			Add  []string `yaml:"add"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	StartupProbe   *probe `yaml:"startupProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	Lifecycle      *struct {
		PreStop *struct {
			Sleep *struct {
				Seconds int `yaml:"seconds"`
			} `yaml:"sleep"`
		} `yaml:"preStop"`
	} `yaml:"lifecycle"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
		SubPath   string `yaml:"subPath"`
	} `yaml:"volumeMounts"`
}

// port resolves a probe or Service port (a number or a port name) to a number.
func (c *container) port(t *testing.T, p intOrString) int {
	t.Helper()
	if n, err := strconv.Atoi(string(p)); err == nil {
		return n
	}
	for _, cp := range c.Ports {
		if cp.Name == string(p) {
			return cp.ContainerPort
		}
	}
	t.Fatalf("container %s has no port named %q", c.Name, p)
	return 0
}

type podSpec struct {
	ServiceAccountName            string `yaml:"serviceAccountName"`
	AutomountServiceAccountToken  *bool  `yaml:"automountServiceAccountToken"`
	TerminationGracePeriodSeconds *int   `yaml:"terminationGracePeriodSeconds"`
	SecurityContext               struct {
		RunAsNonRoot   *bool  `yaml:"runAsNonRoot"`
		RunAsUser      *int64 `yaml:"runAsUser"`
		RunAsGroup     *int64 `yaml:"runAsGroup"`
		FSGroup        *int64 `yaml:"fsGroup"`
		SeccompProfile struct {
			Type string `yaml:"type"`
		} `yaml:"seccompProfile"`
	} `yaml:"securityContext"`
	TopologySpreadConstraints []struct {
		TopologyKey       string        `yaml:"topologyKey"`
		WhenUnsatisfiable string        `yaml:"whenUnsatisfiable"`
		LabelSelector     labelSelector `yaml:"labelSelector"`
	} `yaml:"topologySpreadConstraints"`
	Containers     []container `yaml:"containers"`
	InitContainers []container `yaml:"initContainers"`
	Volumes        []volume    `yaml:"volumes"`
}

type workload struct {
	Kind     string `yaml:"kind"`
	Metadata meta   `yaml:"metadata"`
	Spec     struct {
		Replicas    *int          `yaml:"replicas"`
		ServiceName string        `yaml:"serviceName"`
		Selector    labelSelector `yaml:"selector"`
		Template    struct {
			Metadata meta    `yaml:"metadata"`
			Spec     podSpec `yaml:"spec"`
		} `yaml:"template"`
		VolumeClaimTemplates []struct {
			Metadata meta `yaml:"metadata"`
		} `yaml:"volumeClaimTemplates"`
	} `yaml:"spec"`
}

func (w *workload) podLabels() map[string]string { return w.Spec.Template.Metadata.Labels }

func (w *workload) container(t *testing.T, name string) *container {
	t.Helper()
	for i := range w.Spec.Template.Spec.Containers {
		if c := &w.Spec.Template.Spec.Containers[i]; c.Name == name {
			return c
		}
	}
	t.Fatalf("%s %s has no container %q", w.Kind, w.Metadata.Name, name)
	return nil
}

type service struct {
	Metadata meta `yaml:"metadata"`
	Spec     struct {
		Type      string            `yaml:"type"`
		ClusterIP string            `yaml:"clusterIP"`
		Selector  map[string]string `yaml:"selector"`
		Ports     []struct {
			Name       string      `yaml:"name"`
			Port       int         `yaml:"port"`
			TargetPort intOrString `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type pdb struct {
	Metadata meta `yaml:"metadata"`
	Spec     struct {
		MinAvailable *intOrString  `yaml:"minAvailable"`
		Selector     labelSelector `yaml:"selector"`
	} `yaml:"spec"`
}

type npPeer struct {
	PodSelector       *labelSelector `yaml:"podSelector"`
	NamespaceSelector *labelSelector `yaml:"namespaceSelector"`
	IPBlock           *struct {
		CIDR string `yaml:"cidr"`
	} `yaml:"ipBlock"`
}

type npPort struct {
	Protocol string      `yaml:"protocol"`
	Port     intOrString `yaml:"port"`
}

type networkPolicy struct {
	Metadata meta `yaml:"metadata"`
	Spec     struct {
		PodSelector labelSelector `yaml:"podSelector"`
		PolicyTypes []string      `yaml:"policyTypes"`
		Ingress     []struct {
			From  []npPeer `yaml:"from"`
			Ports []npPort `yaml:"ports"`
		} `yaml:"ingress"`
		Egress []struct {
			To    []npPeer `yaml:"to"`
			Ports []npPort `yaml:"ports"`
		} `yaml:"egress"`
	} `yaml:"spec"`
}

type serviceAccount struct {
	Metadata                     meta  `yaml:"metadata"`
	AutomountServiceAccountToken *bool `yaml:"automountServiceAccountToken"`
}

// ---------------------------------------------------------------------------
// The kustomize base

type generator struct {
	Name     string   `yaml:"name"`
	Files    []string `yaml:"files"`
	Envs     []string `yaml:"envs"`
	Literals []string `yaml:"literals"`
}

// fileKeys returns the ConfigMap/Secret keys and source files of a generator's
// `files` entries ("file" or "key=file").
func (g generator) fileKeys() map[string]string {
	m := map[string]string{}
	for _, f := range g.Files {
		key, file, ok := strings.Cut(f, "=")
		if !ok {
			key, file = path.Base(f), f
		}
		m[key] = file
	}
	return m
}

type kustomization struct {
	Namespace          string      `yaml:"namespace"`
	Resources          []string    `yaml:"resources"`
	ConfigMapGenerator []generator `yaml:"configMapGenerator"`
	SecretGenerator    []generator `yaml:"secretGenerator"`
}

// base is the kustomize base, loaded and indexed.
type base struct {
	k               kustomization
	configMaps      map[string]generator // generated
	secrets         map[string]generator // generated
	workloads       map[string]*workload // "Deployment/sts"
	services        map[string]*service
	pdbs            []*pdb
	networkPolicies map[string]*networkPolicy
	serviceAccounts map[string]*serviceAccount
}

func loadBase(t *testing.T) *base {
	t.Helper()
	b := &base{
		configMaps:      map[string]generator{},
		secrets:         map[string]generator{},
		workloads:       map[string]*workload{},
		services:        map[string]*service{},
		networkPolicies: map[string]*networkPolicy{},
		serviceAccounts: map[string]*serviceAccount{},
	}
	docs, err := decodeAll(filepath.Join(baseDir, "kustomization.yaml"))
	if err != nil || len(docs) != 1 {
		t.Fatalf("kustomization.yaml: %v (%d documents)", err, len(docs))
	}
	if err := docs[0].Decode(&b.k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if len(b.k.Resources) == 0 {
		t.Fatal("kustomization.yaml lists no resources")
	}
	for _, g := range b.k.ConfigMapGenerator {
		b.configMaps[g.Name] = g
	}
	for _, g := range b.k.SecretGenerator {
		b.secrets[g.Name] = g
	}
	for _, r := range b.k.Resources {
		p := filepath.Join(baseDir, r)
		docs, err := decodeAll(p)
		if err != nil {
			t.Fatalf("resource %s: %v", r, err)
		}
		for _, d := range docs {
			var head struct {
				Kind     string `yaml:"kind"`
				Metadata meta   `yaml:"metadata"`
			}
			if err := d.Decode(&head); err != nil {
				t.Fatalf("%s: %v", r, err)
			}
			var out any
			switch head.Kind {
			case "Deployment", "StatefulSet":
				w := &workload{}
				b.workloads[head.Kind+"/"+head.Metadata.Name] = w
				out = w
			case "Service":
				s := &service{}
				b.services[head.Metadata.Name] = s
				out = s
			case "PodDisruptionBudget":
				p := &pdb{}
				b.pdbs = append(b.pdbs, p)
				out = p
			case "NetworkPolicy":
				n := &networkPolicy{}
				b.networkPolicies[head.Metadata.Name] = n
				out = n
			case "ServiceAccount":
				s := &serviceAccount{}
				b.serviceAccounts[head.Metadata.Name] = s
				out = s
			default:
				t.Fatalf("%s: kind %q is not checked by this test; extend it", r, head.Kind)
			}
			if err := d.Decode(out); err != nil {
				t.Fatalf("%s: %s %s: %v", r, head.Kind, head.Metadata.Name, err)
			}
		}
	}
	return b
}

func (b *base) workload(t *testing.T, kind, name string) *workload {
	t.Helper()
	w := b.workloads[kind+"/"+name]
	if w == nil {
		t.Fatalf("the base has no %s %s", kind, name)
	}
	return w
}

func TestKustomizationFilesExist(t *testing.T) {
	b := loadBase(t)
	for _, r := range b.k.Resources {
		st, err := os.Stat(filepath.Join(baseDir, r))
		if err != nil {
			t.Errorf("resource %s: %v", r, err)
		} else if st.IsDir() {
			if _, err := os.Stat(filepath.Join(baseDir, r, "kustomization.yaml")); err != nil {
				t.Errorf("resource %s is a directory without kustomization.yaml", r)
			}
		}
	}
	for _, g := range slices.Concat(b.k.ConfigMapGenerator, b.k.SecretGenerator) {
		if len(g.Files)+len(g.Envs)+len(g.Literals) == 0 {
			t.Errorf("generator %s has no content", g.Name)
		}
		for _, f := range g.fileKeys() {
			if _, err := os.Stat(filepath.Join(baseDir, f)); err != nil {
				t.Errorf("generator %s: %v", g.Name, err)
			}
		}
		for _, f := range g.Envs {
			if _, err := os.Stat(filepath.Join(baseDir, f)); err != nil {
				t.Errorf("generator %s: %v", g.Name, err)
			}
		}
	}
	// Every YAML file in the base is used: a resource, a generator input or the
	// kustomization itself.
	used := map[string]bool{"kustomization.yaml": true}
	for _, r := range b.k.Resources {
		used[r] = true
	}
	for _, g := range b.k.ConfigMapGenerator {
		for _, f := range g.fileKeys() {
			used[f] = true
		}
	}
	entries, err := os.ReadDir(baseDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".yaml") && !used[e.Name()] {
			t.Errorf("%s/%s is neither a resource nor a generator input", baseDir, e.Name())
		}
	}
}

// The labels every object of the base carries, and the component label that tells
// the STS from Redis.
const (
	labelName      = "app.kubernetes.io/name"
	labelComponent = "app.kubernetes.io/component"
)

func TestBaseLabelsAndSelectors(t *testing.T) {
	b := loadBase(t)
	sts := b.workload(t, "Deployment", "sts")
	redis := b.workload(t, "StatefulSet", "sts-redis")

	for _, w := range []*workload{sts, redis} {
		if w.podLabels()[labelName] != "safeconduct" || w.podLabels()[labelComponent] == "" {
			t.Errorf("%s %s: pod labels %v lack %s: safeconduct and a %s", w.Kind, w.Metadata.Name, w.podLabels(), labelName, labelComponent)
		}
		if !w.Spec.Selector.matches(t, w.podLabels()) {
			t.Errorf("%s %s: selector %v does not match its pod labels %v", w.Kind, w.Metadata.Name, w.Spec.Selector.MatchLabels, w.podLabels())
		}
		if !subset(w.Metadata.Labels, w.podLabels()) {
			t.Errorf("%s %s: object labels %v differ from its pod labels", w.Kind, w.Metadata.Name, w.Metadata.Labels)
		}
	}
	if subset(sts.Spec.Selector.MatchLabels, redis.podLabels()) || subset(redis.Spec.Selector.MatchLabels, sts.podLabels()) {
		t.Error("the STS and Redis selectors overlap")
	}
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 3 {
		t.Errorf("Deployment sts: want 3 replicas")
	}
	spread := false
	for _, c := range sts.Spec.Template.Spec.TopologySpreadConstraints {
		if !c.LabelSelector.matches(t, sts.podLabels()) {
			t.Errorf("Deployment sts: the %s spread constraint does not select its own pods", c.TopologyKey)
		}
		if c.TopologyKey == "kubernetes.io/hostname" && c.WhenUnsatisfiable == "DoNotSchedule" {
			spread = true
		}
	}
	if !spread {
		t.Error("Deployment sts: no hard topology spread over kubernetes.io/hostname selecting its pods")
	}

	// Services: the STS one selects exactly the STS pods and maps 443 to the
	// container's port; the Redis one is the StatefulSet's headless service.
	svc := b.services["sts"]
	if svc == nil {
		t.Fatal("the base has no Service sts")
	}
	if svc.Spec.Type != "ClusterIP" || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 443 {
		t.Errorf("Service sts: want ClusterIP with port 443, got %s %+v", svc.Spec.Type, svc.Spec.Ports)
	}
	if len(svc.Spec.Selector) == 0 || !subset(svc.Spec.Selector, sts.podLabels()) || subset(svc.Spec.Selector, redis.podLabels()) {
		t.Errorf("Service sts: selector %v must select the STS pods and only them", svc.Spec.Selector)
	}
	c := sts.container(t, "sts")
	if got := c.port(t, svc.Spec.Ports[0].TargetPort); got != 8443 {
		t.Errorf("Service sts: targetPort resolves to %d, want the container port 8443", got)
	}
	// The metrics are scraped per pod, from the metrics port (plain HTTP), never
	// through the Service.
	a := sts.Spec.Template.Metadata.Annotations
	if a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != strconv.Itoa(c.port(t, "metrics")) ||
		a["prometheus.io/path"] != "/metrics" || a["prometheus.io/scheme"] != "http" {
		t.Errorf("Deployment sts: scrape annotations %v, want /metrics over http on the metrics port %d", a, c.port(t, "metrics"))
	}
	rsvc := b.services[redis.Spec.ServiceName]
	if rsvc == nil {
		t.Fatalf("StatefulSet sts-redis: serviceName %q is not a Service of the base", redis.Spec.ServiceName)
	}
	if rsvc.Spec.ClusterIP != "None" || !subset(rsvc.Spec.Selector, redis.podLabels()) || subset(rsvc.Spec.Selector, sts.podLabels()) {
		t.Errorf("Service %s: want headless, selecting the Redis pods only", redis.Spec.ServiceName)
	}
	rc := redis.container(t, "redis")
	for _, p := range rsvc.Spec.Ports {
		if got := rc.port(t, p.TargetPort); got != 6379 {
			t.Errorf("Service %s: port %d targets %d, want 6379", redis.Spec.ServiceName, p.Port, got)
		}
	}

	// The PodDisruptionBudget keeps two of three.
	if len(b.pdbs) != 1 {
		t.Fatalf("want one PodDisruptionBudget, got %d", len(b.pdbs))
	}
	p := b.pdbs[0]
	if p.Spec.MinAvailable == nil || *p.Spec.MinAvailable != "2" {
		t.Errorf("PodDisruptionBudget %s: want minAvailable 2", p.Metadata.Name)
	}
	if !p.Spec.Selector.matches(t, sts.podLabels()) || subset(p.Spec.Selector.MatchLabels, redis.podLabels()) {
		t.Errorf("PodDisruptionBudget %s: selector %v must select the STS pods only", p.Metadata.Name, p.Spec.Selector.MatchLabels)
	}

	// The service account exists and mounts no token, nor do the pods.
	sa := b.serviceAccounts[sts.Spec.Template.Spec.ServiceAccountName]
	if sa == nil {
		t.Fatalf("Deployment sts: serviceAccountName %q is not a ServiceAccount of the base", sts.Spec.Template.Spec.ServiceAccountName)
	}
	if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
		t.Errorf("ServiceAccount %s: want automountServiceAccountToken: false", sa.Metadata.Name)
	}
	for _, w := range []*workload{sts, redis} {
		if a := w.Spec.Template.Spec.AutomountServiceAccountToken; a == nil || *a {
			t.Errorf("%s %s: want automountServiceAccountToken: false", w.Kind, w.Metadata.Name)
		}
	}
}

func TestBaseNetworkPolicies(t *testing.T) {
	b := loadBase(t)
	sts := b.workload(t, "Deployment", "sts")
	redis := b.workload(t, "StatefulSet", "sts-redis")
	var stsNP, redisNP *networkPolicy
	for _, np := range b.networkPolicies {
		switch {
		case np.Spec.PodSelector.matches(t, sts.podLabels()):
			stsNP = np
		case np.Spec.PodSelector.matches(t, redis.podLabels()):
			redisNP = np
		}
	}
	if stsNP == nil || redisNP == nil {
		t.Fatal("want a NetworkPolicy selecting the STS pods and one selecting the Redis pods")
	}
	for _, np := range []*networkPolicy{stsNP, redisNP} {
		if !slices.Contains(np.Spec.PolicyTypes, "Ingress") || !slices.Contains(np.Spec.PolicyTypes, "Egress") {
			t.Errorf("NetworkPolicy %s: want policyTypes Ingress and Egress", np.Metadata.Name)
		}
	}

	// STS ingress: the token port from every namespace; the metrics port only from
	// a named namespace (Prometheus), never from everyone.
	c := sts.container(t, "sts")
	tokenRule, metricsRule := false, false
	for _, in := range stsNP.Spec.Ingress {
		everyone := len(in.From) == 0
		for _, from := range in.From {
			if from.IPBlock != nil || (from.NamespaceSelector != nil && len(from.NamespaceSelector.MatchLabels) == 0) {
				everyone = true
			}
		}
		for _, p := range in.Ports {
			switch c.port(t, p.Port) {
			case 8443:
				tokenRule = tokenRule || everyone
			case c.port(t, "metrics"):
				if everyone {
					t.Errorf("NetworkPolicy %s: the metrics port %s is open to every namespace", stsNP.Metadata.Name, p.Port)
				}
				metricsRule = true
			default:
				t.Errorf("NetworkPolicy %s: ingress port %s is neither the token nor the metrics port", stsNP.Metadata.Name, p.Port)
			}
		}
	}
	if !tokenRule || !metricsRule {
		t.Errorf("NetworkPolicy %s: want ingress to 8443 from the cluster (%v) and to the metrics port from the monitoring namespace (%v)", stsNP.Metadata.Name, tokenRule, metricsRule)
	}
	// STS egress: Redis pods on the Redis port, DNS, and HTTPS.
	var toRedis, dns, https bool
	for _, e := range stsNP.Spec.Egress {
		for _, port := range e.Ports {
			switch {
			case port.Port == "53" && port.Protocol == "UDP":
				dns = true
			case port.Port == "443" && port.Protocol == "TCP":
				https = true
			case port.Protocol == "TCP" && redis.container(t, "redis").port(t, port.Port) == 6379:
				for _, to := range e.To {
					if to.PodSelector != nil && to.NamespaceSelector == nil && to.PodSelector.matches(t, redis.podLabels()) {
						toRedis = true
					}
				}
			}
		}
	}
	if !toRedis || !dns || !https {
		t.Errorf("NetworkPolicy %s: egress to Redis %v, DNS %v, HTTPS %v; want all", stsNP.Metadata.Name, toRedis, dns, https)
	}
	// Redis ingress: only from the STS pods of the same namespace, on 6379.
	if len(redisNP.Spec.Ingress) == 0 {
		t.Errorf("NetworkPolicy %s: no ingress rule, so the STS cannot reach Redis", redisNP.Metadata.Name)
	}
	for _, in := range redisNP.Spec.Ingress {
		if len(in.From) == 0 {
			t.Errorf("NetworkPolicy %s: an ingress rule without from admits everyone", redisNP.Metadata.Name)
		}
		for _, from := range in.From {
			if from.PodSelector == nil || from.NamespaceSelector != nil || from.IPBlock != nil ||
				!from.PodSelector.matches(t, sts.podLabels()) || subset(from.PodSelector.MatchLabels, redis.podLabels()) {
				t.Errorf("NetworkPolicy %s: ingress must come from the STS pods only", redisNP.Metadata.Name)
			}
		}
		for _, port := range in.Ports {
			if redis.container(t, "redis").port(t, port.Port) != 6379 {
				t.Errorf("NetworkPolicy %s: ingress port %s, want 6379", redisNP.Metadata.Name, port.Port)
			}
		}
	}
}

func TestBaseHardening(t *testing.T) {
	b := loadBase(t)
	for _, w := range b.workloads {
		ps := w.Spec.Template.Spec
		name := w.Kind + " " + w.Metadata.Name
		if sc := ps.SecurityContext; sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
			t.Errorf("%s: want runAsNonRoot: true and a non-zero runAsUser", name)
		}
		if ps.SecurityContext.SeccompProfile.Type != "RuntimeDefault" {
			t.Errorf("%s: want seccompProfile RuntimeDefault", name)
		}
		for _, c := range slices.Concat(ps.Containers, ps.InitContainers) {
			sc := c.SecurityContext
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Errorf("%s/%s: want allowPrivilegeEscalation: false", name, c.Name)
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Errorf("%s/%s: want readOnlyRootFilesystem: true", name, c.Name)
			}
			if !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) || len(sc.Capabilities.Add) > 0 {
				t.Errorf("%s/%s: want capabilities drop [ALL] and nothing added", name, c.Name)
			}
			if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" || c.Resources.Limits["memory"] == "" {
				t.Errorf("%s/%s: want cpu and memory requests and a memory limit", name, c.Name)
			}
			checkImage(t, name+"/"+c.Name, c.Image)
			if c.LivenessProbe == nil || c.ReadinessProbe == nil || c.StartupProbe == nil {
				t.Errorf("%s/%s: want startup, liveness and readiness probes", name, c.Name)
			}
			for _, m := range c.VolumeMounts {
				if m.SubPath != "" {
					t.Errorf("%s/%s: subPath mount %s never receives updates", name, c.Name, m.MountPath)
				}
			}
		}
	}
}

// checkImage refuses an image without an explicit tag or digest, or tagged latest.
func checkImage(t *testing.T, where, image string) {
	t.Helper()
	if strings.Contains(image, "@sha256:") {
		return
	}
	slash := strings.LastIndex(image, "/")
	tag := ""
	if i := strings.LastIndex(image, ":"); i > slash {
		tag = image[i+1:]
	}
	if tag == "" || tag == "latest" {
		t.Errorf("%s: image %q needs an explicit tag other than latest (or a digest)", where, image)
	}
}

func TestBaseProbesAndShutdown(t *testing.T) {
	b := loadBase(t)
	sts := b.workload(t, "Deployment", "sts")
	c := sts.container(t, "sts")
	for _, tc := range []struct {
		name string
		p    *probe
		path string
	}{
		{"startupProbe", c.StartupProbe, "/healthz"},
		{"livenessProbe", c.LivenessProbe, "/healthz"},
		{"readinessProbe", c.ReadinessProbe, "/readyz"},
	} {
		if tc.p == nil || tc.p.HTTPGet == nil {
			t.Errorf("%s: want an httpGet probe", tc.name)
			continue
		}
		// On the metrics listener: plain HTTP, out of reach of the token
		// listener's connection limits (hostile traffic must not fail liveness).
		g := tc.p.HTTPGet
		if g.Path != tc.path || g.Scheme != "HTTP" || c.port(t, g.Port) != c.port(t, "metrics") {
			t.Errorf("%s: got %s %s on port %s, want HTTP %s on the metrics port %d", tc.name, g.Scheme, g.Path, g.Port, tc.path, c.port(t, "metrics"))
		}
	}
	grace := sts.Spec.Template.Spec.TerminationGracePeriodSeconds
	pause := 0
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
		pause = c.Lifecycle.PreStop.Sleep.Seconds
	}
	if grace == nil || *grace <= pause+stsDrain {
		t.Errorf("terminationGracePeriodSeconds must exceed the preStop pause (%d s) plus the STS's %d s drain", pause, stsDrain)
	}
}

// fmtMode renders a file mode from a manifest.
func fmtMode(m *int) string {
	if m == nil {
		return "none"
	}
	return fmt.Sprintf("%04o", *m)
}

// podFS models the files a container sees through its volume mounts: exact files
// (from items or known generated keys) and whole directories (an object mounted
// without items, whose keys the operator chooses).
type podFS struct {
	files map[string]source
	dirs  map[string]source
	// readOnly mount paths
	readOnly map[string]bool
}

type source struct {
	kind, name, key string // kind: ConfigMap or Secret
}

func (s source) String() string { return s.kind + " " + s.name + " " + s.key }

// lookup returns what provides path p (a file, or a directory mount for a path
// directly inside it).
func (f *podFS) lookup(p string) (source, bool) {
	if s, ok := f.files[p]; ok {
		return s, true
	}
	s, ok := f.dirs[path.Dir(p)]
	return s, ok
}

// refs collects every ConfigMap and Secret a workload refers to, with where.
type refs struct {
	configMaps map[string][]string
	secrets    map[string][]string
}

func (b *base) podFS(t *testing.T, w *workload, c *container) *podFS {
	t.Helper()
	f := &podFS{files: map[string]source{}, dirs: map[string]source{}, readOnly: map[string]bool{}}
	vols := map[string]volume{}
	for _, v := range w.Spec.Template.Spec.Volumes {
		vols[v.Name] = v
	}
	add := func(mount, kind string, ref objectRef) {
		if len(ref.Items) > 0 {
			for _, it := range ref.Items {
				f.files[path.Join(mount, it.Path)] = source{kind, ref.Name, it.Key}
			}
			return
		}
		if g, ok := b.configMaps[ref.Name]; ok && kind == "ConfigMap" {
			for key := range g.fileKeys() {
				f.files[path.Join(mount, key)] = source{kind, ref.Name, key}
			}
			return
		}
		f.dirs[mount] = source{kind, ref.Name, "*"}
	}
	for _, m := range c.VolumeMounts {
		v, ok := vols[m.Name]
		if !ok {
			t.Fatalf("container %s mounts volume %q, which the pod does not define", c.Name, m.Name)
		}
		if m.ReadOnly {
			f.readOnly[m.MountPath] = true
		}
		switch {
		case v.ConfigMap != nil:
			add(m.MountPath, "ConfigMap", *v.ConfigMap)
		case v.Secret != nil:
			add(m.MountPath, "Secret", objectRef{Name: v.Secret.SecretName, Items: v.Secret.Items})
		case v.Projected != nil:
			for _, s := range v.Projected.Sources {
				if s.ConfigMap != nil {
					add(m.MountPath, "ConfigMap", *s.ConfigMap)
				}
				if s.Secret != nil {
					add(m.MountPath, "Secret", *s.Secret)
				}
			}
		}
	}
	return f
}

func (w *workload) refs() refs {
	r := refs{configMaps: map[string][]string{}, secrets: map[string][]string{}}
	where := w.Kind + " " + w.Metadata.Name
	for _, v := range w.Spec.Template.Spec.Volumes {
		switch {
		case v.ConfigMap != nil:
			r.configMaps[v.ConfigMap.Name] = append(r.configMaps[v.ConfigMap.Name], where+" volume "+v.Name)
		case v.Secret != nil:
			r.secrets[v.Secret.SecretName] = append(r.secrets[v.Secret.SecretName], where+" volume "+v.Name)
		case v.Projected != nil:
			for _, s := range v.Projected.Sources {
				if s.ConfigMap != nil {
					r.configMaps[s.ConfigMap.Name] = append(r.configMaps[s.ConfigMap.Name], where+" volume "+v.Name)
				}
				if s.Secret != nil {
					r.secrets[s.Secret.Name] = append(r.secrets[s.Secret.Name], where+" volume "+v.Name)
				}
			}
		}
	}
	for _, c := range w.Spec.Template.Spec.Containers {
		for _, e := range c.Env {
			if e.ValueFrom == nil {
				continue
			}
			if k := e.ValueFrom.SecretKeyRef; k != nil {
				r.secrets[k.Name] = append(r.secrets[k.Name], where+" env "+e.Name)
			}
			if k := e.ValueFrom.ConfigMapKeyRef; k != nil {
				r.configMaps[k.Name] = append(r.configMaps[k.Name], where+" env "+e.Name)
			}
		}
	}
	return r
}

func TestBaseReferencesAreGeneratedOrDocumented(t *testing.T) {
	b := loadBase(t)
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	referenced := map[string]bool{}
	for _, w := range b.workloads {
		r := w.refs()
		for name, where := range r.configMaps {
			referenced[name] = true
			if _, gen := b.configMaps[name]; !gen && !slices.Contains(operatorConfigMaps, name) {
				t.Errorf("ConfigMap %s (%s) is neither generated by the kustomization nor listed as operator-provided", name, strings.Join(where, ", "))
			}
		}
		for name, where := range r.secrets {
			referenced[name] = true
			if _, gen := b.secrets[name]; !gen && !slices.Contains(operatorSecrets, name) {
				t.Errorf("Secret %s (%s) is neither generated by the kustomization nor listed as operator-provided", name, strings.Join(where, ", "))
			}
		}
	}
	for _, name := range slices.Concat(operatorSecrets, operatorConfigMaps) {
		if !referenced[name] {
			t.Errorf("operator-provided %s is referenced by no workload: drop it from the list and the README", name)
		}
		if !bytes.Contains(readme, []byte(name)) {
			t.Errorf("operator-provided %s is not documented in deploy/README.md", name)
		}
	}
	for name := range b.configMaps {
		if !referenced[name] {
			t.Errorf("generated ConfigMap %s is used by no workload", name)
		}
	}
}

// loadCopied copies a config file and its policy files into a temporary directory
// (so relative policy_files resolve as they do in the pod) and loads both with the
// STS's own loaders.
func loadCopied(t *testing.T, dir, name string) *config.Config {
	t.Helper()
	tmp := t.TempDir()
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tmp, name), data, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(filepath.Join(tmp, name))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	for _, p := range cfg.PolicyFiles {
		if filepath.IsAbs(p) {
			t.Fatalf("%s: policy file %s should be relative to the name", name, p)
		}
		data, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil {
			t.Fatalf("%s: policy file: %v", name, err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(tmp, p)), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tmp, p), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := config.PolicySource(cfg).Load(); err != nil {
		t.Fatalf("%s: policy: %v", name, err)
	}
	return cfg
}

func listenPort(t *testing.T, cfg *config.Config) int {
	t.Helper()
	return addrPort(t, cfg.Listen)
}

// addrPort is the port of a host:port listen address.
func addrPort(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("listen port %q: %v", p, err)
	}
	return n
}

// TestBaseConfig: the config and policy in the ConfigMap pass the STS's loaders, and
// every file the config names is where the Deployment mounts it.
func TestBaseConfig(t *testing.T) {
	b := loadBase(t)
	sts := b.workload(t, "Deployment", "sts")
	redis := b.workload(t, "StatefulSet", "sts-redis")
	c := sts.container(t, "sts")

	// `sts serve --config X`, X a generated file.
	if len(c.Args) != 3 || c.Args[0] != "serve" || c.Args[1] != "--config" {
		t.Fatalf("container sts: args %q, want [serve --config FILE]", c.Args)
	}
	configPath := c.Args[2]
	pfs := b.podFS(t, sts, c)
	src, ok := pfs.lookup(configPath)
	if !ok || src.kind != "ConfigMap" {
		t.Fatalf("--config %s is not provided by a ConfigMap mount", configPath)
	}
	g, ok := b.configMaps[src.name]
	if !ok {
		t.Fatalf("--config %s comes from %s, which the kustomization does not generate", configPath, src)
	}
	file := g.fileKeys()[src.key]
	cfg := loadCopied(t, baseDir, file)

	if got := listenPort(t, cfg); got != c.port(t, "https") {
		t.Errorf("listen port %d differs from the container port %d", got, c.port(t, "https"))
	}
	if got := addrPort(t, cfg.MetricsListen); got != c.port(t, "metrics") {
		t.Errorf("metrics_listen port %d differs from the container port metrics %d", got, c.port(t, "metrics"))
	}
	if cfg.TLS.InsecureHTTP {
		t.Error("the base must serve TLS itself (the Service speaks HTTPS)")
	}

	// Files the config names, resolved as in the pod (relative to the config's
	// directory), and which object key must provide them.
	inPod := func(p string) string {
		if path.IsAbs(p) {
			return p
		}
		return path.Join(path.Dir(configPath), p)
	}
	type want struct {
		what, path, kind, key string
	}
	wants := []want{
		{"tls.cert_file", inPod(cfg.TLS.CertFile), "Secret", "tls.crt"},
		{"tls.key_file", inPod(cfg.TLS.KeyFile), "Secret", "tls.key"},
	}
	for _, p := range cfg.PolicyFiles {
		wants = append(wants, want{"policy_files", inPod(p), "ConfigMap", ""})
	}
	for _, u := range cfg.Upstreams {
		if u.JWKSFile != "" {
			wants = append(wants, want{"upstream " + u.Name + " jwks_file", inPod(u.JWKSFile), "ConfigMap", ""})
		}
	}
	if cfg.Revocation.Backend != "redis" {
		t.Fatalf("the base uses revocation backend %q, want redis", cfg.Revocation.Backend)
	}
	rc := cfg.Revocation.Redis
	if rc.PasswordFile == "" {
		t.Fatal("the base's Redis has a password: set revocation.redis.password_file")
	}
	var redisPassword *keyRef
	for _, e := range redis.container(t, "redis").Env {
		if e.Name == "REDIS_PASSWORD" && e.ValueFrom != nil {
			redisPassword = e.ValueFrom.SecretKeyRef
		}
	}
	if redisPassword == nil {
		t.Fatal("StatefulSet sts-redis: no REDIS_PASSWORD from a Secret")
	}
	wants = append(wants, want{"revocation.redis.password_file", inPod(rc.PasswordFile), "Secret", redisPassword.Key})
	for _, w := range wants {
		s, ok := pfs.lookup(w.path)
		if !ok {
			t.Errorf("%s %s is not provided by any volume mount", w.what, w.path)
			continue
		}
		if s.kind != w.kind || (w.key != "" && s.key != w.key && s.key != "*") {
			t.Errorf("%s %s comes from %s, want a %s key %q", w.what, w.path, s, w.kind, w.key)
		}
		if w.what == "revocation.redis.password_file" && s.name != redisPassword.Name {
			t.Errorf("the STS reads the Redis password from Secret %s, Redis from Secret %s", s.name, redisPassword.Name)
		}
		if g, gen := b.configMaps[s.name]; gen && s.kind == "ConfigMap" {
			// A generated file: it must exist in the base (checked above) and, for
			// policy files, be the one loadCopied loaded.
			if _, ok := g.fileKeys()[s.key]; !ok {
				t.Errorf("%s %s: generator %s has no key %s", w.what, w.path, s.name, s.key)
			}
		}
	}
	// The signing keys: a read-only mount of a Secret, at key_dir itself.
	keyDir := inPod(cfg.Signing.KeyDir)
	if s, ok := pfs.dirs[keyDir]; !ok || s.kind != "Secret" || !pfs.readOnly[keyDir] {
		t.Errorf("signing.key_dir %s: want a read-only Secret volume mounted there", keyDir)
	}

	// The STS refuses signing keys others can read, or its group unless the file is
	// root's and the group the STS's: the kubelet makes Secret files root-owned, in
	// group fsGroup, with defaultMode plus group read.
	sc := sts.Spec.Template.Spec.SecurityContext
	for _, v := range sts.Spec.Template.Spec.Volumes {
		if v.Secret == nil || v.Secret.SecretName != "sts-signing-keys" {
			continue
		}
		if m := v.Secret.DefaultMode; m == nil || *m&0o037 != 0 || *m&0o400 == 0 {
			t.Errorf("volume %s: want defaultMode 0400 or 0440 (288), not the default 0644 or %s", v.Name, fmtMode(m))
		}
		if sc.FSGroup == nil || sc.RunAsGroup == nil || *sc.FSGroup != *sc.RunAsGroup {
			t.Errorf("volume %s: want fsGroup equal to runAsGroup, so that the key files' group is the STS's", v.Name)
		}
	}

	// Redis: the StatefulSet's pod behind its headless Service, on the Redis port.
	if len(rc.Addrs) != 1 {
		t.Fatalf("revocation.redis.addrs: want the one primary, got %v", rc.Addrs)
	}
	host, port, err := net.SplitHostPort(rc.Addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	primary := redis.Metadata.Name + "-0." + redis.Spec.ServiceName
	if host != primary && host != redis.Spec.ServiceName {
		t.Errorf("revocation.redis.addrs %s: want %s (the StatefulSet's pod) or %s", rc.Addrs[0], primary, redis.Spec.ServiceName)
	}
	if port != strconv.Itoa(redis.container(t, "redis").port(t, "redis")) {
		t.Errorf("revocation.redis.addrs %s: port differs from the Redis container port", rc.Addrs[0])
	}

	// The issuer is the Service's in-cluster name in the kustomization's namespace
	// (https on 443, so no port).
	if want := "https://" + b.services["sts"].Metadata.Name + "." + b.k.Namespace + ".svc"; cfg.Issuer != want {
		t.Errorf("issuer %s, want %s", cfg.Issuer, want)
	}
}

// ---------------------------------------------------------------------------
// Examples

func TestExamples(t *testing.T) {
	configs, err := filepath.Glob("examples/*-sts.yaml")
	if err != nil || len(configs) == 0 {
		t.Fatalf("no example configs: %v", err)
	}
	usedPolicies := map[string]bool{}
	for _, c := range configs {
		t.Run(filepath.Base(c), func(t *testing.T) {
			cfg := loadCopied(t, "examples", filepath.Base(c))
			for _, p := range cfg.PolicyFiles {
				usedPolicies[p] = true
			}
		})
	}
	if t.Failed() {
		return // a config that did not load names no policy
	}
	policies, _ := filepath.Glob("examples/*-policy.yaml")
	for _, p := range policies {
		if !usedPolicies[filepath.Base(p)] {
			t.Errorf("%s is the policy of no example config", p)
		}
	}
}

// ---------------------------------------------------------------------------
// Compose

type composeFile struct {
	Name     string                    `yaml:"name"`
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]yaml.Node      `yaml:"volumes"`
}

type composeService struct {
	Build *struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
	} `yaml:"build"`
	Image     string               `yaml:"image"`
	ReadOnly  bool                 `yaml:"read_only"`
	Ports     []string             `yaml:"ports"`
	Volumes   []string             `yaml:"volumes"`
	DependsOn map[string]yaml.Node `yaml:"depends_on"`
}

func TestCompose(t *testing.T) {
	docs, err := decodeAll("compose.yaml")
	if err != nil || len(docs) != 1 {
		t.Fatalf("compose.yaml: %v", err)
	}
	var cf composeFile
	if err := docs[0].Decode(&cf); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	comments, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(cf.Services) == 0 {
		t.Fatal("compose.yaml: no services")
	}
	var stsConfigDir string
	for name, s := range cf.Services {
		if s.Image != "" {
			checkImage(t, "compose service "+name, s.Image)
		}
		if s.Build != nil {
			ctx := filepath.FromSlash(s.Build.Context)
			if st, err := os.Stat(ctx); err != nil || !st.IsDir() {
				t.Errorf("service %s: build context %s: not a directory (%v)", name, s.Build.Context, err)
			}
			if _, err := os.Stat(filepath.Join(ctx, filepath.FromSlash(s.Build.Dockerfile))); err != nil {
				t.Errorf("service %s: dockerfile: %v", name, err)
			}
		}
		for dep := range s.DependsOn {
			if _, ok := cf.Services[dep]; !ok {
				t.Errorf("service %s depends on unknown service %s", name, dep)
			}
		}
		for _, v := range s.Volumes {
			parts := strings.Split(v, ":")
			if len(parts) < 2 {
				t.Errorf("service %s: volume %q: want SOURCE:TARGET[:MODE]", name, v)
				continue
			}
			src, dst := parts[0], parts[1]
			if strings.HasPrefix(src, ".") || strings.HasPrefix(src, "/") {
				if _, err := os.Stat(filepath.FromSlash(src)); err != nil {
					t.Errorf("service %s: bind mount source %s: %v", name, src, err)
				}
				if dst == "/etc/sts" {
					stsConfigDir = filepath.FromSlash(src)
				}
			} else if _, ok := cf.Volumes[src]; !ok {
				t.Errorf("service %s: named volume %s is not declared under volumes:", name, src)
			}
		}
	}
	sts, ok := cf.Services["sts"]
	if !ok || sts.Build == nil {
		t.Fatal("compose.yaml: want a service sts built from the Dockerfile")
	}
	if filepath.Clean(filepath.Join(sts.Build.Context, sts.Build.Dockerfile)) != filepath.Join("..", "deploy", "Dockerfile") {
		t.Errorf("service sts: builds %s/%s, want deploy/Dockerfile", sts.Build.Context, sts.Build.Dockerfile)
	}
	if !sts.ReadOnly {
		t.Error("service sts: want read_only: true, as in Kubernetes")
	}
	if stsConfigDir == "" {
		t.Fatal("service sts: no bind mount at /etc/sts")
	}

	// The config the image's CMD names, in the mounted directory.
	df := parseDockerfile(t)
	cmdConfig := df.cmd[len(df.cmd)-1]
	if path.Dir(cmdConfig) != "/etc/sts" {
		t.Fatalf("the Dockerfile's CMD reads %s, outside /etc/sts", cmdConfig)
	}
	cfg, err := config.Load(filepath.Join(stsConfigDir, path.Base(cmdConfig)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := config.PolicySource(cfg).Load(); err != nil {
		t.Fatal(err)
	}
	if cfg.Revocation.Backend != "redis" {
		t.Errorf("compose sts.yaml: backend %q, want redis", cfg.Revocation.Backend)
	}
	for _, a := range cfg.Revocation.Redis.Addrs {
		host, _, _ := net.SplitHostPort(a)
		if _, ok := cf.Services[host]; !ok {
			t.Errorf("compose sts.yaml: redis address %s names no compose service", a)
		}
	}
	// Published container port = listen port.
	port := strconv.Itoa(listenPort(t, cfg))
	published := false
	for _, p := range sts.Ports {
		if strings.HasSuffix(p, ":"+port) {
			published = true
		}
	}
	if !published {
		t.Errorf("service sts: port %s (listen) is not published (%v)", port, sts.Ports)
	}
	// The metrics port, when published, only on loopback.
	if cfg.MetricsListen == "" {
		t.Error("compose sts.yaml: no metrics_listen (the token port never serves /metrics)")
	}
	mport := ":" + strconv.Itoa(addrPort(t, cfg.MetricsListen))
	for _, p := range sts.Ports {
		if strings.HasSuffix(p, mport) && !strings.HasPrefix(p, "127.0.0.1:") {
			t.Errorf("service sts: metrics port published beyond loopback: %s", p)
		}
	}
	// Files the config names in the mounted directory exist, except those the user
	// makes locally, which compose.yaml must explain and .gitignore must cover.
	gitignore, err := os.ReadFile(filepath.Join(stsConfigDir, ".gitignore"))
	if err != nil {
		t.Fatal(err)
	}
	named := []string{cfg.TLS.CertFile, cfg.TLS.KeyFile}
	named = append(named, cfg.PolicyFiles...)
	for _, u := range cfg.Upstreams {
		if u.JWKSFile != "" {
			named = append(named, u.JWKSFile)
		}
	}
	for _, f := range named {
		if filepath.IsAbs(f) {
			t.Errorf("compose sts.yaml: %s should be relative to the mounted /etc/sts", f)
			continue
		}
		if slices.Contains(composeLocalFiles, f) {
			if !bytes.Contains(comments, []byte(f)) {
				t.Errorf("compose.yaml does not say how to make %s", f)
			}
			if !ignored(string(gitignore), f) {
				t.Errorf("%s/.gitignore does not ignore %s", stsConfigDir, f)
			}
			continue
		}
		if _, err := os.Stat(filepath.Join(stsConfigDir, f)); err != nil {
			t.Errorf("compose sts.yaml names %s: %v", f, err)
		}
	}
	// The keys live on a named volume (the STS creates one on first start).
	keysOnVolume := false
	for _, v := range sts.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && parts[1] == cfg.Signing.KeyDir && !strings.HasPrefix(parts[0], ".") && !strings.HasPrefix(parts[0], "/") {
			keysOnVolume = true
		}
	}
	if !keysOnVolume {
		t.Errorf("service sts: signing.key_dir %s is not a named volume", cfg.Signing.KeyDir)
	}
}

// ignored reports whether a .gitignore line pattern matches name (plain names and
// simple globs only).
func ignored(gitignore, name string) bool {
	for _, line := range strings.Split(gitignore, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if ok, _ := path.Match(line, name); ok {
			return true
		}
	}
	return false
}

// ---------------------------------------------------------------------------
// Dockerfile

type dockerfile struct {
	froms      []string // image references, in order
	finalUser  string
	entrypoint []string
	cmd        []string
	expose     []string
	runs       []string
}

func parseDockerfile(t *testing.T) dockerfile {
	t.Helper()
	f, err := os.Open("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var df dockerfile
	var lines []string
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "#") || (l == "" && cur.Len() == 0) {
			continue
		}
		if rest, ok := strings.CutSuffix(l, "\\"); ok {
			cur.WriteString(rest + " ")
			continue
		}
		cur.WriteString(l)
		lines = append(lines, cur.String())
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	stages := map[string]bool{}
	for _, l := range lines {
		instr, args, _ := strings.Cut(l, " ")
		args = strings.TrimSpace(args)
		switch strings.ToUpper(instr) {
		case "FROM":
			fields := strings.Fields(args)
			var img string
			for i := 0; i < len(fields); i++ {
				if strings.HasPrefix(fields[i], "--") {
					continue
				}
				img = fields[i]
				if i+2 < len(fields) && strings.EqualFold(fields[i+1], "AS") {
					stages[fields[i+2]] = true
				}
				break
			}
			df.froms = append(df.froms, img)
			df.finalUser = ""
		case "USER":
			df.finalUser = args
		case "ENTRYPOINT":
			df.entrypoint = jsonArray(t, l, args)
		case "CMD":
			df.cmd = jsonArray(t, l, args)
		case "EXPOSE":
			df.expose = strings.Fields(args)
		case "RUN":
			df.runs = append(df.runs, args)
		}
	}
	for i, img := range df.froms {
		if stages[img] || img == "scratch" {
			df.froms[i] = "stage:" + img
		}
	}
	return df
}

func jsonArray(t *testing.T, line, args string) []string {
	t.Helper()
	var a []string
	if err := json.Unmarshal([]byte(args), &a); err != nil {
		t.Fatalf("Dockerfile: %q: want the exec (JSON array) form: %v", line, err)
	}
	return a
}

func TestDockerfile(t *testing.T) {
	df := parseDockerfile(t)
	if len(df.froms) < 2 {
		t.Fatalf("Dockerfile: want a multi-stage build, got stages %v", df.froms)
	}
	for _, img := range df.froms {
		if !strings.HasPrefix(img, "stage:") {
			checkImage(t, "Dockerfile FROM", img)
		}
	}
	if !strings.HasPrefix(df.froms[0], "golang:1.26") {
		t.Errorf("Dockerfile: build stage %s, want golang:1.26", df.froms[0])
	}
	final := df.froms[len(df.froms)-1]
	if !strings.HasPrefix(final, "gcr.io/distroless/static-debian12:nonroot") {
		t.Errorf("Dockerfile: final stage %s, want gcr.io/distroless/static-debian12:nonroot", final)
	}
	uid, _, _ := strings.Cut(df.finalUser, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		t.Errorf("Dockerfile: final stage USER %q, want a numeric non-root UID (runAsNonRoot can verify only that)", df.finalUser)
	}
	build := strings.Join(df.runs, "\n")
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `-ldflags "-s -w"`, "./cmd/sts", "./cmd/stsctl"} {
		if !strings.Contains(build, want) {
			t.Errorf("Dockerfile: the build does not use %s", want)
		}
	}
	if !slices.Equal(df.entrypoint, []string{"/sts"}) {
		t.Errorf("Dockerfile: ENTRYPOINT %q, want [/sts]", df.entrypoint)
	}
	if len(df.cmd) != 3 || df.cmd[0] != "serve" || df.cmd[1] != "--config" {
		t.Errorf("Dockerfile: CMD %q, want [serve --config FILE]", df.cmd)
	}

	// The image agrees with the Deployment: user, port and config path.
	b := loadBase(t)
	sts := b.workload(t, "Deployment", "sts")
	c := sts.container(t, "sts")
	if !slices.Equal(df.cmd, c.Args) {
		t.Errorf("Dockerfile CMD %q differs from the Deployment's args %q", df.cmd, c.Args)
	}
	if want := []string{strconv.Itoa(c.port(t, "https")), strconv.Itoa(c.port(t, "metrics"))}; !slices.Equal(df.expose, want) {
		t.Errorf("Dockerfile EXPOSE %v differs from the container ports %v", df.expose, want)
	}
	if u := sts.Spec.Template.Spec.SecurityContext.RunAsUser; u == nil || strconv.FormatInt(*u, 10) != uid {
		t.Errorf("Dockerfile USER %s differs from the Deployment's runAsUser", df.finalUser)
	}

	// Key material never enters the build context.
	ignore, err := os.ReadFile("Dockerfile.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"**/*.pem", "**/*.key", "sts-quickstart"} {
		if !slices.Contains(strings.Split(string(ignore), "\n"), want) {
			t.Errorf("Dockerfile.dockerignore does not exclude %s", want)
		}
	}
}

// ---------------------------------------------------------------------------
// README

// TestReadmeNamesEveryFile keeps deploy/README.md's file list complete.
func TestReadmeNamesEveryFile(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || p == "README.md" || strings.HasPrefix(d.Name(), ".") {
			return err
		}
		// Files a .gitignore beside them excludes are made locally (compose/tls.key).
		if gi, err := os.ReadFile(filepath.Join(filepath.Dir(p), ".gitignore")); err == nil && ignored(string(gi), d.Name()) {
			return nil
		}
		if !bytes.Contains(readme, []byte(filepath.ToSlash(p))) {
			t.Errorf("deploy/README.md does not mention %s", filepath.ToSlash(p))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// ---------------------------------------------------------------------------
// The watcher (kubernetes/watcher)

const watcherDir = "kubernetes/watcher"

// TestWatcher: the watcher's kustomization names files that exist, its config
// passes stswatch's own loader and mirrors the admin rule example, its RBAC is
// read-only on pods and service accounts, and its Deployment mounts what the config
// names.
func TestWatcher(t *testing.T) {
	var k struct {
		Resources          []string `yaml:"resources"`
		ConfigMapGenerator []struct {
			Name  string   `yaml:"name"`
			Files []string `yaml:"files"`
		} `yaml:"configMapGenerator"`
	}
	readYAML(t, filepath.Join(watcherDir, "kustomization.yaml"), &k)
	for _, r := range k.Resources {
		if _, err := os.Stat(filepath.Join(watcherDir, r)); err != nil {
			t.Errorf("resource %s: %v", r, err)
		}
	}

	cfgPath := filepath.Join(watcherDir, "stswatch.yaml")
	data, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := watch.ParseConfig(data)
	if err != nil {
		t.Fatalf("%s: %v", cfgPath, err)
	}
	if cfg.Kubernetes == nil || cfg.Kubernetes.Kubeconfig != "" {
		t.Fatalf("%s: want the kubernetes source, in-cluster", cfgPath)
	}
	var rule struct {
		Admin []struct {
			Subjects        []string `yaml:"subjects"`
			Actions         []string `yaml:"actions"`
			WithinUpstreams []string `yaml:"within_upstreams"`
		} `yaml:"admin"`
	}
	readYAML(t, filepath.Join(watcherDir, "admin-rule-example.yaml"), &rule)
	if len(rule.Admin) != 1 || !slices.Equal(rule.Admin[0].WithinUpstreams, []string{cfg.Kubernetes.Upstream}) ||
		!slices.Equal(rule.Admin[0].Subjects, []string{"system:serviceaccount:safeconduct:stswatch"}) {
		t.Errorf("admin-rule-example.yaml: want one rule for the watcher's service account within upstream %s, got %+v", cfg.Kubernetes.Upstream, rule.Admin)
	}
	for _, a := range rule.Admin[0].Actions {
		if a != "revoke" && a != "report_change" {
			t.Errorf("admin-rule-example.yaml grants %s, which the watcher does not use", a)
		}
	}

	// RBAC: only get/list/watch, only pods and serviceaccounts of the core group.
	dec := yaml.NewDecoder(mustOpen(t, filepath.Join(watcherDir, "stswatch-rbac.yaml")))
	roles := 0
	for {
		var obj struct {
			Kind  string `yaml:"kind"`
			Rules []struct {
				APIGroups []string `yaml:"apiGroups"`
				Resources []string `yaml:"resources"`
				Verbs     []string `yaml:"verbs"`
			} `yaml:"rules"`
		}
		if err := dec.Decode(&obj); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatal(err)
		}
		if obj.Kind != "ClusterRole" && obj.Kind != "Role" {
			continue
		}
		roles++
		for _, r := range obj.Rules {
			if !slices.Equal(r.APIGroups, []string{""}) {
				t.Errorf("RBAC rule on API groups %q: the watcher reads core objects only", r.APIGroups)
			}
			for _, res := range r.Resources {
				if res != "pods" && res != "serviceaccounts" {
					t.Errorf("RBAC rule on %s: the watcher reads pods and serviceaccounts only", res)
				}
			}
			for _, v := range r.Verbs {
				if v != "get" && v != "list" && v != "watch" {
					t.Errorf("RBAC verb %s: the watcher only reads", v)
				}
			}
		}
	}
	if roles != 1 {
		t.Errorf("stswatch-rbac.yaml: %d roles, want 1", roles)
	}

	// The Deployment mounts the config, the credential file and the state dir.
	var d struct {
		Spec struct {
			Template struct {
				Spec struct {
					ServiceAccountName string `yaml:"serviceAccountName"`
					Containers         []struct {
						Args         []string `yaml:"args"`
						VolumeMounts []struct {
							MountPath string `yaml:"mountPath"`
						} `yaml:"volumeMounts"`
					} `yaml:"containers"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	readYAML(t, filepath.Join(watcherDir, "stswatch-deployment.yaml"), &d)
	ps := d.Spec.Template.Spec
	if ps.ServiceAccountName != "stswatch" || len(ps.Containers) != 1 {
		t.Fatalf("stswatch-deployment.yaml: want one container as service account stswatch")
	}
	var mounts []string
	for _, m := range ps.Containers[0].VolumeMounts {
		mounts = append(mounts, m.MountPath)
	}
	for _, p := range []string{cfg.STS.CAFile, cfg.STS.CredentialFile, cfg.StateDir + "/x", "/etc/stswatch/stswatch.yaml"} {
		ok := false
		for _, m := range mounts {
			ok = ok || strings.HasPrefix(p, m+"/")
		}
		if !ok {
			t.Errorf("%s is under no volume mount of the watcher (%v)", p, mounts)
		}
	}
	if !slices.Contains(ps.Containers[0].Args, "/etc/stswatch/stswatch.yaml") {
		t.Errorf("the watcher's args %q do not name /etc/stswatch/stswatch.yaml", ps.Containers[0].Args)
	}
	if df, _ := os.ReadFile("Dockerfile"); !bytes.Contains(df, []byte("./cmd/stswatch")) || !bytes.Contains(df, []byte("/out/stswatch")) {
		t.Error("the Dockerfile does not build and copy stswatch, which the watcher's Deployment runs")
	}
}

func readYAML(t *testing.T, p string, v any) {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
}

func mustOpen(t *testing.T, p string) io.Reader {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.NewReader(data)
}
