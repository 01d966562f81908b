-- Move a job from queued to running with its plan (once; a redelivery gets the first plan).
-- KEYS: 1 job hash. ARGV: 1 batches_total, 2 plan JSON (ids per batch), 3 provider, 4 model,
-- 5 started-at, 6 ttl_s.
-- Returns the plan in force (JSON), or false when the job does not exist.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then
  return redis.call('HGET', KEYS[1], 'plan') or '[]'
end
local total = tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'status', total == 0 and 'completed' or 'running',
  'batches_total', total, 'plan', ARGV[2], 'provider', ARGV[3], 'model', ARGV[4],
  'started_at', ARGV[5])
if total == 0 then
  redis.call('HSET', KEYS[1], 'finished_at', ARGV[5])
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
return ARGV[2]
