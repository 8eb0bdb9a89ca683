package redisstore

import "github.com/redis/go-redis/v9"

// The scripts run on Redis 7.0 or later (PEXPIRETIME, effects replication of
// TIME-dependent writes). Every key they touch is declared in KEYS and shares the
// {rev} hash tag.

// prelude holds the helpers the write scripts share.
const prelude = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function fmt(n) return string.format('%.0f', n) end
-- extend sets key's expiry to at unless it already expires later.
local function extend(key, at)
  local cur = redis.call('PEXPIRETIME', key)
  if cur == -2 or (cur ~= -1 and cur >= at) then return end
  redis.call('PEXPIREAT', key, fmt(at))
end
-- prune deletes the fields of a bucket whose entry has expired.
local function prune(key, now)
  local all = redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    local ok, e = pcall(cjson.decode, all[i + 1])
    if ok and type(e.expires) == 'number' and e.expires ~= 0 and e.expires <= now then
      redis.call('HDEL', key, all[i])
    end
  end
end
-- file adds entry id to its bucket and to the index of entries.
-- expires 0: an open-ended block, in keys without expiry that vanish when empty.
local function file(bucket, idx, idxopen, id, json, expires, now)
  redis.call('HSET', bucket, id, json)
  if expires == 0 then
    redis.call('SADD', idxopen, id)
    return
  end
  prune(bucket, now)
  extend(bucket, expires)
  redis.call('ZADD', idx, fmt(expires), id)
  redis.call('ZREMRANGEBYSCORE', idx, '-inf', fmt(now))
  extend(idx, expires)
