package boltstore

import (
	"context"
	"encoding/binary"
	"encoding/json"

	bolt "go.etcd.io/bbolt"

	"github.com/safeconduct/safeconduct/revocation"
)

var (
	keyIdentity = []byte("identity") // revocation.Identity JSON, in bucketMeta
	keyProbe    = []byte("probe")    // time of the last write probe (unix ms)
)

// Identity implements revocation.Identified from the meta bucket.
func (s *Store) Identity(ctx context.Context) (id revocation.Identity, found bool, err error) {
	if err := s.check(ctx); err != nil {
		return id, false, err
	}
	err = s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketMeta).Get(keyIdentity)
		if v == nil {
			return nil
		}
		found = true
		return json.Unmarshal(v, &id)
	})
	if err != nil {
		return revocation.Identity{}, false, wrap(err)
	}
	return id, found, nil
}

// SetIdentity implements revocation.Identified with a synced write.
func (s *Store) SetIdentity(ctx context.Context, id revocation.Identity) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.update(func(tx *bolt.Tx) error { return putJSON(tx.Bucket(bucketMeta), keyIdentity, id) }); err != nil {
		return wrap(err)
	}
	return nil
}

// CreateIdentity implements revocation.Identified in one synced transaction.
func (s *Store) CreateIdentity(ctx context.Context, id revocation.Identity) (revocation.Identity, error) {
	if err := s.check(ctx); err != nil {
		return id, err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	err := s.update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keyIdentity); v != nil {
			return json.Unmarshal(v, &id)
		}
		return putJSON(meta, keyIdentity, id)
	})
	if err != nil {
		return revocation.Identity{}, wrap(err)
	}
	return id, nil
}

// ProbeWrite implements revocation.Identified with a synced write of the time.
func (s *Store) ProbeWrite(ctx context.Context) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	v := binary.BigEndian.AppendUint64(nil, uint64(max(s.now().UnixMilli(), 0)))
	if err := s.update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyProbe, v) }); err != nil {
		return wrap(err)
	}
	return nil
}

var _ revocation.Identified = (*Store)(nil)
