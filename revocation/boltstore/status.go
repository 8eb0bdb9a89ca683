package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/safeconduct/safeconduct/revocation"
)

// Status lists (revocation.StatusStore): bucket "statuslists", one nested bucket
// per list holding "exp" (unix ms, 8 bytes BE), a bucket "c" of classes (ID ->
// encoded facts) and a bucket "r" of record batches (sequence, 8 bytes BE ->
// concatenated records), appended in order. The janitor deletes a list once exp
// has passed.
var (
	bucketStatus  = []byte("statuslists")
	keyStatusExp  = []byte("exp")
	keyStatusHB   = []byte("hb")     // heartbeat, unix ms, 8 bytes BE
	keyStatusSeal = []byte("sealed") // present once sealed
	bucketClasses = []byte("c")
	bucketRecords = []byte("r")
)

var _ revocation.StatusStore = (*Store)(nil)

func checkAppend(list string, classes map[string][]byte, records []byte) error {
	if !revocation.ValidStatusListName(list) {
		return fmt.Errorf("revocation: %w: status list name %q", revocation.ErrInvalid, list)
	}
	if len(records)%revocation.StatusRecordSize != 0 {
		return fmt.Errorf("revocation: %w: status records of %d bytes", revocation.ErrInvalid, len(records))
	}
	for id, enc := range classes {
		if len(id) != revocation.StatusClassIDLen || len(enc) > revocation.MaxStatusClassLen {
			return fmt.Errorf("revocation: %w: status class", revocation.ErrInvalid)
		}
	}
	return nil
}

// AppendStatus implements revocation.StatusStore in one synced write transaction.
// The caller batches (the STS appends the records of every exchange waiting at
// once), so this is a plain Update: bolt's Batch would add its collection delay
// to every exchange.
func (s *Store) AppendStatus(ctx context.Context, list string, expires time.Time, classes map[string][]byte, records []byte, meta revocation.StatusMeta) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if err := checkAppend(list, classes, records); err != nil {
		return err
	}
	err := s.update(func(tx *bolt.Tx) error {
		root, err := tx.CreateBucketIfNotExists(bucketStatus)
		if err != nil {
			return err
		}
		lb, err := root.CreateBucketIfNotExists([]byte(list))
		if err != nil {
			return err
		}
		exp := uint64(expires.UnixMilli())
		if v := lb.Get(keyStatusExp); len(v) == 8 && binary.BigEndian.Uint64(v) > exp {
			exp = binary.BigEndian.Uint64(v)
		}
		if err := lb.Put(keyStatusExp, binary.BigEndian.AppendUint64(nil, exp)); err != nil {
			return err
		}
		hb := uint64(max(0, meta.Heartbeat.UnixMilli()))
		if v := lb.Get(keyStatusHB); len(v) == 8 && binary.BigEndian.Uint64(v) > hb {
			hb = binary.BigEndian.Uint64(v)
		}
		if err := lb.Put(keyStatusHB, binary.BigEndian.AppendUint64(nil, hb)); err != nil {
			return err
		}
		if meta.Sealed {
			if err := lb.Put(keyStatusSeal, []byte{1}); err != nil {
				return err
			}
		}
		cb, err := lb.CreateBucketIfNotExists(bucketClasses)
		if err != nil {
			return err
		}
		for _, id := range revocation.SortedClassIDs(classes) {
			if cb.Get([]byte(id)) == nil {
				if err := cb.Put([]byte(id), classes[id]); err != nil {
					return err
				}
			}
		}
		if len(records) == 0 {
			return nil
		}
		rb, err := lb.CreateBucketIfNotExists(bucketRecords)
		if err != nil {
			return err
		}
		seq, err := rb.NextSequence()
		if err != nil {
			return err
		}
		return rb.Put(seqKey(seq), records)
	})
	if err != nil {
		return wrap(err)
	}
	return nil
}

// ReadStatus implements revocation.StatusStore in one read transaction.
func (s *Store) ReadStatus(ctx context.Context, list string, offset int) ([]byte, map[string][]byte, revocation.StatusMeta, bool, error) {
	if err := s.check(ctx); err != nil {
		return nil, nil, revocation.StatusMeta{}, false, err
	}
	if !revocation.ValidStatusListName(list) || offset < 0 || offset%revocation.StatusRecordSize != 0 {
		return nil, nil, revocation.StatusMeta{}, false, fmt.Errorf("revocation: %w: status list %q at %d", revocation.ErrInvalid, list, offset)
	}
	var (
		records []byte
		classes map[string][]byte
		meta    revocation.StatusMeta
		found   bool
	)
	now := uint64(s.now().UnixMilli())
	err := s.view(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketStatus)
		if root == nil {
			return nil
		}
		lb := root.Bucket([]byte(list))
		if lb == nil {
			return nil
		}
		if v := lb.Get(keyStatusExp); len(v) != 8 || binary.BigEndian.Uint64(v) <= now {
			return nil // expired, not yet swept
		}
		found = true
		if v := lb.Get(keyStatusHB); len(v) == 8 {
			meta.Heartbeat = time.UnixMilli(int64(binary.BigEndian.Uint64(v)))
		}
		meta.Sealed = lb.Get(keyStatusSeal) != nil
		classes = map[string][]byte{}
		if cb := lb.Bucket(bucketClasses); cb != nil {
			if err := cb.ForEach(func(k, v []byte) error {
				classes[string(k)] = bytes.Clone(v)
				return nil
			}); err != nil {
				return err
			}
		}
		rb := lb.Bucket(bucketRecords)
		if rb == nil {
			return nil
		}
		skip := offset
		return rb.ForEach(func(_, v []byte) error {
			if len(v)%revocation.StatusRecordSize != 0 {
				return errors.New("status records of a size that is not a whole number of records")
			}
			if skip >= len(v) {
				skip -= len(v)
				return nil
			}
			records = append(records, v[skip:]...)
			skip = 0
			return nil
		})
	})
	if err != nil {
		return nil, nil, revocation.StatusMeta{}, false, wrap(err)
	}
	return records, classes, meta, found, nil
}

// sweepStatus deletes the lists whose exp has passed.
func (s *Store) sweepStatus(now time.Time) error {
	nowMs := uint64(now.UnixMilli())
	s.wmu.Lock()
	defer s.wmu.Unlock()
	err := s.update(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketStatus)
		if root == nil {
			return nil
		}
		var dead [][]byte
		if err := root.ForEachBucket(func(k []byte) error {
			lb := root.Bucket(k)
			if v := lb.Get(keyStatusExp); len(v) == 8 && binary.BigEndian.Uint64(v) <= nowMs {
				dead = append(dead, bytes.Clone(k))
			}
			return nil
		}); err != nil {
			return err
		}
		for _, k := range dead {
			if err := root.DeleteBucket(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return wrap(err)
	}
	return nil
}
