-- Record an issued chunk, which expires with its upload URL unless confirmed.
-- KEYS[1] conversation, KEYS[2] chunk hash. ARGV[1] ttl_ms, then field, value, ...
-- Returns {'ok', now_ms} | {'no_conversation'} | {'finished'} | {'exists'}
local conv = redis.call('HMGET', KEYS[1], 'id', 'is_finished')
if not conv[1] then return {'no_conversation'} end
if conv[2] == '1' then return {'finished'} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'exists'} end
local now = now_ms()
hset_pairs(KEYS[2], ARGV, 2)
redis.call('HSET', KEYS[2], 'status', 'issued', 'created_ms', now, 'updated_ms', now)
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[1]))
return {'ok', now}