end
local FLOOR_SEQ = '-9007199254740992'
-- append adds an event to the feed, trims it to maxlen (recording in meta the
-- last event removed, the floor below which cursors are expired) and keeps the
-- feed's keys for retention ms after the last write.
local function append(stream, meta, typ, json, now, maxlen, retention)
  if redis.call('EXISTS', meta) == 0 then
    redis.call('HSET', meta, 'floor', fmt(now - 1) .. FLOOR_SEQ)
  end
  local id = redis.call('XADD', stream, '*', 'type', typ, 'entry', json)
  redis.call('HSET', meta, 'last', id)
  local n = redis.call('XLEN', stream)
  local batch = math.max(1, math.floor(maxlen / 100))
  if n > maxlen + batch then
    local old = redis.call('XRANGE', stream, '-', '+', 'COUNT', n - maxlen)
    redis.call('XTRIM', stream, 'MAXLEN', maxlen)
    redis.call('HSET', meta, 'floor', old[#old][1])
  end
  redis.call('PEXPIRE', stream, retention)
  redis.call('PEXPIRE', meta, retention)
  return id
end
`

// createScript writes a new entry.
//
// KEYS: entry, bucket, index, open index, stream, meta.
// ARGV: id, JSON prefix (up to the actor, without the closing brace), expires
// (unix ms, 0 for none), ttl (ms after created, 0 for none), grace ms, maxlen,
// retention ms.
// Returns {created, expires}, or the error "EXPIRED" for an expiry not after TIME.
var createScript = redis.NewScript(prelude + `
local now = now_ms()
local created = now + tonumber(ARGV[5])
local expires = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
if expires ~= 0 and expires <= now then
  return redis.error_reply('EXPIRED')
end
if ttl > 0 then expires = created + ttl end
local json = ARGV[2] .. ',"created":' .. fmt(created) .. ',"expires":' .. fmt(expires) .. ',"lifted":false}'
if expires ~= 0 then
  redis.call('SET', KEYS[1], json, 'PXAT', fmt(expires))
else
  redis.call('SET', KEYS[1], json)
end
file(KEYS[2], KEYS[3], KEYS[4], ARGV[1], json, expires, now)
append(KEYS[5], KEYS[6], 'created', json, now, tonumber(ARGV[6]), ARGV[7])
return {fmt(created), fmt(expires)}
`)

// liftScript lifts an entry.
//
// KEYS: entry, bucket, index, open index, stream, meta.
// ARGV: id, retention of a lifted entry ms, maxlen, feed retention ms.
// Returns {0} when the entry is gone, {1, json} when it was already lifted,
// {2, json} when this call lifted it.
var liftScript = redis.NewScript(prelude + `
local cur = redis.call('GET', KEYS[1])
if not cur then return {0} end
local suffix = ',"lifted":false}'
if string.sub(cur, -#suffix) ~= suffix then return {1, cur} end
local e = cjson.decode(cur)
local now = now_ms()
local json = string.sub(cur, 1, -#suffix - 1) .. ',"lifted":true}'
local keep = now + tonumber(ARGV[2])
if e.expires ~= 0 and e.expires < keep then keep = e.expires end
redis.call('SET', KEYS[1], json, 'PXAT', fmt(keep))
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[4], ARGV[1])
redis.call('ZADD', KEYS[3], fmt(keep), ARGV[1])
extend(KEYS[3], keep)
append(KEYS[5], KEYS[6], 'lifted', json, now, tonumber(ARGV[3]), ARGV[4])
return {2, json}
`)

// bindScript records a binding fingerprint and fires a revoke when it changed.
//
// KEYS: binding, entry, bucket, index, open index, stream, meta.
// ARGV: fingerprint, ttl ms, id, JSON prefix up to the selector's opening quote,
// rest of the selector after "bnd=OLD" (JSON-escaped), JSON from the closing
// quote of the selector up to the actor, grace ms, maxlen, retention ms.
// Returns {0} or {1, json of the fired entry}.
var bindScript = redis.NewScript(prelude + `
local old = redis.call('HGET', KEYS[1], 'fp')
redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'ttl', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if not old or old == ARGV[1] then return {0} end
local now = now_ms()
local created = now + tonumber(ARGV[7])
local expires = created + tonumber(ARGV[2])
local json = ARGV[4] .. 'bnd=' .. old .. ARGV[5] .. ARGV[6] ..
  ',"created":' .. fmt(created) .. ',"expires":' .. fmt(expires) .. ',"lifted":false}'
redis.call('SET', KEYS[2], json, 'PXAT', fmt(expires))
file(KEYS[3], KEYS[4], KEYS[5], ARGV[3], json, expires, now)
append(KEYS[6], KEYS[7], 'created', json, now, tonumber(ARGV[8]), ARGV[9])
return {1, json}
`)

// checkScript is Admit's and Revoked's one round trip: the server's TIME, the
// fingerprint recorded for an instance (extending its expiry to its ttl when less
// than half is left), and every entry filed in the given buckets.
//
// KEYS: binding (read when ARGV[1] is "1"), buckets...
// Returns {seconds, microseconds, fingerprint or "", entry json...}.
var checkScript = redis.NewScript(`
local t = redis.call('TIME')
local res = {t[1], t[2], ''}
if ARGV[1] == '1' then
  local b = redis.call('HMGET', KEYS[1], 'fp', 'ttl')
  if b[1] then
    res[3] = b[1]
    local ttl = tonumber(b[2])
    local left = redis.call('PTTL', KEYS[1])
    if ttl and left >= 0 and left < ttl / 2 then
      redis.call('PEXPIRE', KEYS[1], b[2])
    end
  end
end
-- Usually no bucket exists: one EXISTS over all of them settles that.
if #KEYS > 1 and redis.call('EXISTS', unpack(KEYS, 2)) > 0 then
  for i = 2, #KEYS do
    local vals = redis.call('HVALS', KEYS[i])
    for _, v in ipairs(vals) do res[#res + 1] = v end
  end
end
return res
`)

// cursorLua compares stream IDs "ms-seq" (ms and seq below 2^53).
const cursorLua = `
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
`

// eventsScript reads the feed after a cursor.
//
// KEYS: stream, meta. ARGV: cursor ("" for the oldest retained), count.
// Returns {"expired"} or {"ok", position, events}, position being the last event
// written ("" when the feed does not exist).
var eventsScript = redis.NewScript(cursorLua + `
local m = redis.call('HMGET', KEYS[2], 'floor', 'last')
if not m[1] then
  if ARGV[1] == '' then return {'ok', '', {}} end
  return {'expired'}
end
local floor = m[1]
local last = m[2] or m[1]
if redis.call('EXISTS', KEYS[1]) == 0 and less(floor, last) then floor = last end
local start = '-'
if ARGV[1] ~= '' then
  if less(ARGV[1], floor) or less(last, ARGV[1]) then return {'expired'} end
  start = '(' .. ARGV[1]
end
return {'ok', last, redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', ARGV[2])}
`)

// positionScript returns the feed's position for a snapshot, creating the feed's
// meta key (its floor) if needed and keeping the feed for retention ms more.
//
// KEYS: stream, meta. ARGV: retention ms.
// Returns {position, seconds, microseconds}.
var positionScript = redis.NewScript(prelude + `
local now = now_ms()
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('HSET', KEYS[2], 'floor', fmt(now - 1) .. FLOOR_SEQ)
end
redis.call('PEXPIRE', KEYS[2], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local m = redis.call('HMGET', KEYS[2], 'floor', 'last')
local t = redis.call('TIME')
return {m[2] or m[1], t[1], t[2]}
`)

// claimScript records KEYS[1] for ARGV[1] ms unless it is there: "OK" when this
// call recorded it, nil (false) for a replay. A script rather than a bare SET so
// that Store.write can follow it with WAIT on the same connection.
var claimScript = redis.NewScript(`return redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1])`)
