package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/safeconduct/safeconduct/revocation"
	"github.com/safeconduct/safeconduct/revocation/internal/backend"
)

// Options configures Open. The zero value is usable.
type Options struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// RevokeTTL is the lifetime of a revoke created without Expires: at least the
	// STS's tokens.max_ttl. Zero means 24 h.
	RevokeTTL time.Duration
	// Grace is added to the clock to make an entry's Created, so that every token
	// admitted before Create returns has iat <= Created (see Store.Create). Zero
	// means 1 s.
	Grace time.Duration
	// EventRetention and MaxEvents bound the feed: the janitor deletes events older
	// than EventRetention or beyond the newest MaxEvents. Zero means 24 h and
	// 100,000.
	EventRetention time.Duration
	MaxEvents      int
	// JanitorInterval is how often expired entries, bindings and old events are
	// deleted from the file; zero means one minute, negative disables the janitor.
	JanitorInterval time.Duration
	// OpenTimeout bounds the wait for the file lock held by another process; zero
	// means one second.
	OpenTimeout time.Duration
}

var (
	bucketEntries  = []byte("entries")  // id -> record
	bucketEvents   = []byte("events")   // seq (8 bytes BE) -> eventRecord
	bucketBindings = []byte("bindings") // instance -> bindingRecord
	bucketMeta     = []byte("meta")
	bucketClaims   = []byte("claims") // Hash(key) -> expiry (unix ms, 8 bytes BE)
	keyFloor       = []byte("floor")  // highest deleted event seq (8 bytes BE)
)

const (
	defaultLimit = 1000
	maxLimit     = 10000
	sweepBatch   = 1000
)

// record is an entry as kept in the file.
type record struct {
	Entry      revocation.Entry `json:"entry"`
	LiftedAt   int64            `json:"lifted_at,omitempty"` // unix ms
	LiftActor  string           `json:"lift_actor,omitempty"`
	LiftReason string           `json:"lift_reason,omitempty"`
}

type eventRecord struct {
	Type  string           `json:"type"`
	At    int64            `json:"at"` // unix ms, for retention
	Entry revocation.Entry `json:"entry"`
}

type bindingRecord struct {
	Fingerprint string `json:"fp"`
	TTL         int64  `json:"ttl"`     // ms
	Expires     int64  `json:"expires"` // unix ms
}

