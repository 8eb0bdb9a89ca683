package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/safeconduct/safeconduct/revocation"
	"github.com/safeconduct/safeconduct/revocation/internal/backend"
)

// Options configures New. The zero value is usable.
type Options struct {
	// Prefix starts every key; empty means "sc". It may hold only ASCII letters,
	// digits and ".-_:" (no "{" or "}", which would move the Cluster hash tag), at
	// most 64 bytes. Stores sharing a Redis with different prefixes never see each
	// other's entries.
	Prefix string
	// Now is the caller's clock, which bounds Admit's IssuedAt; nil means
	// time.Now. Created and expiry come from Redis TIME.
	Now func() time.Time
	// Timeout bounds every operation (round trips, retries and waiting for a pooled
	// connection), on top of any deadline of the caller's context; zero means 500 ms.
	Timeout time.Duration
	// RevokeTTL is the lifetime of a revoke created without Expires: at least the
	// STS's tokens.max_ttl. Zero means 24 h.
	RevokeTTL time.Duration
	// Grace is added to Redis TIME to make an entry's Created, so that every token
	// admitted before Create returns has iat <= Created. Zero means 1 s or twice
	// Timeout (plus ReplicaTimeout), whichever is larger; a smaller value is raised
	// to that, since Create must return within the grace.
	Grace time.Duration
	// ConfirmReplicas makes every write wait (WAIT 1) until a replica acknowledged
	// it, and fail otherwise: set it with Sentinel or Cluster, so that an
	// acknowledged revocation survives a failover.
	ConfirmReplicas bool
	// ReplicaTimeout bounds that wait; zero means 250 ms.
	ReplicaTimeout time.Duration
	// MaxEvents bounds the feed (a stream); zero means 100,000. Cursors before the
	// retained events are expired.
	MaxEvents int
	// FeedRetention is how long the feed's keys stay after the last write; zero
	// means 7 days. A cursor older than a feed that expired is expired.
	FeedRetention time.Duration
	// WaitBlock bounds one blocking read of Wait; zero means 5 s.
	WaitBlock time.Duration
}

const (
	defaultPrefix  = "sc"
	maxPrefixLen   = 64
	hashTag        = "{rev}"
	defaultLimit   = 1000
	maxLimit       = 10000
	scanCount      = 1000
	maxCursorMilli = 1_000_000_000_000_000 // 15 digits
	maxCursorSeq   = 1 << 53
)

// Store keeps revocation state in Redis (standalone, Sentinel or Cluster).
//
// Keys, all under one hash tag so that a script may touch any of them on Cluster:
//
//	P:{rev}:e:<id>      entry JSON (wire form); PXAT its expiry, or none for an
//	                    open-ended block (until lifted; then 24 h)
//	P:{rev}:r:<h>       revokes filed under anchor h (hash id -> JSON); PXAT the
//	                    latest expiry of its entries; expired fields pruned on write
//	P:{rev}:b:<h>       expiring blocks filed under anchor h, likewise
//	P:{rev}:o:<h>       open-ended blocks under anchor h; no expiry, gone when empty
//	P:{rev}:x           zset of entries (score: when they may be forgotten); PXAT max
//	P:{rev}:xo          set of open-ended blocks; no expiry, gone when empty
//	P:{rev}:n:<h>       binding of an instance (hash fp, ttl); PX ttl
//	P:{rev}:s           the feed (stream); P:{rev}:m its floor and last ID; PX the
//	                    feed retention after the last write
//
// h is a hash of the anchor or instance, so untrusted text never shapes keys.
type Store struct {
	client    redis.UniversalClient
	now       func() time.Time
	timeout   time.Duration
	revokeTTL time.Duration
	grace     time.Duration
	confirm   bool
	replicaTO time.Duration
	maxEvents int
	retention time.Duration
	waitBlock time.Duration
	prefix    string // "P:{rev}:"
	closed    atomic.Bool
	// err, when set, is a configuration error every method returns.
	err error
}

var _ revocation.Store = (*Store)(nil)

var errClosed = errors.New("revocation: redisstore: closed")

