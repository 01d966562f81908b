-- KEYS[1] conversation hash. ARGV: field, value, ... Returns created_ms, or 0 if it exists.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local now = now_ms()
hset_pairs(KEYS[1], ARGV, 1)
redis.call('HSET', KEYS[1], 'created_ms', now, 'updated_ms', now, 'last_activity_ms', now,
  'is_finished', '0', 'is_all_chunks_transcribed', '0', 'open_chunks', 0)
return now
