package watch

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/safeconduct/safeconduct/internal/confcheck"
)

// Limits and defaults of the configuration.
const (
	DefaultQueueSize    = 10000
	MaxQueueSize        = 1000000
	DefaultConcurrency  = 4
	MaxConcurrency      = 64
	DefaultTimeout      = 10 * time.Second
	DefaultMaxBackoff   = 30 * time.Second
	DefaultPollInterval = time.Second
	MinPollInterval     = 100 * time.Millisecond
	MaxPollInterval     = 5 * time.Minute
)

// KubeAttributes are the attributes the STS's kubernetes preset derives from a
// pod-bound service-account token, which the Kubernetes source can compute from a
// pod: binding_attributes and instance_attributes may name only these.
var KubeAttributes = []string{"namespace", "service_account", "pod", "pod_uid", "node"}

// Duration is a time.Duration read from YAML as "10s", "5m".
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("a duration such as 10s is required")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration such as 10s", s)
	}
	*d = Duration(v)
	return nil
}

// Config is stswatch.yaml.
type Config struct {
	STS STSConfig `yaml:"sts"`
	// Listen is the address of /metrics, /healthz and /readyz (plain HTTP).
	Listen string `yaml:"listen"`
	// StateDir holds the state file of each source (what was last seen and
	// reported), so that deletions while the watcher was down are found on restart.
	StateDir string `yaml:"state_dir"`
	// QueueSize bounds the reports waiting for delivery; a source that would
	// exceed it waits (it never drops a report).
	QueueSize  int          `yaml:"queue_size"`
	SPIRE      *SPIREConfig `yaml:"spire"`
	Kubernetes *KubeConfig  `yaml:"kubernetes"`
	// LogLevel is debug, info (default), warn or error.
	LogLevel string `yaml:"log_level"`
}

// STSConfig is where and how the watcher reaches the STS admin API.
type STSConfig struct {
	// URL is the STS base URL (https; http only to a loopback address).
	URL string `yaml:"url"`
	// CAFile holds the PEM roots that verify the STS certificate (the system roots
	// when empty).
	CAFile string `yaml:"ca_file"`
	// CredentialFile holds the watcher's bearer credential (a projected
	// service-account token or a JWT-SVID written by a helper), re-read when it changes.
	CredentialFile string   `yaml:"credential_file"`
	Timeout        Duration `yaml:"timeout"`
	// Concurrency is how many reports are in flight at once.
	Concurrency int      `yaml:"concurrency"`
	MaxBackoff  Duration `yaml:"max_backoff"`
}

// SPIREConfig is the SPIRE source.
type SPIREConfig struct {
	// ServerSocket is the SPIRE server's admin API unix socket (server.socket_path).
	ServerSocket string `yaml:"server_socket"`
	// Upstream is the STS upstream (kind spiffe) whose tokens carry the SPIFFE IDs.
	Upstream     string   `yaml:"upstream"`
	PollInterval Duration `yaml:"poll_interval"`
}

// KubeConfig is the Kubernetes source.
type KubeConfig struct {
	// Kubeconfig is a kubeconfig file; empty means in-cluster.
	Kubeconfig string `yaml:"kubeconfig"`
	// Upstream is the STS upstream (preset kubernetes) of the cluster's tokens.
	Upstream string `yaml:"upstream"`
	// BindingAttributes and InstanceAttributes repeat the upstream's settings in
	// sts.yaml: the report's fingerprint must be the one the STS computes.
	BindingAttributes  []string `yaml:"binding_attributes"`
	InstanceAttributes []string `yaml:"instance_attributes"`
	// Namespaces limits the watch (all when empty).
	Namespaces []string `yaml:"namespaces"`
}

// LoadConfig reads, decodes and validates path; relative file paths resolve
// against its directory. It reports every problem at once, as sts.yaml's are (a
// *confcheck.Error): each with its file and line, an unknown key with its key
// path and the key it may have meant.
func LoadConfig(path string) (*Config, error) {
	data, err := confcheck.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cfg, err := parseConfig(path, data)
	if err != nil {
		return nil, err
	}
	cfg.resolve(filepath.Dir(path))
	return cfg, nil
}

// ParseConfig decodes and validates a configuration (paths unresolved), applying
// defaults; its problems name the file stswatch.yaml.
func ParseConfig(data []byte) (*Config, error) {
	return parseConfig("stswatch.yaml", data)
}

func parseConfig(file string, data []byte) (*Config, error) {
	var cfg Config
	if err := confcheck.Parse(file, data, &cfg, func(root *yaml.Node) []confcheck.Problem {
		cfg.defaults()
		return cfg.validate(file, root)
	}); err != nil {
		return nil, err
	}
	return &cfg, nil
}

