package watch

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Limits and defaults of the configuration.
const (
	maxConfigBytes      = 1 << 20
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
		return fmt.Errorf("line %d: a duration such as 10s is required", n.Line)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration such as 10s", n.Line, s)
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

// LoadConfig reads, decodes (unknown keys are errors) and validates path;
// relative file paths resolve against its directory.
func LoadConfig(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxConfigBytes {
		return nil, fmt.Errorf("%s: over %d bytes", path, maxConfigBytes)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	cfg.resolve(filepath.Dir(path))
	return cfg, nil
}

// ParseConfig decodes and validates a configuration (paths unresolved), applying
// defaults.
func ParseConfig(data []byte) (*Config, error) {
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return nil, fmt.Errorf("not a valid stswatch config: %w", err)
	}
	cfg.defaults()
	if err := cfg.validate(); err != nil {
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

func (c *Config) validate() error {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	u, err := url.Parse(c.STS.URL)
	switch {
	case c.STS.URL == "":
		bad("sts.url is required")
	case err != nil || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "":
		bad("sts.url must be a base URL such as https://sts.example:8443")
	case u.Scheme == "https":
	case u.Scheme == "http" && loopbackHost(u.Hostname()):
	default:
		bad("sts.url must be https (http only to a loopback address)")
	}
	if c.STS.CredentialFile == "" {
		bad("sts.credential_file is required (the watcher's bearer credential)")
	}
	if c.STS.Timeout < 0 || time.Duration(c.STS.Timeout) > 5*time.Minute {
		bad("sts.timeout must be between 0 and 5m")
	}
	if c.STS.Concurrency < 0 || c.STS.Concurrency > MaxConcurrency {
		bad("sts.concurrency must be between 1 and %d", MaxConcurrency)
	}
	if c.STS.MaxBackoff < 0 || time.Duration(c.STS.MaxBackoff) < 100*time.Millisecond || time.Duration(c.STS.MaxBackoff) > 10*time.Minute {
		bad("sts.max_backoff must be between 100ms and 10m")
	}
	if c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			bad("listen must be host:port")
		}
	}
	if c.QueueSize < 0 || c.QueueSize > MaxQueueSize {
		bad("queue_size must be between 1 and %d", MaxQueueSize)
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.LogLevel) {
		bad("log_level must be debug, info, warn or error")
	}
	if c.SPIRE == nil && c.Kubernetes == nil {
		bad("at least one source (spire, kubernetes) is required")
	}
	if c.StateDir == "" {
		bad("state_dir is required (what each source last saw, to catch deletions across restarts)")
	}
	if s := c.SPIRE; s != nil {
		if s.ServerSocket == "" {
			bad("spire.server_socket is required (the SPIRE server's admin API socket)")
		}
		if !validName(s.Upstream) {
			bad("spire.upstream must name the STS upstream of the SPIFFE IDs")
		}
		if d := time.Duration(s.PollInterval); d < MinPollInterval || d > MaxPollInterval {
			bad("spire.poll_interval must be between %s and %s", MinPollInterval, MaxPollInterval)
		}
	}
	if k := c.Kubernetes; k != nil {
		if !validName(k.Upstream) {
			bad("kubernetes.upstream must name the STS upstream of the cluster's tokens")
		}
		for _, list := range []struct {
			key   string
			names []string
		}{{"binding_attributes", k.BindingAttributes}, {"instance_attributes", k.InstanceAttributes}} {
			for _, a := range list.names {
				if !slices.Contains(KubeAttributes, a) {
					bad("kubernetes.%s: %q is not an attribute of the kubernetes preset the watcher can compute from a pod (%s)",
						list.key, a, strings.Join(KubeAttributes, ", "))
				}
			}
		}
		// A pod's tokens are found by the fingerprint of its pod_uid, and pods of one
		// service account must be told apart (else each change report of one would
		// revoke the tokens of the others): sts.yaml's upstream must say the same.
		if !slices.Contains(k.BindingAttributes, "pod_uid") {
			bad("kubernetes.binding_attributes must include pod_uid (as the upstream's binding_attributes in sts.yaml must)")
		}
		if !slices.Contains(k.InstanceAttributes, "pod") {
			bad("kubernetes.instance_attributes must include pod (as the upstream's instance_attributes in sts.yaml must)")
		}
		for _, a := range k.InstanceAttributes {
			if slices.Contains(k.BindingAttributes, a) {
				bad("kubernetes: attribute %q cannot both identify the instance and bind its tokens", a)
			}
		}
		for _, ns := range k.Namespaces {
			if ns == "" || len(ns) > 63 {
				bad("kubernetes.namespaces: %q is not a namespace name", ns)
			}
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
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