// Store is the embedded revocation store: a bbolt file owned by one process, with
// the active entries and the bindings held in memory, so Admit and Revoked never
// touch the disk. Writes are synced to disk before they return.
type Store struct {
	db        *bolt.DB
	path      string
	now       func() time.Time
	revokeTTL time.Duration
	grace     time.Duration
	retention time.Duration
	maxEvents int

	index *revocation.Index

	// wmu serialises writes, so the in-memory state follows the file in order.
	wmu sync.Mutex
	// mu guards the fields below.
	mu       sync.RWMutex
	bindings map[string]bindingRecord
	lastSeq  uint64
	floor    uint64
	notify   chan struct{} // closed and replaced at each event

	closed    atomic.Bool
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

var _ revocation.Store = (*Store)(nil)

var errClosed = errors.New("revocation: boltstore: closed")

func wrap(err error) error { return fmt.Errorf("revocation: boltstore: %w", err) }

// Open opens (creating it if needed) the store in the bbolt file at path. The
// parent directory is created with mode 0700 and the file with mode 0600. Only one
// process can hold the file: another gets an error after opts.OpenTimeout. Open
// loads the active entries and bindings into memory; a corrupt record fails Open
// (the store must not start without its revocations). Open first runs bbolt's
// consistency check over the whole file, and neither Open nor any operation
// panics on a corrupt page: they return an error wrapping ErrCorrupt that names
// the file and what to do.
func Open(path string, opts Options) (*Store, error) {
	if path == "" {
		return nil, errors.New("revocation: boltstore: empty path")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.RevokeTTL <= 0 {
		opts.RevokeTTL = backend.DefaultRevokeTTL
	}
	if opts.Grace <= 0 {
		opts.Grace = backend.DefaultGrace
	}
	if opts.EventRetention <= 0 {
		opts.EventRetention = 24 * time.Hour
	}
	if opts.MaxEvents <= 0 {
		opts.MaxEvents = 100_000
	}
	if opts.JanitorInterval == 0 {
		opts.JanitorInterval = time.Minute
	}
	if opts.OpenTimeout <= 0 {
		opts.OpenTimeout = time.Second
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, wrap(err)
	}
	db, err := openDB(path, opts.OpenTimeout)
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("revocation: boltstore: %s is locked by another process (waited %s): %w", path, opts.OpenTimeout, err)
	}
	if errors.Is(err, ErrCorrupt) {
		return nil, wrap(err)
	}
	if err != nil {
		return nil, fmt.Errorf("revocation: boltstore: open %s: %w", path, err)
	}
	s := &Store{
		db: db, path: path, now: opts.Now, revokeTTL: opts.RevokeTTL, grace: opts.Grace,
		retention: opts.EventRetention, maxEvents: opts.MaxEvents,
		index: revocation.NewIndex(), bindings: map[string]bindingRecord{},
		notify: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{}),
	}
	if err := s.checkConsistency(); err != nil {
		_ = db.Close()
		return nil, wrap(err)
	}
	if err := s.load(); err != nil {
		_ = db.Close()
		if errors.Is(err, ErrCorrupt) {
			return nil, wrap(err)
		}
		return nil, fmt.Errorf("revocation: boltstore: load %s: %w", path, err)
	}
	if opts.JanitorInterval > 0 {
		go s.janitor(opts.JanitorInterval)
	} else {
		close(s.done)
	}
	return s, nil
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// load creates the buckets and reads the state into memory. A new file starts its
// event sequence at the current unix time in microseconds, so cursors of a
// deleted and recreated file are older than the new file's floor.
func (s *Store) load() error {
	now := s.now()
	return s.update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketEntries, bucketEvents, bucketBindings, bucketMeta, bucketClaims} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta, events := tx.Bucket(bucketMeta), tx.Bucket(bucketEvents)
		if v := meta.Get(keyFloor); len(v) == 8 {
			s.floor = binary.BigEndian.Uint64(v)
		} else {
			s.floor = uint64(max(now.UnixMicro(), 0))
			if err := meta.Put(keyFloor, seqKey(s.floor)); err != nil {
				return err
			}
			if err := events.SetSequence(s.floor); err != nil {
				return err
			}
		}
		s.lastSeq = events.Sequence()
		err := tx.Bucket(bucketEntries).ForEach(func(k, v []byte) error {
			var r record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("entry %q: %w", k, err)
			}
			if r.Entry.Active(now) {
				if err := s.index.Put(r.Entry); err != nil {
					return fmt.Errorf("entry %q: %w", k, err)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		return tx.Bucket(bucketBindings).ForEach(func(k, v []byte) error {
			var b bindingRecord
			if err := json.Unmarshal(v, &b); err != nil {
				return fmt.Errorf("binding: %w", err)
			}
			s.bindings[string(k)] = b
			return nil
		})
	})
}

func (s *Store) check(ctx context.Context) error {
	if s.closed.Load() {
		return errClosed
	}
	if err := ctx.Err(); err != nil {
		return wrap(err)
	}
	return nil
}

// Admit implements revocation.Store from memory. IssuedAt is the clock truncated
// to the second. When the instance's binding record has less than half its ttl
// left, Admit extends it (a synced write), so a record outlives every token minted
// with its fingerprint by at least ttl/2.
func (s *Store) Admit(ctx context.Context, f *revocation.Facts, instance string) (revocation.Admission, error) {
	if err := s.check(ctx); err != nil {
		return revocation.Admission{}, err
	}
	if err := backend.CheckFacts(f); err != nil {
		return revocation.Admission{}, err
	}
	if instance != "" {
		if err := backend.CheckInstance(instance); err != nil {
			return revocation.Admission{}, err
		}
	}
	now := s.now()
	if e := s.index.Blocked(f, now); e != nil {
		return revocation.Admission{}, &revocation.BlockedError{Entry: *e}
	}
	adm := revocation.Admission{IssuedAt: backend.IssuedAt(now, now)}
	if instance == "" {
		return adm, nil
	}
	s.mu.RLock()
	b, ok := s.bindings[instance]
	s.mu.RUnlock()
	if !ok || b.Expires <= now.UnixMilli() {
		return adm, nil
	}
	adm.Binding = b.Fingerprint
	if b.Expires-now.UnixMilli() < b.TTL/2 {
		if err := s.refreshBinding(instance, b.Fingerprint); err != nil {
			return revocation.Admission{}, err
		}
	}
	return adm, nil
}

func (s *Store) refreshBinding(instance, fp string) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.RLock()
	b, ok := s.bindings[instance]
	s.mu.RUnlock()
	if !ok || b.Fingerprint != fp {
		return nil // changed meanwhile by Bind, which set a fresh expiry
	}
	b.Expires = s.now().UnixMilli() + b.TTL
	if err := s.update(func(tx *bolt.Tx) error { return putJSON(tx.Bucket(bucketBindings), []byte(instance), b) }); err != nil {
		return wrap(err)
	}
	s.mu.Lock()
	s.bindings[instance] = b
	s.mu.Unlock()
	return nil
}

