-- get-upload-url in one round trip: check the conversation (and, when the caller
-- passes it, its project), take a rate-limit grant, record the issued chunk (which
-- expires with its URL unless confirmed).
-- KEYS[1] conversation, KEYS[2] chunk hash, KEYS[3] the limiter's sorted set (same slot),
-- KEYS[4] optional: the project hash. It lives in another slot, so it is passed only
-- on a single Redis node (standalone or Sentinel); on Cluster the caller checks the
-- project itself first.
-- ARGV[1] ttl_ms, ARGV[2] limit, ARGV[3] window_us, ARGV[4] member suffix, then field, value, ...
-- Returns {'ok', allowed, remaining, reset_us, retry_after_us} (nothing issued when not allowed)
--   | {'no_conversation'} | {'no_project'} | {'closed'}
-- A finished conversation still takes chunks (see issue_chunk.lua).
local conv = redis.call('HMGET', KEYS[1], 'id')
if not conv[1] then return {'no_conversation'} end
if KEYS[4] then
  local allowed = redis.call('HGET', KEYS[4], 'is_conversation_allowed')
  if not allowed then return {'no_project'} end
  if allowed ~= 'true' then return {'closed'} end
end
local d = sliding_window(KEYS[3], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4])
if d[1] == 1 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  hset_pairs(KEYS[2], ARGV, 5)
  redis.call('HSET', KEYS[2], 'status', 'issued', 'created_ms', now, 'updated_ms', now)
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[1]))
end
return {'ok', d[1], d[2], d[3], d[4]}
