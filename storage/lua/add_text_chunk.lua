-- A text chunk (its transcript is the text), deduplicated by content + timestamp.
-- KEYS[1] conversation, KEYS[2] chunks zset, KEYS[3] new chunk hash, KEYS[4] dedup hash.
-- ARGV[1] digest, ARGV[2] chunk_id, ARGV[3] timestamp_ms, then field, value, ...
-- Returns {'created', chunk_id, now_ms} | {'exists', chunk_id} | {'no_conversation'}
local conv = redis.call('HMGET', KEYS[1], 'id', 'finalized_ms')
if not conv[1] then return {'no_conversation'} end
local existing = redis.call('HGET', KEYS[4], ARGV[1])
if existing and redis.call('ZSCORE', KEYS[2], existing) then
  return {'exists', existing}
end
local now = now_ms()
list_new_chunk(KEYS[1], conv[2], now)
hset_pairs(KEYS[3], ARGV, 4)
redis.call('HSET', KEYS[3], 'status', 'transcribed', 'created_ms', now, 'confirmed_ms', now,
  'updated_ms', now)
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]), ARGV[2])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[1], 'last_activity_ms', now, 'last_chunk_ms', now, 'updated_ms', now)
return {'created', ARGV[2], now}