// Revoked implements revocation.Store from memory.
func (s *Store) Revoked(ctx context.Context, f *revocation.Facts) (*revocation.Entry, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if err := backend.CheckFacts(f); err != nil {
		return nil, err
	}
	return s.index.Revoked(f, s.now()), nil
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, data)
}

// appendEvent adds an event in tx and returns its sequence number.
func appendEvent(tx *bolt.Tx, typ string, e revocation.Entry, at time.Time) (uint64, error) {
	b := tx.Bucket(bucketEvents)
	seq, err := b.NextSequence()
	if err != nil {
		return 0, err
	}
	return seq, putJSON(b, seqKey(seq), eventRecord{Type: typ, At: at.UnixMilli(), Entry: e})
}

// published records the last event and wakes the waiters. Called with wmu held.
func (s *Store) published(seq uint64) {
	s.mu.Lock()
	s.lastSeq = seq
	close(s.notify)
	s.notify = make(chan struct{})
	s.mu.Unlock()
}

// stamp sets Created (and Expires from ttl) from the clock plus the grace.
func (s *Store) stamp(e *revocation.Entry, ttl time.Duration) {
	e.Created = time.UnixMilli(s.now().Add(s.grace).UnixMilli())
	if ttl > 0 {
		e.Expires = e.Created.Add(ttl)
	}
}

