package config

import (
	"fmt"
	"math"
	"time"

	"github.com/safeconduct/safeconduct/issuer"
)

// LimitsConfig protects the token endpoint: before any cryptographic work, a
// token bucket per client IP and a bound on concurrent exchanges; after the
// credentials are verified, a token bucket per workload (subject) and per
// authenticated client. Requests over any limit get 429 with Retry-After.
type LimitsConfig struct {
	// PerIPRPS is the sustained rate of /token requests per client IP (IPv6 by
	// /64); 0 (default) = off. The IP is the connection's peer, or, when the peer
	// is one of TrustedProxies, the nearest untrusted address of X-Forwarded-For.
	PerIPRPS float64 `yaml:"per_ip_rps"`
	// Burst is the per-IP bucket size (default 2 x per_ip_rps, at least 1).
	Burst int `yaml:"burst"`
	// TrustedProxies are the CIDR prefixes (or single addresses) of reverse
	// proxies whose X-Forwarded-For is believed. Empty (default): the header is
	// ignored, as anyone can send it.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// PerWorkloadRPS is the sustained rate of exchanges per workload (upstream
	// and subject), checked once the subject token is verified; 0 (default) =
	// off. WorkloadBurst is its bucket size (default 2 x the rate, at least 1).
	PerWorkloadRPS float64 `yaml:"per_workload_rps"`
	WorkloadBurst  int     `yaml:"workload_burst"`
	// PerClientRPS is the sustained rate of requests per authenticated client
	// (mTLS or private_key_jwt), checked once the client is authenticated; 0
	// (default) = off. ClientBurst is its bucket size.
	PerClientRPS float64 `yaml:"per_client_rps"`
	ClientBurst  int     `yaml:"client_burst"`
	// MaxInFlight bounds concurrent /token requests (default 64 x GOMAXPROCS);
	// requests beyond it are answered 429 at once instead of queueing.
	MaxInFlight int `yaml:"max_in_flight"`
	// ShedQueueDelay: while requests wait longer than this before the server gets
	// to them (kernel socket queue or CPU run queue, see overload.go), a growing
	// fraction of /token requests is answered 429 at once. Default 20ms; negative
	// turns shedding off.
	ShedQueueDelay Duration `yaml:"shed_queue_delay"`
	// MaxConnections bounds open client connections (default 1024): at the
	// bound the longest idle one is closed to make room, or the new one when
	// none is idle.
	MaxConnections int `yaml:"max_connections"`
	// AdminPerIPRPS is the sustained rate per client IP of introspection, the
	// admin API and the revocation feed, in buckets of their own (default 50;
	// negative = off); AdminBurst is its bucket size (default 2 x the rate).
	AdminPerIPRPS float64 `yaml:"admin_per_ip_rps"`
	AdminBurst    int     `yaml:"admin_burst"`
	// AdminMaxInFlight bounds their concurrent requests before the caller is
	// verified (default 16 x GOMAXPROCS).
	AdminMaxInFlight int `yaml:"admin_max_in_flight"`
}

func (c *LimitsConfig) validate(v *validator) {
	for _, r := range []struct {
		rate        float64
		burst       int
		name, bname string
	}{
		{c.PerIPRPS, c.Burst, "per_ip_rps", "burst"},
		{c.PerWorkloadRPS, c.WorkloadBurst, "per_workload_rps", "workload_burst"},
		{c.PerClientRPS, c.ClientBurst, "per_client_rps", "client_burst"},
		{max(0, c.AdminPerIPRPS), c.AdminBurst, "admin_per_ip_rps", "admin_burst"}, // negative: off
	} {
		if r.rate < 0 || math.IsNaN(r.rate) || math.IsInf(r.rate, 0) {
			v.at("limits."+r.name+" must be 0 (off) or positive", "limits", r.name)
		}
		if r.burst < 0 {
			v.at("limits."+r.bname+" must not be negative", "limits", r.bname)
		}
	}
	for i, p := range c.TrustedProxies {
		if _, err := issuer.ParseTrustedProxy(p); err != nil {
			v.at(fmt.Sprintf("limits.trusted_proxies: %q is not an IP address or CIDR prefix", p), "limits", "trusted_proxies", i)
		}
	}
	if d := c.ShedQueueDelay.D(); d > 0 && d < time.Millisecond {
		v.at("limits.shed_queue_delay must be at least 1ms (or negative: off)", "limits", "shed_queue_delay")
	}
	for _, n := range []struct {
		v    int
		name string
	}{{c.MaxInFlight, "max_in_flight"}, {c.MaxConnections, "max_connections"}, {c.AdminMaxInFlight, "admin_max_in_flight"}} {
		if n.v < 0 {
			v.at("limits."+n.name+" must not be negative (0 = default)", "limits", n.name)
		}
	}
}

// issuer returns the limits as the server takes them.
func (c *LimitsConfig) issuer() issuer.Limits {
	return issuer.Limits{
		PerIPRPS:         c.PerIPRPS,
		Burst:            c.Burst,
		TrustedProxies:   c.TrustedProxies,
		PerWorkloadRPS:   c.PerWorkloadRPS,
		WorkloadBurst:    c.WorkloadBurst,
		PerClientRPS:     c.PerClientRPS,
		ClientBurst:      c.ClientBurst,
		MaxInFlight:      c.MaxInFlight,
		ShedQueueDelay:   c.ShedQueueDelay.D(),
		MaxConnections:   c.MaxConnections,
		AdminPerIPRPS:    c.AdminPerIPRPS,
		AdminBurst:       c.AdminBurst,
		AdminMaxInFlight: c.AdminMaxInFlight,
	}
}
