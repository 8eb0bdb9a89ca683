package redisstore

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"time"

	"github.com/redis/go-redis/v9"
)

// Config describes how to reach Redis: one address for a standalone server,
// several for a Cluster, or sentinel addresses with MasterName.
type Config struct {
	Addrs      []string
	MasterName string // sentinel master name; empty unless Sentinel is used
	// Cluster makes a Cluster client even when Addrs holds a single seed address.
	Cluster  bool
	Username string
	Password string
	// SentinelUsername and SentinelPassword authenticate to the sentinels, when
	// they need other credentials than the master.
	SentinelUsername string
	SentinelPassword string
	DB               int
	TLS              *tls.Config
	// Zero durations mean: dial 1 s, read 500 ms, write 500 ms.
	DialTimeout  time.Duration
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	// PoolSize is the number of connections per node; zero means go-redis's default
	// (10 per GOMAXPROCS).
	PoolSize int
	// ClusterStateReloadInterval is how often a Cluster client reloads the slot
	// map; zero means 2 s. go-redis's own default (60 s) keeps routing to a dead
	// master for up to a minute after a failover that caused no MOVED reply.
	ClusterStateReloadInterval time.Duration
}

// NewClient returns a go-redis client for cfg with short timeouts and
// ContextTimeoutEnabled, which New requires. With no address, every command fails
// (the client never falls back to localhost:6379). The caller closes the client
// after the stores using it.
func NewClient(cfg Config) redis.UniversalClient {
	opts := &redis.UniversalOptions{
		Addrs:                 cfg.Addrs,
		MasterName:            cfg.MasterName,
		IsClusterMode:         cfg.Cluster,
		Username:              cfg.Username,
		Password:              cfg.Password,
		SentinelUsername:      cfg.SentinelUsername,
		SentinelPassword:      cfg.SentinelPassword,
		DB:                    cfg.DB,
		TLSConfig:             cfg.TLS,
		DialTimeout:           cfg.DialTimeout,
		ReadTimeout:           cfg.ReadTimeout,
		WriteTimeout:          cfg.WriteTimeout,
		PoolSize:              cfg.PoolSize,
		ContextTimeoutEnabled: true,
		// CLIENT SETINFO is unknown before Redis 7.2; skip the useless round trip.
		DisableIdentity: true,
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = time.Second
	}
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = 500 * time.Millisecond
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 500 * time.Millisecond
	}
	// Waiting for a free connection is bounded like a read, so a slow Redis cannot
	// queue requests for long behind an exhausted pool.
	opts.PoolTimeout = opts.ReadTimeout
	if len(cfg.Addrs) == 0 {
		opts.Dialer = func(context.Context, string, string) (net.Conn, error) {
			return nil, errors.New("no Redis address configured")
		}
	}
	if cfg.MasterName == "" && (len(cfg.Addrs) > 1 || cfg.Cluster) {
		co := opts.Cluster()
		co.ClusterStateReloadInterval = cfg.ClusterStateReloadInterval
		if co.ClusterStateReloadInterval <= 0 {
			co.ClusterStateReloadInterval = 2 * time.Second
		}
		return redis.NewClusterClient(co)
	}
	return redis.NewUniversalClient(opts)
}