// Create implements revocation.Store. The entry is synced to disk and in the
// in-memory index before Create returns.
//
// Created is the clock plus Options.Grace. If the write took longer than half the
// grace, Created is taken again (and the entry rewritten, with a second "created"
// event), so that Create returns before the clock reaches Created: every token
// admitted before Create returned has iat (read in Admit, before it returned) <=
// Created and is invalidated by a matching revoke. Tokens admitted up to Grace
// after the revoke are invalidated too.
func (s *Store) Create(ctx context.Context, e revocation.Entry) (revocation.Entry, error) {
	if err := s.check(ctx); err != nil {
		return revocation.Entry{}, err
	}
	p, err := backend.PrepareCreate(e, s.now(), s.revokeTTL)
	if err != nil {
		return revocation.Entry{}, err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	entry := p.Entry
	for range 3 {
		start := time.Now()
		s.stamp(&entry, p.TTL)
		if err := s.writeCreated(entry, nil, ""); err != nil {
			return revocation.Entry{}, err
		}
		if time.Since(start) < s.grace/2 {
			return entry, nil
		}
	}
	return revocation.Entry{}, wrap(fmt.Errorf("entry %s is recorded, but writes are too slow to give it a Created after Create returns (grace %s)", entry.ID, s.grace))
}

// writeCreated writes entry, its created event and, if binding is non-nil, the
// binding of instance, in one synced transaction, then updates memory.
func (s *Store) writeCreated(entry revocation.Entry, binding *bindingRecord, instance string) error {
	var seq uint64
	err := s.update(func(tx *bolt.Tx) error {
		if err := putJSON(tx.Bucket(bucketEntries), []byte(entry.ID), record{Entry: entry}); err != nil {
			return err
		}
		if binding != nil {
			if err := putJSON(tx.Bucket(bucketBindings), []byte(instance), binding); err != nil {
				return err
			}
		}
		var err error
		seq, err = appendEvent(tx, revocation.EventCreated, entry, s.now())
		return err
	})
	if err != nil {
		return wrap(err)
	}
	if err := s.index.Put(entry); err != nil {
		return wrap(err) // cannot happen: PrepareCreate checked the entry
	}
	if binding != nil {
		s.mu.Lock()
		s.bindings[instance] = *binding
		s.mu.Unlock()
	}
	s.published(seq)
	return nil
}

// Bind implements revocation.Store. The fired revoke expires ttl after its
// Created; the record expires ttl after the last Bind or Admit extension (pass a
// ttl of at least twice the tokens' max TTL).
func (s *Store) Bind(ctx context.Context, instance string, f *revocation.Facts, ttl time.Duration) (*revocation.Entry, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if err := backend.CheckBind(instance, f, ttl); err != nil {
		return nil, err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	now := s.now()
	s.mu.RLock()
	old, ok := s.bindings[instance]
	s.mu.RUnlock()
	rec := bindingRecord{Fingerprint: f.Binding, TTL: ttl.Milliseconds(), Expires: now.Add(ttl).UnixMilli()}
	if !ok || old.Expires <= now.UnixMilli() || old.Fingerprint == f.Binding {
		err := s.update(func(tx *bolt.Tx) error { return putJSON(tx.Bucket(bucketBindings), []byte(instance), rec) })
		if err != nil {
			return nil, wrap(err)
		}
		s.mu.Lock()
		s.bindings[instance] = rec
		s.mu.Unlock()
		return nil, nil
	}
	sel, err := backend.BindSelector(f, old.Fingerprint)
	if err != nil {
		return nil, err
	}
	entry := revocation.Entry{
		ID: backend.NewID(), Kind: revocation.KindRevoke, Selector: sel,
		Reason: backend.BindReason, Actor: revocation.ActorRuntimeChange,
	}
	for range 3 {
		start := time.Now()
		s.stamp(&entry, ttl)
		if err := s.writeCreated(entry, &rec, instance); err != nil {
			return nil, err
		}
		if time.Since(start) < s.grace/2 {
			return &entry, nil
		}
	}
	return nil, wrap(fmt.Errorf("entry %s is recorded, but writes are too slow to give it a Created after Bind returns (grace %s)", entry.ID, s.grace))
}

// Lift implements revocation.Store. Lifting a lifted entry returns it unchanged,
// without a new event. A lifted entry stays listed (List with inactive) for 24 h
// or until it would have expired.
func (s *Store) Lift(ctx context.Context, id, actor, reason string) (revocation.Entry, error) {
	if err := s.check(ctx); err != nil {
		return revocation.Entry{}, err
	}
	if err := backend.CheckID(id); err != nil {
		return revocation.Entry{}, err
	}
	if err := backend.CheckText("actor", actor, revocation.MaxActorLen); err != nil {
		return revocation.Entry{}, err
	}
	if err := backend.CheckText("reason", reason, revocation.MaxReasonLen); err != nil {
		return revocation.Entry{}, err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	var (
		r     record
		seq   uint64
		fresh bool
	)
	now := s.now()
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEntries)
		v := b.Get([]byte(id))
		if v == nil {
			return revocation.ErrNotFound
		}
		if err := json.Unmarshal(v, &r); err != nil {
			return err
		}
		if r.Entry.Lifted {
			return nil
		}
		fresh = true
		r.Entry.Lifted = true
		r.LiftedAt, r.LiftActor, r.LiftReason = now.UnixMilli(), actor, reason
		if err := putJSON(b, []byte(id), r); err != nil {
			return err
		}
		var err error
		seq, err = appendEvent(tx, revocation.EventLifted, r.Entry, now)
		return err
	})
	if errors.Is(err, revocation.ErrNotFound) {
		return revocation.Entry{}, fmt.Errorf("revocation: boltstore: entry %s: %w", id, revocation.ErrNotFound)
	}
	if err != nil {
		return revocation.Entry{}, wrap(err)
	}
	if fresh {
		s.index.Remove(id)
		s.published(seq)
	}
	return r.Entry, nil
}

// List implements revocation.Store, oldest first.
func (s *Store) List(ctx context.Context, includeInactive bool) ([]revocation.Entry, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if !includeInactive {
		return s.index.Entries(s.now()), nil
	}
	var out []revocation.Entry
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketEntries).ForEach(func(_, v []byte) error {
			var r record
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			out = append(out, r.Entry)
			return nil
		})
	})
	if err != nil {
		return nil, wrap(err)
	}
	revocation.SortEntries(out)
	return out, nil
}

// parseCursor reads a cursor; "" is 0, meaning "from the oldest retained".
func parseCursor(cursor string) (uint64, error) {
	if cursor == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(cursor, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("revocation: boltstore: cursor %.40q: %w", cursor, revocation.ErrCursorExpired)
	}
	return n, nil
}

