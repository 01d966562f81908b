-- Record one batch's result of a job, once (a redelivered batch does not count twice).
-- KEYS: 1 job hash. ARGV: 1 batch index, 2 result JSON, 3 finished-at (unix s), 4 ttl_s.
-- Returns {newly_recorded 0|1, batches_done, batches_total}.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, 0, 0}
end
local field = 'batch:' .. ARGV[1]
local added = redis.call('HSETNX', KEYS[1], field, ARGV[2])
local done = tonumber(redis.call('HGET', KEYS[1], 'batches_done') or '0')
if added == 1 then
  done = redis.call('HINCRBY', KEYS[1], 'batches_done', 1)
end
local total = tonumber(redis.call('HGET', KEYS[1], 'batches_total') or '0')
if done >= total and redis.call('HGET', KEYS[1], 'status') ~= 'completed' then
  redis.call('HSET', KEYS[1], 'status', 'completed', 'finished_at', ARGV[3])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
elseif redis.call('HGET', KEYS[1], 'status') == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'running')
end
return {added, done, total}
