-- Take the stuck-work sweep lease if it is free and a run is due (storage/sweep_lease.py).
-- KEYS[1] lease (string: the holder's fencing token), KEYS[2] fencing counter,
-- KEYS[3] state hash. ARGV[1] owner, ARGV[2] lease_ms, ARGV[3] interval_ms (0: due now).
-- Returns {'acquired', token, cursor_project, cursor_conversation, now_ms}
--   | {'held', token} | {'not_due', due_in_ms}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local holder = redis.call('GET', KEYS[1])
if holder then return {'held', holder} end
local last = tonumber(redis.call('HGET', KEYS[3], 'last_started_ms')) or 0
local interval = tonumber(ARGV[3])
if interval > 0 and last > 0 and now - last < interval then
  return {'not_due', interval - (now - last)}
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
redis.call('HSET', KEYS[3], 'last_started_ms', now, 'token', token, 'owner', ARGV[1])
local c = redis.call('HMGET', KEYS[3], 'cursor_project', 'cursor_conversation')
return {'acquired', token, c[1] or '0', c[2] or '0', now}