// Events implements revocation.Store. A cursor is the decimal sequence number of
// an event. A cursor below the feed's floor (events after it were deleted) or
// beyond its last event (from another file) is expired.
func (s *Store) Events(ctx context.Context, cursor string, limit int) ([]revocation.Event, string, error) {
	if err := s.check(ctx); err != nil {
		return nil, "", err
	}
	c, err := parseCursor(cursor)
	if err != nil {
		return nil, "", err
	}
	if limit <= 0 {
		limit = defaultLimit
	}
	limit = min(limit, maxLimit)
	var out []revocation.Event
	last := cursor
	err = s.view(func(tx *bolt.Tx) error {
		// The floor and last sequence come from the file, in the same
		// transaction as the events read.
		floor := binary.BigEndian.Uint64(tx.Bucket(bucketMeta).Get(keyFloor))
		b := tx.Bucket(bucketEvents)
		seqNow := b.Sequence()
		if cursor == "" {
			c = floor
			last = strconv.FormatUint(seqNow, 10)
		} else if c < floor || c > seqNow {
			return fmt.Errorf("revocation: boltstore: cursor %s outside [%d, %d]: %w", cursor, floor, seqNow, revocation.ErrCursorExpired)
		}
		cur := b.Cursor()
		for k, v := cur.Seek(seqKey(c + 1)); k != nil && len(out) < limit; k, v = cur.Next() {
			var r eventRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return wrap(err)
			}
			seq := strconv.FormatUint(binary.BigEndian.Uint64(k), 10)
			out = append(out, revocation.Event{Cursor: seq, Type: r.Type, Entry: r.Entry})
			last = seq
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, revocation.ErrCursorExpired) {
			return nil, "", err
		}
		return nil, "", wrap(err)
	}
	return out, last, nil
}

// Snapshot implements revocation.Store. No write runs between reading the entries
// and the cursor.
func (s *Store) Snapshot(ctx context.Context) ([]revocation.Entry, string, error) {
	if err := s.check(ctx); err != nil {
		return nil, "", err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.RLock()
	seq := s.lastSeq
	s.mu.RUnlock()
	return s.index.Entries(s.now()), strconv.FormatUint(seq, 10), nil
}

// Wait implements revocation.Store with an in-process broadcast.
func (s *Store) Wait(ctx context.Context, cursor string) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	c, err := parseCursor(cursor)
	if err != nil {
		return err
	}
	s.mu.RLock()
	ch, last := s.notify, s.lastSeq
	if cursor == "" {
		c = s.floor
	}
	s.mu.RUnlock()
	if c != last {
		return nil // events after c, or a cursor Events will refuse
	}
	select {
	case <-ch:
		return nil
	case <-s.stop:
		return errClosed
	case <-ctx.Done():
		return wrap(ctx.Err())
	}
}

// Claim implements revocation.Store in one synced write transaction; concurrent
// claims share a commit (bolt's Batch), so one-time credentials cost a disk sync
// per batch rather than per request.
func (s *Store) Claim(ctx context.Context, key string, until time.Time) (bool, error) {
	if err := s.check(ctx); err != nil {
		return false, err
	}
	now := s.now()
	ttl, err := backend.CheckClaim(key, until, now)
	if err != nil {
		return false, err
	}
	k := []byte(backend.Hash(key))
	var fresh bool
	err = s.db.Batch(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketClaims)
		// Re-read the clock: Batch may run this later, or again after a retry.
		nowMs := s.now().UnixMilli()
		if v := b.Get(k); len(v) == 8 && int64(binary.BigEndian.Uint64(v)) > nowMs {
			fresh = false
			return nil
		}
		fresh = true
		return b.Put(k, binary.BigEndian.AppendUint64(nil, uint64(now.Add(ttl).UnixMilli())))
	})
	if err != nil {
		return false, wrap(err)
	}
	return fresh, nil
}

// Ping implements revocation.Store: it fails once the store is closed.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	err := s.view(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketEntries) == nil {
			return errors.New("missing bucket")
		}
		return nil
	})
	if err != nil {
		return wrap(err)
	}
	return nil
}

// Close implements revocation.Store: it stops the janitor and closes the file;
// later calls return the first call's result, and every other method fails.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.stop)
		<-s.done
		s.wmu.Lock()
		defer s.wmu.Unlock()
		if err := s.db.Close(); err != nil {
			s.closeErr = wrap(err)
		}
	})
	return s.closeErr
}

