package revocation

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisOptions configures NewRedis. The zero value is usable.
type RedisOptions struct {
	// Prefix starts every key; empty means "sc". It may hold only ASCII letters,
	// digits and ".-_:" (no "{" or "}", which would move the Cluster hash tag), at
	// most 64 bytes. Stores sharing a Redis with different prefixes never see each
	// other's entries.
	Prefix string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Timeout bounds every operation (round trips, retries and waiting for a pooled
	// connection), on top of any deadline of the caller's context; zero means 500 ms.
	Timeout time.Duration
}

// RedisConfig describes how to reach Redis: one address for a standalone server,
// several for a Cluster, or sentinel addresses with MasterName.
type RedisConfig struct {
	Addrs      []string
	MasterName string // sentinel master name; empty unless Sentinel is used
	// Cluster makes a Cluster client even when Addrs holds a single seed address.
	Cluster  bool
	Username string
	Password string
	DB       int
	TLS      *tls.Config
	// Zero durations mean: dial 1 s, read 500 ms, write 500 ms.
	DialTimeout  time.Duration
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	// PoolSize is the number of connections per node; zero means go-redis's default
	// (10 per GOMAXPROCS).
	PoolSize int
}

const (
	defaultRedisPrefix  = "sc"
	defaultRedisTimeout = 500 * time.Millisecond
	maxRedisPrefixLen   = 64
	// hashTag is shared by every key of a store, so that the keys one Admit reads lie
	// in one Cluster slot and can be read in one command.
	hashTag = "{rev}"
)

// NewRedisClient returns a go-redis client for cfg with short timeouts and
// ContextTimeoutEnabled, which NewRedis requires. With no address, every command
// fails (the client never falls back to localhost:6379). The caller closes the
// client after the stores using it.
func NewRedisClient(cfg RedisConfig) redis.UniversalClient {
	opts := &redis.UniversalOptions{
		Addrs:                 cfg.Addrs,
		MasterName:            cfg.MasterName,
		IsClusterMode:         cfg.Cluster,
		Username:              cfg.Username,
		Password:              cfg.Password,
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
	return redis.NewUniversalClient(opts)
}

// redisStore keeps the revocation state in Redis (standalone, Sentinel or Cluster).
//
// Keys, all under one hash tag:
//
//	<prefix>:{rev}:jti:<jti>                               revoked token
//	<prefix>:{rev}:block:<hex sha256(upstream NUL subject)>  blocked workload
//
// A value is "<expiry in unix ms>:<reason>"; every key expires at that instant
// (PXAT), and reads also treat an entry as absent once Now passes the expiry.
type redisStore struct {
	client      redis.UniversalClient
	now         func() time.Time
	timeout     time.Duration
	jtiPrefix   string
	blockPrefix string
	closed      atomic.Bool
	// err, when set, is a configuration error every method returns.
	err error
}

var _ Store = (*redisStore)(nil)

// NewRedis returns a Store kept in Redis through client, which the caller keeps
// owning (Close does not close it). The client must have ContextTimeoutEnabled (as
// NewRedisClient's has) so that opts.Timeout bounds each operation.
//
// A configuration error (nil client, bad prefix, client without
// ContextTimeoutEnabled) does not panic: every method of the returned store,
// Ping included, returns it, so readiness reports it and issuance fails closed.
func NewRedis(client redis.UniversalClient, opts RedisOptions) Store {
	if opts.Prefix == "" {
		opts.Prefix = defaultRedisPrefix
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Timeout <= 0 {
		opts.Timeout = defaultRedisTimeout
	}
	s := &redisStore{
		client:      client,
		now:         opts.Now,
		timeout:     opts.Timeout,
		jtiPrefix:   opts.Prefix + ":" + hashTag + ":jti:",
		blockPrefix: opts.Prefix + ":" + hashTag + ":block:",
	}
	s.err = checkRedisConfig(client, opts.Prefix)
	return s
}

func checkRedisConfig(client redis.UniversalClient, prefix string) error {
	if client == nil {
		return errors.New("revocation: redis: nil client")
	}
	if len(prefix) > maxRedisPrefixLen {
		return fmt.Errorf("revocation: redis: prefix longer than %d bytes", maxRedisPrefixLen)
	}
	for i := 0; i < len(prefix); i++ {
		c := prefix[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte(".-_:", c) >= 0) {
			return fmt.Errorf("revocation: redis: prefix %q: only ASCII letters, digits and .-_: are allowed", prefix)
		}
	}
	var ctxTimeouts bool
	switch c := client.(type) {
	case *redis.Client:
		ctxTimeouts = c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		ctxTimeouts = c.Options().ContextTimeoutEnabled
	default:
		ctxTimeouts = true // unknown implementation: trust it
	}
	if !ctxTimeouts {
		return errors.New("revocation: redis: client must have ContextTimeoutEnabled, or Timeout cannot bound operations")
	}
	return nil
}

var errClosed = errors.New("revocation: store closed")

// begin checks the store is usable and applies the per-operation deadline.
func (s *redisStore) begin(ctx context.Context) (context.Context, context.CancelFunc, error) {
	if s.err != nil {
		return nil, nil, s.err
	}
	if s.closed.Load() {
		return nil, nil, errClosed
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	return ctx, cancel, nil
}

func redisErr(err error) error {
	return fmt.Errorf("revocation: redis: %w", err)
}

func (s *redisStore) jtiKey(jti string) string { return s.jtiPrefix + jti }

// blockKey hashes the workload so that untrusted subjects never shape keys.
func (s *redisStore) blockKey(upstream, subject string) string {
	sum := sha256.Sum256(workloadKey(upstream, subject))
	return s.blockPrefix + hex.EncodeToString(sum[:])
}

// untilMillis rounds up to the millisecond, so an entry never expires before until.
func untilMillis(until time.Time) int64 {
	ms := until.UnixMilli()
	if until.Sub(time.UnixMilli(ms)) > 0 {
		ms++
	}
	return ms
}

// parseRedisEntry splits "<expiry unix ms>:<reason>".
func parseRedisEntry(v string) (untilMs int64, reason string, ok bool) {
	i := strings.IndexByte(v, ':')
	if i <= 0 {
		return 0, "", false
	}
	ms, err := strconv.ParseInt(v[:i], 10, 64)
	if err != nil {
		return 0, "", false
	}
	return ms, v[i+1:], true
}

// putScript writes an entry unless the stored one expires later, so that a later
// write never shortens a revocation or a block. KEYS[1]: key; ARGV[1]: value;
// ARGV[2]: expiry in unix ms.
var putScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur then
  local ms = tonumber(string.match(cur, '^(%d+):'))
  if ms and ms >= tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
return 1
`)

func (s *redisStore) put(ctx context.Context, key string, until time.Time, reason string) error {
	ctx, cancel, err := s.begin(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	ms := untilMillis(until)
	value := strconv.FormatInt(ms, 10) + ":" + reason
	// Run returns the error of the SET (or of the script): never ignore it, or an
	// unrecorded revocation would be reported as done.
	if err := putScript.Run(ctx, s.client, []string{key}, value, ms).Err(); err != nil {
		return redisErr(err)
	}
	return nil
}

// Admit implements Store in one round trip.
func (s *redisStore) Admit(ctx context.Context, q Query) error {
	if err := checkWorkload(q.Upstream, q.Subject); err != nil {
		return err
	}
	ctx, cancel, err := s.begin(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	// Checks added later (watermarks, selectors) append their keys to this MGET: all
	// keys share the hash tag, so it stays one command on one Cluster slot.
	vals, err := s.client.MGet(ctx, s.blockKey(q.Upstream, q.Subject)).Result()
	if err != nil {
		return redisErr(err)
	}
	now := s.now().UnixMilli()
	for _, v := range vals {
		if v == nil {
			continue
		}
		str, ok := v.(string)
		if !ok {
			return redisErr(fmt.Errorf("%w: unexpected reply type %T", errCorrupt, v))
		}
		until, reason, ok := parseRedisEntry(str)
		if !ok {
			return redisErr(errCorrupt)
		}
		if now < until {
			return &BlockedError{Reason: reason, Until: time.UnixMilli(until)}
		}
	}
	return nil
}

// RevokeToken implements Store.
func (s *redisStore) RevokeToken(ctx context.Context, jti string, until time.Time, reason string) error {
	if err := checkJTI(jti); err != nil {
		return err
	}
	if err := checkEntry(s.now(), until, reason); err != nil {
		return err
	}
	return s.put(ctx, s.jtiKey(jti), until, reason)
}

// TokenRevoked implements Store.
func (s *redisStore) TokenRevoked(ctx context.Context, jti string) (bool, error) {
	if err := checkJTI(jti); err != nil {
		return false, err
	}
	ctx, cancel, err := s.begin(ctx)
	if err != nil {
		return false, err
	}
	defer cancel()
	v, err := s.client.Get(ctx, s.jtiKey(jti)).Result()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, redisErr(err)
	}
	until, _, ok := parseRedisEntry(v)
	if !ok {
		return false, redisErr(errCorrupt)
	}
	return s.now().UnixMilli() < until, nil
}

// BlockSubject implements Store.
func (s *redisStore) BlockSubject(ctx context.Context, upstream, subject string, until time.Time, reason string) error {
	if err := checkWorkload(upstream, subject); err != nil {
		return err
	}
	if err := checkEntry(s.now(), until, reason); err != nil {
		return err
	}
	return s.put(ctx, s.blockKey(upstream, subject), until, reason)
}

// Ping implements Store with a PING.
func (s *redisStore) Ping(ctx context.Context) error {
	ctx, cancel, err := s.begin(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	if err := s.client.Ping(ctx).Err(); err != nil {
		return redisErr(err)
	}
	return nil
}

// Close implements Store. It does not close the client, which the caller owns; later
// operations fail.
func (s *redisStore) Close() error {
	s.closed.Store(true)
	return nil
}