func (c *Config) defaults() {
	if c.QueueSize == 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.STS.Timeout == 0 {
		c.STS.Timeout = Duration(DefaultTimeout)
	}
	if c.STS.Concurrency == 0 {
		c.STS.Concurrency = DefaultConcurrency
	}
	if c.STS.MaxBackoff == 0 {
		c.STS.MaxBackoff = Duration(DefaultMaxBackoff)
	}
	if c.SPIRE != nil && c.SPIRE.PollInterval == 0 {
		c.SPIRE.PollInterval = Duration(DefaultPollInterval)
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
}

// validate returns what is wrong with the decoded configuration, each problem at
// the line of the value it is about (root is file's document).
func (c *Config) validate(file string, root *yaml.Node) []confcheck.Problem {
	var problems []confcheck.Problem
	// bad records msg (which names its key itself) at the line of the value at
	// path (keys and list indexes), or of its deepest part that exists; with no
	// path the problem is the whole file's.
	bad := func(msg string, path ...any) {
		line := 0
		if len(path) > 0 {
			line = confcheck.Line(root, path...)
		}
		problems = append(problems, confcheck.Problem{File: file, Line: line, Message: msg})
	}

	u, err := url.Parse(c.STS.URL)
	switch {
	case c.STS.URL == "":
		bad("sts.url is required", "sts", "url")
	case err != nil || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "":
		bad("sts.url must be a base URL such as https://sts.example:8443", "sts", "url")
	case u.Scheme == "https":
	case u.Scheme == "http" && loopbackHost(u.Hostname()):
	default:
		bad("sts.url must be https (http only to a loopback address)", "sts", "url")
	}
	if c.STS.CredentialFile == "" {
		bad("sts.credential_file is required (the watcher's bearer credential)", "sts", "credential_file")
	}
	if c.STS.Timeout < 0 || time.Duration(c.STS.Timeout) > 5*time.Minute {
		bad("sts.timeout must be between 0 and 5m", "sts", "timeout")
	}
	if c.STS.Concurrency < 0 || c.STS.Concurrency > MaxConcurrency {
		bad(fmt.Sprintf("sts.concurrency must be between 1 and %d", MaxConcurrency), "sts", "concurrency")
	}
	if c.STS.MaxBackoff < 0 || time.Duration(c.STS.MaxBackoff) < 100*time.Millisecond || time.Duration(c.STS.MaxBackoff) > 10*time.Minute {
		bad("sts.max_backoff must be between 100ms and 10m", "sts", "max_backoff")
	}
	if c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			bad("listen must be host:port", "listen")
		}
	}
	if c.QueueSize < 0 || c.QueueSize > MaxQueueSize {
		bad(fmt.Sprintf("queue_size must be between 1 and %d", MaxQueueSize), "queue_size")
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.LogLevel) {
		bad("log_level must be debug, info, warn or error", "log_level")
	}
	if c.SPIRE == nil && c.Kubernetes == nil {
		bad("at least one source (spire, kubernetes) is required")
	}
	if c.StateDir == "" {
		bad("state_dir is required (what each source last saw, to catch deletions across restarts)", "state_dir")
	}
	if s := c.SPIRE; s != nil {
		if s.ServerSocket == "" {
			bad("spire.server_socket is required (the SPIRE server's admin API socket)", "spire", "server_socket")
		}
		if !validName(s.Upstream) {
			bad("spire.upstream must name the STS upstream of the SPIFFE IDs", "spire", "upstream")
		}
		if d := time.Duration(s.PollInterval); d < MinPollInterval || d > MaxPollInterval {
			bad(fmt.Sprintf("spire.poll_interval must be between %s and %s", MinPollInterval, MaxPollInterval), "spire", "poll_interval")
		}
	}
	if k := c.Kubernetes; k != nil {
		if !validName(k.Upstream) {
			bad("kubernetes.upstream must name the STS upstream of the cluster's tokens", "kubernetes", "upstream")
		}
		for _, list := range []struct {
			key   string
			names []string
		}{{"binding_attributes", k.BindingAttributes}, {"instance_attributes", k.InstanceAttributes}} {
			for i, a := range list.names {
				if !slices.Contains(KubeAttributes, a) {
					bad(fmt.Sprintf("kubernetes.%s: %q is not an attribute of the kubernetes preset the watcher can compute from a pod (%s)",
						list.key, a, strings.Join(KubeAttributes, ", ")), "kubernetes", list.key, i)
				}
			}
		}
		// A pod's tokens are found by the fingerprint of its pod_uid, and pods of one
		// service account must be told apart (else each change report of one would
		// revoke the tokens of the others): sts.yaml's upstream must say the same.
		if !slices.Contains(k.BindingAttributes, "pod_uid") {
			bad("kubernetes.binding_attributes must include pod_uid (as the upstream's binding_attributes in sts.yaml must)", "kubernetes", "binding_attributes")
		}
		if !slices.Contains(k.InstanceAttributes, "pod") {
			bad("kubernetes.instance_attributes must include pod (as the upstream's instance_attributes in sts.yaml must)", "kubernetes", "instance_attributes")
		}
		for i, a := range k.InstanceAttributes {
			if slices.Contains(k.BindingAttributes, a) {
				bad(fmt.Sprintf("kubernetes: attribute %q cannot both identify the instance and bind its tokens", a), "kubernetes", "instance_attributes", i)
			}
		}
		for i, ns := range k.Namespaces {
			if ns == "" || len(ns) > 63 {
				bad(fmt.Sprintf("kubernetes.namespaces: %q is not a namespace name", ns), "kubernetes", "namespaces", i)
			}
		}
	}
	return problems
}

func (c *Config) resolve(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	abs(&c.STS.CAFile)
	abs(&c.STS.CredentialFile)
	abs(&c.StateDir)
	if c.SPIRE != nil {
		abs(&c.SPIRE.ServerSocket)
	}
	if c.Kubernetes != nil {
		abs(&c.Kubernetes.Kubeconfig)
	}
}

func validName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, r := range s {
		if !(r == '-' || r == '_' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

func loopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
