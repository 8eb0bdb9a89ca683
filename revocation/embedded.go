package revocation

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// EmbeddedOptions configures OpenEmbedded. The zero value is usable.
type EmbeddedOptions struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// JanitorInterval is how often expired entries are deleted from the file; zero
	// means one minute, a negative value disables the janitor (expired entries are
	// still treated as absent on read).
	JanitorInterval time.Duration
	// OpenTimeout bounds the wait for the file lock, held by another process that has
	// the same file open; zero means one second.
	OpenTimeout time.Duration
}

const (
	defaultJanitorInterval = time.Minute
	defaultOpenTimeout     = time.Second
	// sweepBatch bounds the deletions per write transaction, so the janitor never
	// holds the write lock for long.
	sweepBatch = 1000
)

var (
	bucketJTI   = []byte("jti")   // jti -> entry
	bucketBlock = []byte("block") // upstream NUL subject -> entry
)

// embeddedStore keeps the revocation state in a bbolt file. An entry is the expiry in
// unix nanoseconds (8 bytes, big endian) followed by the reason.
type embeddedStore struct {
	db   *bolt.DB
	now  func() time.Time
	stop chan struct{}
	done chan struct{}

	closeOnce sync.Once
	closeErr  error
}

var _ Store = (*embeddedStore)(nil)

// OpenEmbedded opens (creating it if needed) the revocation store kept in the bbolt
// file at path, for a single replica without Redis. The parent directory is created
// with mode 0700 and the file with mode 0600. Writes are synced to disk before they
// return, so an acknowledged revocation survives a restart. Only one process can hold
// the file open: a second one gets an error after opts.OpenTimeout. Close stops the
// janitor and closes the file.
func OpenEmbedded(path string, opts EmbeddedOptions) (Store, error) {
	if path == "" {
		return nil, errors.New("revocation: embedded: empty path")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.JanitorInterval == 0 {
		opts.JanitorInterval = defaultJanitorInterval
	}
	if opts.OpenTimeout <= 0 {
		opts.OpenTimeout = defaultOpenTimeout
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("revocation: embedded: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.OpenTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("revocation: embedded: %s is locked by another process (waited %s): %w", path, opts.OpenTimeout, err)
	}
	if err != nil {
		return nil, fmt.Errorf("revocation: embedded: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketJTI, bucketBlock} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("revocation: embedded: init %s: %w", path, err)
	}
	s := &embeddedStore{db: db, now: opts.Now, stop: make(chan struct{}), done: make(chan struct{})}
	if opts.JanitorInterval > 0 {
		go s.janitor(opts.JanitorInterval)
	} else {
		close(s.done)
	}
	return s, nil
}

func encodeEntry(until time.Time, reason string) []byte {
	b := make([]byte, 8, 8+len(reason))
	binary.BigEndian.PutUint64(b, uint64(until.UnixNano()))
	return append(b, reason...)
}

// entryUntil returns the expiry of an encoded entry, or false if v is malformed.
func entryUntil(v []byte) (int64, bool) {
	if len(v) < 8 {
		return 0, false
	}
	return int64(binary.BigEndian.Uint64(v)), true
}

// workloadKey joins upstream and subject with a NUL. checkWorkload refuses control
// characters in upstream, so the first NUL always ends the upstream and two different
// workloads never share a key.
func workloadKey(upstream, subject string) []byte {
	k := make([]byte, 0, len(upstream)+1+len(subject))
	k = append(k, upstream...)
	k = append(k, 0)
	return append(k, subject...)
}

var errCorrupt = errors.New("corrupt entry")

// put writes an entry unless one with a later expiry exists: a later write never
// shortens a revocation or a block.
func (s *embeddedStore) put(bucket, key []byte, until time.Time, reason string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		if old, ok := entryUntil(b.Get(key)); ok && old >= until.UnixNano() {
			return nil
		}
		return b.Put(key, encodeEntry(until, reason))
	})
}

// Admit implements Store.
func (s *embeddedStore) Admit(ctx context.Context, q Query) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("revocation: embedded: %w", err)
	}
	if err := checkWorkload(q.Upstream, q.Subject); err != nil {
		return err
	}
	key := workloadKey(q.Upstream, q.Subject)
	now := s.now().UnixNano()
	var blocked *BlockedError
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketBlock).Get(key)
		if v == nil {
			return nil
		}
		until, ok := entryUntil(v)
		if !ok {
			return errCorrupt
		}
		if now < until {
			// v is only valid inside the transaction: copy the reason out.
			blocked = &BlockedError{Reason: string(v[8:]), Until: time.Unix(0, until)}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("revocation: embedded: %w", err)
	}
	if blocked != nil {
		return blocked
	}
	return nil
}

