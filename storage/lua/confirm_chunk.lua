-- Turn an issued chunk into a listed one (idempotent by chunk id).
-- KEYS[1] conversation, KEYS[2] chunks zset, KEYS[3] chunk hash.
-- ARGV[1] chunk_id, ARGV[2] object key (must equal the issued one), ARGV[3] new status
-- (pending_verification | uploaded), ARGV[4] timestamp_ms (zset score), then field, value, ...
-- Returns {'confirmed', status, now_ms} | {'exists', status} | {'no_conversation'}
--   | {'unknown_chunk'} | {'key_mismatch'}
local conv = redis.call('HMGET', KEYS[1], 'id', 'finalized_ms')
if not conv[1] then return {'no_conversation'} end
local chunk = redis.call('HMGET', KEYS[3], 'status', 'path')
if not chunk[1] then return {'unknown_chunk'} end
if chunk[2] ~= ARGV[2] then return {'key_mismatch'} end
if chunk[1] ~= 'issued' then return {'exists', chunk[1]} end
local now = now_ms()
list_new_chunk(KEYS[1], conv[2], now)
hset_pairs(KEYS[3], ARGV, 5)
redis.call('HSET', KEYS[3], 'status', ARGV[3], 'confirmed_ms', now, 'updated_ms', now)
redis.call('PERSIST', KEYS[3])
redis.call('ZADD', KEYS[2], tonumber(ARGV[4]), ARGV[1])
redis.call('HINCRBY', KEYS[1], 'open_chunks', 1)
redis.call('HSET', KEYS[1], 'last_activity_ms', now, 'last_chunk_ms', now, 'updated_ms', now)
return {'confirmed', ARGV[3], now}