// New returns a Store kept in Redis through client, which the caller keeps owning
// (Close does not close it). The client must have ContextTimeoutEnabled (as
// NewClient's has) so that opts.Timeout bounds each operation.
//
// A configuration error (nil client, bad prefix, client without
// ContextTimeoutEnabled) does not panic: every method of the returned store, Ping
// included, returns it, so readiness reports it and issuance fails closed.
func New(client redis.UniversalClient, opts Options) *Store {
	if opts.Prefix == "" {
		opts.Prefix = defaultPrefix
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 500 * time.Millisecond
	}
	if opts.RevokeTTL <= 0 {
		opts.RevokeTTL = backend.DefaultRevokeTTL
	}
	if opts.ReplicaTimeout <= 0 {
		opts.ReplicaTimeout = 250 * time.Millisecond
	}
	if minGrace := max(backend.DefaultGrace, 2*(opts.Timeout+opts.ReplicaTimeout)); opts.Grace < minGrace {
		opts.Grace = minGrace
	}
	if opts.MaxEvents <= 0 {
		opts.MaxEvents = 100_000
	}
	if opts.FeedRetention <= 0 {
		opts.FeedRetention = 7 * 24 * time.Hour
	}
	if opts.WaitBlock <= 0 {
		opts.WaitBlock = 5 * time.Second
	}
	s := &Store{
		client: client, now: opts.Now, timeout: opts.Timeout, revokeTTL: opts.RevokeTTL,
		grace: opts.Grace, confirm: opts.ConfirmReplicas, replicaTO: opts.ReplicaTimeout,
		maxEvents: opts.MaxEvents, retention: opts.FeedRetention, waitBlock: opts.WaitBlock,
		prefix: opts.Prefix + ":" + hashTag + ":",
	}
	s.err = checkConfig(client, opts.Prefix)
	return s
}