// RevokeToken implements Store.
func (s *embeddedStore) RevokeToken(ctx context.Context, jti string, until time.Time, reason string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("revocation: embedded: %w", err)
	}
	if err := checkJTI(jti); err != nil {
		return err
	}
	if err := checkEntry(s.now(), until, reason); err != nil {
		return err
	}
	if err := s.put(bucketJTI, []byte(jti), until, reason); err != nil {
		return fmt.Errorf("revocation: embedded: %w", err)
	}
	return nil
}

// TokenRevoked implements Store.
func (s *embeddedStore) TokenRevoked(ctx context.Context, jti string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("revocation: embedded: %w", err)
	}
	if err := checkJTI(jti); err != nil {
		return false, err
	}
	now := s.now().UnixNano()
	var revoked bool
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketJTI).Get([]byte(jti))
		if v == nil {
			return nil
		}
		until, ok := entryUntil(v)
		if !ok {
			return errCorrupt
		}
		revoked = now < until
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("revocation: embedded: %w", err)
	}
	return revoked, nil
}

// BlockSubject implements Store.
func (s *embeddedStore) BlockSubject(ctx context.Context, upstream, subject string, until time.Time, reason string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("revocation: embedded: %w", err)
	}
	if err := checkWorkload(upstream, subject); err != nil {
		return err
	}
	if err := checkEntry(s.now(), until, reason); err != nil {
		return err
	}
	if err := s.put(bucketBlock, workloadKey(upstream, subject), until, reason); err != nil {
		return fmt.Errorf("revocation: embedded: %w", err)
	}
	return nil
}

// Ping implements Store: it fails once the store is closed or its buckets are gone.
func (s *embeddedStore) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("revocation: embedded: %w", err)
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketJTI) == nil || tx.Bucket(bucketBlock) == nil {
			return errors.New("missing bucket")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("revocation: embedded: %w", err)
	}
	return nil
}

// Close implements Store. It stops the janitor and closes the file; later calls
// return the first call's result.
func (s *embeddedStore) Close() error {
	s.closeOnce.Do(func() {
		close(s.stop)
		<-s.done
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("revocation: embedded: %w", err)
		}
	})
	return s.closeErr
}

func (s *embeddedStore) janitor(interval time.Duration) {
	defer close(s.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			// A failed sweep leaves expired entries behind, which reads ignore; the
			// next tick retries.
			_, _ = s.sweep()
		}
	}
}

// sweep deletes expired entries and returns how many it deleted. Malformed entries
// are kept: reads fail closed on them until an operator looks.
func (s *embeddedStore) sweep() (int, error) {
	total := 0
	for _, name := range [][]byte{bucketJTI, bucketBlock} {
		for {
			select {
			case <-s.stop:
				return total, nil
			default:
			}
			n, err := s.sweepBatch(name)
			total += n
			if err != nil {
				return total, err
			}
			if n < sweepBatch {
				break
			}
		}
	}
	return total, nil
}

// sweepBatch deletes up to sweepBatch expired entries of one bucket in one write
// transaction. Keys are collected first and deleted after the scan, since deleting
// under a moving cursor can skip entries.
func (s *embeddedStore) sweepBatch(bucket []byte) (int, error) {
	now := s.now().UnixNano()
	var n int
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		var expired [][]byte
		c := b.Cursor()
		for k, v := c.First(); k != nil && len(expired) < sweepBatch; k, v = c.Next() {
			if until, ok := entryUntil(v); ok && until <= now {
				expired = append(expired, bytes.Clone(k))
			}
		}
		for _, k := range expired {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		n = len(expired)
		return nil
	})
	return n, err
}