func (s *Store) janitor(interval time.Duration) {
	defer close(s.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			// A failed sweep leaves garbage behind, which reads ignore; the next tick
			// retries.
			_ = s.Sweep()
		}
	}
}

// Sweep deletes from memory and from the file the entries no longer active (lifted
// ones after their retention), expired bindings, and the events beyond the feed's
// retention. The janitor calls it; tests may too.
func (s *Store) Sweep() error {
	if s.closed.Load() {
		return errClosed
	}
	now := s.now()
	s.index.Prune(now)
	nowMs := now.UnixMilli()
	liftedBefore := now.Add(-backend.LiftedRetention).UnixMilli()
	gone := func(v []byte) bool {
		var r record
		if json.Unmarshal(v, &r) != nil {
			return false // keep what cannot be read: an operator looks
		}
		expired := !r.Entry.Expires.IsZero() && r.Entry.Expires.UnixMilli() <= nowMs
		return expired || r.Entry.Lifted && r.LiftedAt <= liftedBefore
	}
	if err := s.sweepBucket(bucketEntries, gone, nil); err != nil {
		return err
	}
	var deadBindings [][]byte
	err := s.sweepBucket(bucketBindings, func(v []byte) bool {
		var b bindingRecord
		return json.Unmarshal(v, &b) == nil && b.Expires <= nowMs
	}, &deadBindings)
	if err != nil {
		return err
	}
	s.mu.Lock()
	for _, k := range deadBindings {
		if b, ok := s.bindings[string(k)]; ok && b.Expires <= nowMs {
			delete(s.bindings, string(k))
		}
	}
	s.mu.Unlock()
	err = s.sweepBucket(bucketClaims, func(v []byte) bool {
		return len(v) != 8 || int64(binary.BigEndian.Uint64(v)) <= nowMs
	}, nil)
	if err != nil {
		return err
	}
	if err := s.sweepStatus(now); err != nil {
		return err
	}
	return s.trimEvents(now)
}

// sweepBucket deletes, in batches of sweepBatch per write transaction, the records
// of bucket for which dead holds; the keys are collected first, as deleting under
// a moving cursor can skip records.
func (s *Store) sweepBucket(bucket []byte, dead func([]byte) bool, deleted *[][]byte) error {
	for {
		var n int
		s.wmu.Lock()
		err := s.update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucket)
			var keys [][]byte
			c := b.Cursor()
			for k, v := c.First(); k != nil && len(keys) < sweepBatch; k, v = c.Next() {
				if dead(v) {
					keys = append(keys, bytes.Clone(k))
				}
			}
			for _, k := range keys {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			n = len(keys)
			if deleted != nil {
				*deleted = append(*deleted, keys...)
			}
			return nil
		})
		s.wmu.Unlock()
		if err != nil {
			return wrap(err)
		}
		if n < sweepBatch {
			return nil
		}
	}
}

// trimEvents deletes the oldest events beyond MaxEvents or older than the
// retention, and raises the floor to the last deleted sequence.
func (s *Store) trimEvents(now time.Time) error {
	cutoff := now.Add(-s.retention).UnixMilli()
	for {
		var (
			n        int
			newFloor uint64
		)
		s.wmu.Lock()
		err := s.update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketEvents)
			// Events are deleted from the head only, so they are the sequence
			// numbers from the floor (excluded) to the last one.
			floor := binary.BigEndian.Uint64(tx.Bucket(bucketMeta).Get(keyFloor))
			excess := int(b.Sequence()-floor) - s.maxEvents
			var keys [][]byte
			c := b.Cursor()
			for k, v := c.First(); k != nil && len(keys) < sweepBatch; k, v = c.Next() {
				var r eventRecord
				if len(keys) >= excess && (json.Unmarshal(v, &r) != nil || r.At > cutoff) {
					break
				}
				keys = append(keys, bytes.Clone(k))
			}
			if len(keys) == 0 {
				return nil
			}
			for _, k := range keys {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			n = len(keys)
			newFloor = binary.BigEndian.Uint64(keys[len(keys)-1])
			return tx.Bucket(bucketMeta).Put(keyFloor, keys[len(keys)-1])
		})
		if err == nil && n > 0 {
			s.mu.Lock()
			s.floor = newFloor
			s.mu.Unlock()
		}
		s.wmu.Unlock()
		if err != nil {
			return wrap(err)
		}
		if n < sweepBatch {
			return nil
		}
	}
}
