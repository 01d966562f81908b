-- Record an issued chunk, which expires with its upload URL unless confirmed.
-- KEYS[1] conversation, KEYS[2] chunk hash. ARGV[1] ttl_ms, then field, value, ...
-- A finished (even finalized) conversation still takes chunks: confirming one re-opens it
-- and the conversation is finalized again (a participant's last upload may land after
-- finish, or after the idle auto-finish).
-- Returns {'ok', now_ms} | {'no_conversation'} | {'exists'}
local conv = redis.call('HMGET', KEYS[1], 'id')
if not conv[1] then return {'no_conversation'} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'exists'} end
local now = now_ms()
hset_pairs(KEYS[2], ARGV, 2)
redis.call('HSET', KEYS[2], 'status', 'issued', 'created_ms', now, 'updated_ms', now)
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[1]))
return {'ok', now}