func checkConfig(client redis.UniversalClient, prefix string) error {
	if client == nil {
		return errors.New("revocation: redisstore: nil client")
	}
	if len(prefix) > maxPrefixLen {
		return fmt.Errorf("revocation: redisstore: prefix longer than %d bytes", maxPrefixLen)
	}
	for i := 0; i < len(prefix); i++ {
		c := prefix[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte(".-_:", c) >= 0) {
			return fmt.Errorf("revocation: redisstore: prefix %q: only ASCII letters, digits and .-_: are allowed", prefix)
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
		return errors.New("revocation: redisstore: client must have ContextTimeoutEnabled, or Timeout cannot bound operations")
	}
	return nil
}

// begin checks the store is usable and applies the per-operation deadline d.
func (s *Store) begin(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc, error) {
	if s.err != nil {
		return nil, nil, s.err
	}
	if s.closed.Load() {
		return nil, nil, errClosed
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	return ctx, cancel, nil
}

func redisErr(err error) error { return fmt.Errorf("revocation: redisstore: %w", err) }

var errCorrupt = errors.New("corrupt reply")

func (s *Store) entryKey(id string) string  { return s.prefix + "e:" + id }
func (s *Store) indexKey() string           { return s.prefix + "x" }
func (s *Store) openIndexKey() string       { return s.prefix + "xo" }
func (s *Store) streamKey() string          { return s.prefix + "s" }
func (s *Store) metaKey() string            { return s.prefix + "m" }
func (s *Store) claimKey(key string) string { return s.prefix + "j:" + backend.Hash(key) }
func (s *Store) bindingKey(instance string) string {
	return s.prefix + "n:" + backend.Hash(instance)
}

// bucketKey names the bucket of an entry: by kind, and for blocks whether
// open-ended.
func (s *Store) bucketKey(kind revocation.Kind, openEnded bool, anchor string) string {
	return s.bucketKeyOf(kind, openEnded, backend.Hash(anchor))
}

// bucketKeyOf is bucketKey for the anchor whose backend.Hash is h.
func (s *Store) bucketKeyOf(kind revocation.Kind, openEnded bool, h string) string {
	switch {
	case kind == revocation.KindRevoke:
		return s.prefix + "r:" + h
	case openEnded:
		return s.prefix + "o:" + h
	default:
		return s.prefix + "b:" + h
	}
}

// blockBuckets are the keys of both block buckets (bounded and open-ended) of
// each anchor of f; revokeBuckets those of its revoke buckets. Built from
// f.EachAnchor: an anchor f repeats gives its keys twice, which reads the same
// entries twice and changes nothing.
func (s *Store) blockBuckets(f *revocation.Facts) []string {
	keys := make([]string, 0, 2*f.AnchorCount())
	f.EachAnchor(func(a []byte) {
		h := backend.Hash(string(a)) // both block buckets of an anchor share its hash
		keys = append(keys, s.bucketKeyOf(revocation.KindBlock, false, h), s.bucketKeyOf(revocation.KindBlock, true, h))
	})
	return keys
}

func (s *Store) revokeBuckets(f *revocation.Facts) []string {
	keys := make([]string, 0, f.AnchorCount())
	f.EachAnchor(func(a []byte) {
		keys = append(keys, s.bucketKeyOf(revocation.KindRevoke, false, backend.Hash(string(a))))
	})
	return keys
}

func ms(d time.Duration) int64 { return d.Milliseconds() }

// jsonString returns s as a JSON string literal.
func jsonString(s string) string {
	b, _ := json.Marshal(s) // a string always marshals
	return string(b)
}

// entryPrefix is the wire JSON of e up to the actor, without the closing brace;
// the scripts append created, expires and lifted.
func entryPrefix(e revocation.Entry) string {
	return `{"id":` + jsonString(e.ID) + `,"kind":` + jsonString(string(e.Kind)) +
		`,"selector":` + jsonString(e.Selector) + `,"reason":` + jsonString(e.Reason) +
		`,"actor":` + jsonString(e.Actor)
}

// write runs a write script, then, with ConfirmReplicas, WAIT 1 on the same
// connection. An error after the script ran means the write may have happened
// without being confirmed.
func (s *Store) write(ctx context.Context, script *redis.Script, keys []string, args ...any) (any, error) {
	if !s.confirm {
		return script.Run(ctx, s.client, keys, args...).Result()
	}
	var node *redis.Client
	switch c := s.client.(type) {
	case *redis.Client:
		node = c
	case *redis.ClusterClient:
		var err error
		if node, err = c.MasterForKey(ctx, keys[0]); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("ConfirmReplicas needs a *redis.Client or *redis.ClusterClient, not %T", s.client)
	}
	conn := node.Conn()
	defer conn.Close()
	res, err := script.Run(ctx, conn, keys, args...).Result()
	if err != nil {
		return nil, err
	}
	n, err := conn.Wait(ctx, 1, s.replicaTO).Result()
	if err != nil {
		return nil, fmt.Errorf("written, but WAIT for a replica failed: %w", err)
	}
	if n < 1 {
		return nil, fmt.Errorf("written, but no replica acknowledged within %s", s.replicaTO)
	}
	return res, nil
}

func (s *Store) writeTimeout() time.Duration {
	if s.confirm {
		return s.timeout + s.replicaTO
	}
	return s.timeout
}

// Create implements revocation.Store with one script; Created is Redis TIME plus
// the grace (see Options.Grace), and Create fails if it could not return within
// the grace. With ConfirmReplicas, the write is then confirmed by a replica.
func (s *Store) Create(ctx context.Context, e revocation.Entry) (revocation.Entry, error) {
	p, err := backend.PrepareCreate(e, s.now(), s.revokeTTL)
	if err != nil {
		return revocation.Entry{}, err
	}
	ctx, cancel, err := s.begin(ctx, s.writeTimeout())
	if err != nil {
		return revocation.Entry{}, err
	}
	defer cancel()
	entry := p.Entry
	openEnded := entry.Expires.IsZero() && p.TTL == 0
	var expires int64
	if !entry.Expires.IsZero() {
		expires = entry.Expires.UnixMilli()
		if entry.Expires.After(time.UnixMilli(expires)) {
			expires++ // never end before the requested instant
		}
	}
	keys := []string{
		s.entryKey(entry.ID), s.bucketKey(entry.Kind, openEnded, p.Anchor),
		s.indexKey(), s.openIndexKey(), s.streamKey(), s.metaKey(),
	}
	start := time.Now()
	res, err := s.write(ctx, createScript, keys, entry.ID, entryPrefix(entry), expires, ms(p.TTL), ms(s.grace), s.maxEvents, ms(s.retention))
	if err != nil {
		if strings.Contains(err.Error(), "EXPIRED") {
			return revocation.Entry{}, backend.Invalid("expires is not after the store's clock")
		}
		return revocation.Entry{}, redisErr(err)
	}
	vals, ok := res.([]any)
	if !ok || len(vals) != 2 {
		return revocation.Entry{}, redisErr(errCorrupt)
	}
	created, err1 := strconv.ParseInt(fmt.Sprint(vals[0]), 10, 64)
	exp, err2 := strconv.ParseInt(fmt.Sprint(vals[1]), 10, 64)
	if err1 != nil || err2 != nil {
		return revocation.Entry{}, redisErr(errCorrupt)
	}
	entry.Created = time.UnixMilli(created)
	if exp != 0 {
		entry.Expires = time.UnixMilli(exp)
	}
	if d := time.Since(start); d >= s.grace {
		return revocation.Entry{}, redisErr(fmt.Errorf("entry %s is recorded, but Create took %s, more than the grace %s", entry.ID, d, s.grace))
	}
	return entry, nil
}

// Lift implements revocation.Store: it reads the entry (to find its bucket), then
// lifts it in one script. A lifted entry stays listed for 24 h or until it would
// have expired; lifting it again returns it without a new event.
func (s *Store) Lift(ctx context.Context, id, actor, reason string) (revocation.Entry, error) {
	if err := backend.CheckID(id); err != nil {
		return revocation.Entry{}, err
	}
	if err := backend.CheckText("actor", actor, revocation.MaxActorLen); err != nil {
		return revocation.Entry{}, err
	}
	if err := backend.CheckText("reason", reason, revocation.MaxReasonLen); err != nil {
		return revocation.Entry{}, err
	}
	ctx, cancel, err := s.begin(ctx, s.writeTimeout()+s.timeout)
	if err != nil {
		return revocation.Entry{}, err
	}
	defer cancel()
	notFound := fmt.Errorf("revocation: redisstore: entry %s: %w", id, revocation.ErrNotFound)
	raw, err := s.client.Get(ctx, s.entryKey(id)).Result()
	if errors.Is(err, redis.Nil) {
		return revocation.Entry{}, notFound
	}
	if err != nil {
		return revocation.Entry{}, redisErr(err)
	}
	var cur revocation.Entry
	if err := json.Unmarshal([]byte(raw), &cur); err != nil {
		return revocation.Entry{}, redisErr(err)
	}
	if cur.Lifted {
		return cur, nil
	}
	sel, err := revocation.ParseSelector(cur.Selector)
	if err != nil {
		return revocation.Entry{}, redisErr(fmt.Errorf("entry %s: %w", id, err))
	}
	keys := []string{
		s.entryKey(id), s.bucketKey(cur.Kind, cur.Expires.IsZero(), sel.Anchor()),
		s.indexKey(), s.openIndexKey(), s.streamKey(), s.metaKey(),
	}
	res, err := s.write(ctx, liftScript, keys, id, ms(backend.LiftedRetention), s.maxEvents, ms(s.retention))
	if err != nil {
		return revocation.Entry{}, redisErr(err)
	}
	vals, ok := res.([]any)
	if !ok || len(vals) == 0 {
		return revocation.Entry{}, redisErr(errCorrupt)
	}
	if n, _ := vals[0].(int64); n == 0 {
		return revocation.Entry{}, notFound
	}
	if len(vals) != 2 {
		return revocation.Entry{}, redisErr(errCorrupt)
	}
	var lifted revocation.Entry
	if err := json.Unmarshal([]byte(fmt.Sprint(vals[1])), &lifted); err != nil {
		return revocation.Entry{}, redisErr(err)
	}
	return lifted, nil
}

// Bind implements revocation.Store with one script: it swaps the recorded
// fingerprint and, if another one was recorded, files the revoke of its tokens,
// with Created from Redis TIME plus the grace. The record expires ttl after the
// last Bind, extended by Admit when less than half is left (pass a ttl of at
// least twice the tokens' max TTL); the fired revoke expires ttl after Created.
func (s *Store) Bind(ctx context.Context, instance string, f *revocation.Facts, ttl time.Duration) (*revocation.Entry, error) {
	if err := backend.CheckBind(instance, f, ttl); err != nil {
		return nil, err
	}
	// The selector is "bnd=OLD,sub=S,upstream=U": its anchor is sub=S whatever
	// OLD, so the bucket is known before the script reads OLD. Fingerprints are
	// base64url (CheckBind), so OLD needs no quoting or escaping.
	full, err := backend.BindSelector(f, f.Binding)
	if err != nil {
		return nil, err
	}
	sel := revocation.MustParseSelector(full)
	rest := strings.TrimPrefix(full, "bnd="+f.Binding)
	restJSON := jsonString(rest)
	restJSON = restJSON[1 : len(restJSON)-1]
	ctx, cancel, err := s.begin(ctx, s.writeTimeout())
	if err != nil {
		return nil, err
	}
	defer cancel()
	id := backend.NewID()
	head := `{"id":` + jsonString(id) + `,"kind":"revoke","selector":"`
	tail := `","reason":` + jsonString(backend.BindReason) + `,"actor":` + jsonString(revocation.ActorRuntimeChange)
	keys := []string{
		s.bindingKey(instance), s.entryKey(id), s.bucketKey(revocation.KindRevoke, false, sel.Anchor()),
		s.indexKey(), s.openIndexKey(), s.streamKey(), s.metaKey(),
	}
	start := time.Now()
	res, err := s.write(ctx, bindScript, keys, f.Binding, ms(ttl), id, head, restJSON, tail, ms(s.grace), s.maxEvents, ms(s.retention))
	if err != nil {
		return nil, redisErr(err)
	}
	vals, ok := res.([]any)
	if !ok || len(vals) == 0 {
		return nil, redisErr(errCorrupt)
	}
	if n, _ := vals[0].(int64); n == 0 {
		return nil, nil
	}
	if len(vals) != 2 {
		return nil, redisErr(errCorrupt)
	}
	var fired revocation.Entry
	if err := json.Unmarshal([]byte(fmt.Sprint(vals[1])), &fired); err != nil {
		return nil, redisErr(err)
	}
	if d := time.Since(start); d >= s.grace {
		return nil, redisErr(fmt.Errorf("entry %s is recorded, but Bind took %s, more than the grace %s", id, d, s.grace))
	}
	return &fired, nil
}

// check runs checkScript over the buckets of anchors and returns the server time,
// the instance's fingerprint and the entries found.
func (s *Store) check(ctx context.Context, instance string, buckets []string) (time.Time, string, []revocation.Entry, error) {
	ctx, cancel, err := s.begin(ctx, s.timeout)
	if err != nil {
		return time.Time{}, "", nil, err
	}
	defer cancel()
	if _, single := s.client.(*redis.Client); single && instance == "" && len(buckets) > 0 {
		// The common case without Lua: TIME and one EXISTS over the buckets,
		// pipelined (one round trip). Only when a bucket exists does the script
		// read them. Not on a Cluster, where TIME would come from any node.
		pipe := s.client.Pipeline()
		tc := pipe.Time(ctx)
		ec := pipe.Exists(ctx, buckets...)
		if _, err := pipe.Exec(ctx); err != nil {
			return time.Time{}, "", nil, redisErr(err)
		}
		if ec.Val() == 0 {
			return tc.Val(), "", nil, nil
		}
	}
	keys := make([]string, 0, 1+len(buckets))
	flag := "0"
	if instance != "" {
		keys = append(keys, s.bindingKey(instance))
		flag = "1"
	} else {
		keys = append(keys, s.metaKey()) // unread; KEYS[1] routes the script
	}
	keys = append(keys, buckets...)
	res, err := checkScript.Run(ctx, s.client, keys, flag).Slice()
	if err != nil {
		return time.Time{}, "", nil, redisErr(err)
	}
	if len(res) < 3 {
		return time.Time{}, "", nil, redisErr(errCorrupt)
	}
	sec, err1 := strconv.ParseInt(fmt.Sprint(res[0]), 10, 64)
	usec, err2 := strconv.ParseInt(fmt.Sprint(res[1]), 10, 64)
	fp, ok := res[2].(string)
	if err1 != nil || err2 != nil || !ok {
		return time.Time{}, "", nil, redisErr(errCorrupt)
	}
	entries := make([]revocation.Entry, 0, len(res)-3)
	for _, v := range res[3:] {
		str, ok := v.(string)
		if !ok {
			return time.Time{}, "", nil, redisErr(errCorrupt)
		}
		var e revocation.Entry
		if err := json.Unmarshal([]byte(str), &e); err != nil {
			return time.Time{}, "", nil, redisErr(err)
		}
		entries = append(entries, e)
	}
	return time.Unix(sec, usec*1000), fp, entries, nil
}

// Admit implements revocation.Store in one script (one round trip): the blocks
// filed under the facts' anchors, Redis TIME and the instance's fingerprint.
func (s *Store) Admit(ctx context.Context, f *revocation.Facts, instance string) (revocation.Admission, error) {
	if err := backend.CheckFacts(f); err != nil {
		return revocation.Admission{}, err
	}
	if instance != "" {
		if err := backend.CheckInstance(instance); err != nil {
			return revocation.Admission{}, err
		}
	}
	buckets := s.blockBuckets(f)
	now, fp, entries, err := s.check(ctx, instance, buckets)
	if err != nil {
		return revocation.Admission{}, err
	}
	var blocked *revocation.Entry
	for i := range entries {
		e := &entries[i]
		if e.Blocks(f, now) && (blocked == nil || later(*e, *blocked)) {
			blocked = e
		}
	}
	if blocked != nil {
		return revocation.Admission{}, &revocation.BlockedError{Entry: *blocked}
	}
	return revocation.Admission{IssuedAt: backend.IssuedAt(now, s.now()), Binding: fp}, nil
}

func later(a, b revocation.Entry) bool {
	if c := a.Created.Compare(b.Created); c != 0 {
		return c > 0
	}
	return a.ID > b.ID
}

// Revoked implements revocation.Store in one script over the facts' anchors.
func (s *Store) Revoked(ctx context.Context, f *revocation.Facts) (*revocation.Entry, error) {
	if err := backend.CheckFacts(f); err != nil {
		return nil, err
	}
	buckets := s.revokeBuckets(f)
	now, _, entries, err := s.check(ctx, "", buckets)
	if err != nil {
		return nil, err
	}
	var found *revocation.Entry
	for i := range entries {
		e := &entries[i]
		if e.Invalidates(f, now) && (found == nil || later(*e, *found)) {
			found = e
		}
	}
	return found, nil
}

// List implements revocation.Store, oldest first. It scans the index of entries
// (ZSCAN, SSCAN) and reads them in batches, each step under its own timeout.
func (s *Store) List(ctx context.Context, includeInactive bool) ([]revocation.Entry, error) {
	if s.err != nil {
		return nil, s.err
	}
	entries, err := s.scanEntries(ctx)
	if err != nil {
		return nil, err
	}
	if includeInactive {
		revocation.SortEntries(entries)
		return entries, nil
	}
	now := s.now()
	active := entries[:0]
	for _, e := range entries {
		if e.Active(now) {
			active = append(active, e)
		}
	}
	revocation.SortEntries(active)
	return active, nil
}

// scanEntries returns every entry the index names (each at most once). An entry
// present during the whole scan is returned; one created or removed meanwhile may
// or may not be.
func (s *Store) scanEntries(ctx context.Context) ([]revocation.Entry, error) {
	seen := map[string]bool{}
	var ids []string
	scan := func(zset bool) error {
		var cursor uint64
		for {
			cctx, cancel, err := s.begin(ctx, s.timeout)
			if err != nil {
				return err
			}
			var keys []string
			if zset {
				keys, cursor, err = s.client.ZScan(cctx, s.indexKey(), cursor, "", scanCount).Result()
			} else {
				keys, cursor, err = s.client.SScan(cctx, s.openIndexKey(), cursor, "", scanCount).Result()
			}
			cancel()
			if err != nil {
				return redisErr(err)
			}
			step := 1
			if zset {
				step = 2 // member, score
			}
			for i := 0; i < len(keys); i += step {
				if id := keys[i]; !seen[id] {
					seen[id] = true
					ids = append(ids, id)
				}
			}
			if cursor == 0 {
				return nil
			}
		}
	}
	if err := scan(true); err != nil {
		return nil, err
	}
	if err := scan(false); err != nil {
		return nil, err
	}
	out := make([]revocation.Entry, 0, len(ids))
	for len(ids) > 0 {
		n := min(len(ids), scanCount)
		keys := make([]string, n)
		for i, id := range ids[:n] {
			keys[i] = s.entryKey(id)
		}
		ids = ids[n:]
		cctx, cancel, err := s.begin(ctx, s.timeout)
		if err != nil {
			return nil, err
		}
		vals, err := s.client.MGet(cctx, keys...).Result()
		cancel()
		if err != nil {
			return nil, redisErr(err)
		}
		for _, v := range vals {
			if v == nil {
				continue // expired or deleted meanwhile
			}
			str, ok := v.(string)
			if !ok {
				return nil, redisErr(errCorrupt)
			}
			var e revocation.Entry
			if err := json.Unmarshal([]byte(str), &e); err != nil {
				return nil, redisErr(err)
			}
			out = append(out, e)
		}
	}
	return out, nil
}

// checkCursor accepts "" or a stream ID as this store makes them.
func checkCursor(cursor string) error {
	if cursor == "" {
		return nil
	}
	expired := fmt.Errorf("revocation: redisstore: cursor %.40q: %w", cursor, revocation.ErrCursorExpired)
	msPart, seqPart, ok := strings.Cut(cursor, "-")
	if !ok {
		return expired
	}
	m, err1 := strconv.ParseUint(msPart, 10, 64)
	q, err2 := strconv.ParseUint(seqPart, 10, 64)
	if err1 != nil || err2 != nil || m >= maxCursorMilli || q > maxCursorSeq {
		return expired
	}
	return nil
}

// Events implements revocation.Store in one script. A cursor is a stream ID.
func (s *Store) Events(ctx context.Context, cursor string, limit int) ([]revocation.Event, string, error) {
	if err := checkCursor(cursor); err != nil {
		return nil, "", err
	}
	if limit <= 0 {
		limit = defaultLimit
	}
	limit = min(limit, maxLimit)
	ctx, cancel, err := s.begin(ctx, s.timeout)
	if err != nil {
		return nil, "", err
	}
	defer cancel()
	res, err := eventsScript.Run(ctx, s.client, []string{s.streamKey(), s.metaKey()}, cursor, limit).Slice()
	if err != nil {
		return nil, "", redisErr(err)
	}
	if len(res) == 1 && res[0] == "expired" {
		return nil, "", fmt.Errorf("revocation: redisstore: cursor %.40q: %w", cursor, revocation.ErrCursorExpired)
	}
	if len(res) != 3 || res[0] != "ok" {
		return nil, "", redisErr(errCorrupt)
	}
	position, _ := res[1].(string)
	raw, ok := res[2].([]any)
	if !ok {
		return nil, "", redisErr(errCorrupt)
	}
	out := make([]revocation.Event, 0, len(raw))
	for _, r := range raw {
		ev, err := parseEvent(r)
		if err != nil {
			return nil, "", redisErr(err)
		}
		out = append(out, ev)
	}
	last := cursor
	if len(out) > 0 {
		last = out[len(out)-1].Cursor
	} else if cursor == "" {
		last = position
	}
	return out, last, nil
}

// parseEvent reads one XRANGE reply entry: {id, {field, value, ...}}.
func parseEvent(r any) (revocation.Event, error) {
	pair, ok := r.([]any)
	if !ok || len(pair) != 2 {
		return revocation.Event{}, errCorrupt
	}
	id, ok1 := pair[0].(string)
	fields, ok2 := pair[1].([]any)
	if !ok1 || !ok2 {
		return revocation.Event{}, errCorrupt
	}
	ev := revocation.Event{Cursor: id}
	for i := 0; i+1 < len(fields); i += 2 {
		k, _ := fields[i].(string)
		v, _ := fields[i+1].(string)
		switch k {
		case "type":
			ev.Type = v
		case "entry":
			if err := json.Unmarshal([]byte(v), &ev.Entry); err != nil {
				return revocation.Event{}, err
			}
		}
	}
	if ev.Type != revocation.EventCreated && ev.Type != revocation.EventLifted || ev.Entry.ID == "" {
		return revocation.Event{}, errCorrupt
	}
	return ev, nil
}

// Snapshot implements revocation.Store. It reads the feed's position first, then
// scans the entries: an entry changed meanwhile has an event after the position,
// so replaying the events after it from the snapshot converges.
func (s *Store) Snapshot(ctx context.Context) ([]revocation.Entry, string, error) {
	cctx, cancel, err := s.begin(ctx, s.timeout)
	if err != nil {
		return nil, "", err
	}
	res, err := positionScript.Run(cctx, s.client, []string{s.streamKey(), s.metaKey()}, ms(s.retention)).Slice()
	cancel()
	if err != nil {
		return nil, "", redisErr(err)
	}
	if len(res) != 3 {
		return nil, "", redisErr(errCorrupt)
	}
	position, ok := res[0].(string)
	sec, err1 := strconv.ParseInt(fmt.Sprint(res[1]), 10, 64)
	usec, err2 := strconv.ParseInt(fmt.Sprint(res[2]), 10, 64)
	if !ok || err1 != nil || err2 != nil {
		return nil, "", redisErr(errCorrupt)
	}
	now := time.Unix(sec, usec*1000)
	entries, err := s.scanEntries(ctx)
	if err != nil {
		return nil, "", err
	}
	active := entries[:0]
	for _, e := range entries {
		if e.Active(now) {
			active = append(active, e)
		}
	}
	revocation.SortEntries(active)
	return active, position, nil
}

// Wait implements revocation.Store with XREAD BLOCK, for at most WaitBlock per
// call (then it returns nil: a spurious wake-up).
func (s *Store) Wait(ctx context.Context, cursor string) error {
	if err := checkCursor(cursor); err != nil {
		return err
	}
	if cursor == "" {
		cursor = "0-0"
	}
	block := s.waitBlock
	if dl, ok := ctx.Deadline(); ok {
		block = min(block, time.Until(dl))
	}
	if block < time.Millisecond {
		if err := ctx.Err(); err != nil {
			return redisErr(err)
		}
		block = time.Millisecond
	}
	cctx, cancel, err := s.begin(ctx, block+s.timeout)
	if err != nil {
		return err
	}
	defer cancel()
	err = s.client.XRead(cctx, &redis.XReadArgs{Streams: []string{s.streamKey(), cursor}, Count: 1, Block: block}).Err()
	if err == nil || errors.Is(err, redis.Nil) {
		return nil
	}
	if ctx.Err() != nil {
		return redisErr(ctx.Err())
	}
	return redisErr(err)
}

// Claim implements revocation.Store with one SET NX PX (then WAIT for a replica
// when the store confirms writes). The expiry is measured on the caller's clock.
func (s *Store) Claim(ctx context.Context, key string, until time.Time) (bool, error) {
	ttl, err := backend.CheckClaim(key, until, s.now())
	if err != nil {
		return false, err
	}
	ctx, cancel, err := s.begin(ctx, s.writeTimeout())
	if err != nil {
		return false, err
	}
	defer cancel()
	_, err = s.write(ctx, claimScript, []string{s.claimKey(key)}, max(1, ms(ttl)))
	switch {
	case errors.Is(err, redis.Nil):
		return false, nil
	case err != nil:
		return false, redisErr(err)
	}
	return true, nil
}

// Ping implements revocation.Store with a PING.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel, err := s.begin(ctx, s.timeout)
	if err != nil {
		return err
	}
	defer cancel()
	if err := s.client.Ping(ctx).Err(); err != nil {
		return redisErr(err)
	}
	return nil
}

// Close implements revocation.Store. It does not close the client, which the
// caller owns; later operations fail.
func (s *Store) Close() error {
	s.closed.Store(true)
	return nil
}
