package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/safeconduct/safeconduct/revocation"
)

// Status lists (revocation.StatusStore): per list a string of records, appended
// (P:{sl:NAME}:r), and a hash of classes (P:{sl:NAME}:c). Each list has its own
// hash tag, so on a Cluster the lists spread over the slots while a list's two
// keys stay together (one script). Both keys expire with the list.

var _ revocation.StatusStore = (*Store)(nil)

// statusReadChunk bounds one GETRANGE reply.
const statusReadChunk = 4 << 20

// The list's meta shares the classes hash under fields that are not class IDs
// (those are 8 bytes): "hb" (heartbeat, unix ms) and "sealed".
var appendStatusScript = redis.NewScript(prelude + `
if #ARGV[2] > 0 then redis.call('APPEND', KEYS[1], ARGV[2]) end
local hb = tonumber(ARGV[3])
local cur = tonumber(redis.call('HGET', KEYS[2], 'hb') or '0')
if hb > cur then redis.call('HSET', KEYS[2], 'hb', ARGV[3]) end
if ARGV[4] == '1' then redis.call('HSET', KEYS[2], 'sealed', '1') end
for i = 5, #ARGV, 2 do redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) end
local at = tonumber(ARGV[1])
extend(KEYS[1], at)
extend(KEYS[2], at)
return 1
`)

func (s *Store) statusKeys(list string) (records, classes string) {
	base := strings.TrimSuffix(s.prefix, hashTag+":") + "{sl:" + list + "}:"
	return base + "r", base + "c"
}

// AppendStatus implements revocation.StatusStore with one script (then WAIT for
// a replica when the store confirms writes).
func (s *Store) AppendStatus(ctx context.Context, list string, expires time.Time, classes map[string][]byte, records []byte, meta revocation.StatusMeta) error {
	if !revocation.ValidStatusListName(list) {
		return fmt.Errorf("revocation: %w: status list name %q", revocation.ErrInvalid, list)
	}
	if len(records)%revocation.StatusRecordSize != 0 {
		return fmt.Errorf("revocation: %w: status records of %d bytes", revocation.ErrInvalid, len(records))
	}
	sealed := "0"
	if meta.Sealed {
		sealed = "1"
	}
	args := []any{expires.UnixMilli(), records, max(0, meta.Heartbeat.UnixMilli()), sealed}
	for _, id := range revocation.SortedClassIDs(classes) {
		if len(id) != revocation.StatusClassIDLen || len(classes[id]) > revocation.MaxStatusClassLen {
			return fmt.Errorf("revocation: %w: status class", revocation.ErrInvalid)
		}
		args = append(args, id, classes[id])
	}
	ctx, cancel, err := s.begin(ctx, s.writeTimeout())
	if err != nil {
		return err
	}
	defer cancel()
	rk, ck := s.statusKeys(list)
	if _, err := s.write(ctx, appendStatusScript, []string{rk, ck}, args...); err != nil {
		return redisErr(err)
	}
	return nil
}

// ReadStatus implements revocation.StatusStore: the classes and the first chunk of
// records in one pipelined round trip, further chunks (of a list read for the
// first time) in one GETRANGE each.
func (s *Store) ReadStatus(ctx context.Context, list string, offset int) ([]byte, map[string][]byte, revocation.StatusMeta, bool, error) {
	if !revocation.ValidStatusListName(list) || offset < 0 || offset%revocation.StatusRecordSize != 0 {
		return nil, nil, revocation.StatusMeta{}, false, fmt.Errorf("revocation: %w: status list %q at %d", revocation.ErrInvalid, list, offset)
	}
	ctx, cancel, err := s.begin(ctx, 4*s.timeout)
	if err != nil {
		return nil, nil, revocation.StatusMeta{}, false, err
	}
	defer cancel()
	rk, ck := s.statusKeys(list)
	pipe := s.client.Pipeline()
	hc := pipe.HGetAll(ctx, ck)
	rc := pipe.GetRange(ctx, rk, int64(offset), int64(offset+statusReadChunk-1))
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, nil, revocation.StatusMeta{}, false, redisErr(err)
	}
	all := hc.Val()
	if len(all) == 0 {
		return nil, nil, revocation.StatusMeta{}, false, nil
	}
	classes := make(map[string][]byte, len(all))
	var meta revocation.StatusMeta
	for k, v := range all {
		switch {
		case k == "hb":
			if ms, err := strconv.ParseInt(v, 10, 64); err == nil {
				meta.Heartbeat = time.UnixMilli(ms)
			}
		case k == "sealed":
			meta.Sealed = true
		case len(k) == revocation.StatusClassIDLen:
			classes[k] = []byte(v)
		}
	}
	records := []byte(rc.Val())
	for chunk := len(records); chunk == statusReadChunk; {
		next, err := s.client.GetRange(ctx, rk, int64(offset+len(records)), int64(offset+len(records)+statusReadChunk-1)).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, nil, revocation.StatusMeta{}, false, redisErr(err)
		}
		records = append(records, next...)
		chunk = len(next)
	}
	// A read between two appends of another replica sees whole records only
	// (APPEND is atomic), but trim defensively.
	records = records[:len(records)-len(records)%revocation.StatusRecordSize]
	return records, classes, meta, true, nil
}
