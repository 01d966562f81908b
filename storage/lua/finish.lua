-- KEYS[1] conversation. ARGV[1] reason. ARGV[2] idle_ms: if set, finish only when the
-- conversation has been idle that long (the idle sweeper's check, made on Redis time).
-- Returns {'finished', changed (0|1), finalizable} | {'active', last_activity_ms}
--   | {'no_conversation'}
local v = redis.call('HMGET', KEYS[1], 'id', 'is_finished', 'last_activity_ms')
if not v[1] then return {'no_conversation'} end
if v[2] == '1' then return {'finished', 0, finalizable(KEYS[1])} end
local now = now_ms()
if ARGV[2] and ARGV[2] ~= '' then
  local last = tonumber(v[3]) or 0
  if now - last < tonumber(ARGV[2]) then return {'active', last} end
end
redis.call('HSET', KEYS[1], 'is_finished', '1', 'finished_ms', now, 'finish_reason', ARGV[1],
  'updated_ms', now)
return {'finished', 1, finalizable(KEYS[1])}
