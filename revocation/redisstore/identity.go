package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/safeconduct/safeconduct/revocation"
)

// The identity record and the write probe live under the same hash tag as every
// other key. The identity has no TTL: it must outlive everything else, since its
// absence is how a flushed or restarted-empty Redis is recognised.
func (s *Store) identityKey() string { return s.prefix + "id" }
func (s *Store) probeKey() string    { return s.prefix + "probe" }

// setScript is one SET (PX when ARGV[2] > 0), run through write so that it is
// confirmed by a replica like every other write.
var setScript = redis.NewScript(`
if tonumber(ARGV[2]) > 0 then
  return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return redis.call('SET', KEYS[1], ARGV[1])
`)

// Identity implements revocation.Identified with one GET.
func (s *Store) Identity(ctx context.Context) (id revocation.Identity, found bool, err error) {
	ctx, cancel, err := s.begin(ctx, s.timeout)
	if err != nil {
		return id, false, err
	}
	defer cancel()
	v, err := s.client.Get(ctx, s.identityKey()).Bytes()
	switch {
	case errors.Is(err, redis.Nil):
		return id, false, nil
	case err != nil:
		return id, false, redisErr(err)
	}
	if err := json.Unmarshal(v, &id); err != nil || id.ID == "" {
		return revocation.Identity{}, false, redisErr(errCorrupt)
	}
	return id, true, nil
}

// SetIdentity implements revocation.Identified with one SET (confirmed by a
// replica with ConfirmReplicas).
func (s *Store) SetIdentity(ctx context.Context, id revocation.Identity) error {
	v, err := json.Marshal(id)
	if err != nil {
		return redisErr(err)
	}
	ctx, cancel, err := s.begin(ctx, s.writeTimeout())
	if err != nil {
		return err
	}
	defer cancel()
	if _, err := s.write(ctx, setScript, []string{s.identityKey()}, string(v), 0); err != nil {
		return redisErr(err)
	}
	return nil
}

// createIdentityScript sets KEYS[1] to ARGV[1] unless it exists, and returns its value.
var createIdentityScript = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  return ARGV[1]
end
return redis.call('GET', KEYS[1])
`)

// CreateIdentity implements revocation.Identified with one script (SET NX, or
// GET), confirmed by a replica with ConfirmReplicas.
func (s *Store) CreateIdentity(ctx context.Context, id revocation.Identity) (revocation.Identity, error) {
	v, err := json.Marshal(id)
	if err != nil {
		return id, redisErr(err)
	}
	ctx, cancel, err := s.begin(ctx, s.writeTimeout())
	if err != nil {
		return id, err
	}
	defer cancel()
	res, err := s.write(ctx, createIdentityScript, []string{s.identityKey()}, string(v))
	if err != nil {
		return id, redisErr(err)
	}
	str, ok := res.(string)
	var got revocation.Identity
	if !ok || json.Unmarshal([]byte(str), &got) != nil || got.ID == "" {
		return id, redisErr(errCorrupt)
	}
	return got, nil
}

// ProbeWrite implements revocation.Identified: a SET of an expiring key,
// confirmed exactly as a revocation is (WAIT 1 with ConfirmReplicas).
func (s *Store) ProbeWrite(ctx context.Context) error {
	ctx, cancel, err := s.begin(ctx, s.writeTimeout())
	if err != nil {
		return err
	}
	defer cancel()
	now := strconv.FormatInt(s.now().UnixMilli(), 10)
	if _, err := s.write(ctx, setScript, []string{s.probeKey()}, now, 60_000); err != nil {
		return redisErr(err)
	}
	return nil
}

var _ revocation.Identified = (*Store)(nil)
