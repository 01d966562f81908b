-- The head of every permit script that reads the semaphore (acquire, heartbeat, state);
-- storage/permit_liveness.py puts it in front of each. Defines now_ms() and reap().

-- Redis server time in ms, so process clocks never matter.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Free what nobody can give back, in this order:
-- 1. the permits and queue places of every process whose liveness record has expired
--    (killed, or cut off from Redis for longer than its liveness), and the record itself;
--    member ids are '<process id>:<suffix>', the process id being all before the last ':';
-- 2. leases past their expiry (a live but stalled holder, or one of a process that keeps
--    no liveness record): the backstop;
-- 3. waiters that stopped polling.
-- Holders of a process that has no record at all (not started, closed, or an older
-- version during a rolling deploy) are left to their lease.
-- Returns expired_leases, dead_holders, dead_waiters, dead_processes (a list).
local function reap(holders, queue, heartbeats, processes, now)
  local dead = redis.call('ZRANGEBYSCORE', processes, '-inf', now)
  local dead_holders, dead_waiters = 0, 0
  if #dead > 0 then
    local is_dead = {}
    for _, p in ipairs(dead) do
      is_dead[p] = true
      redis.call('ZREM', processes, p)
    end
    for _, h in ipairs(redis.call('ZRANGE', holders, 0, -1)) do
      local p = string.match(h, '^(.*):')
      if p and is_dead[p] then
        redis.call('ZREM', holders, h)
        dead_holders = dead_holders + 1
      end
    end
    -- The whole queue, but only when a process died.
    for _, w in ipairs(redis.call('ZRANGE', queue, 0, -1)) do
      local p = string.match(w, '^(.*):')
      if p and is_dead[p] then
        redis.call('ZREM', queue, w)
        redis.call('ZREM', heartbeats, w)
        dead_waiters = dead_waiters + 1
      end
    end
  end
  local expired = redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)
  for _, w in ipairs(redis.call('ZRANGEBYSCORE', heartbeats, '-inf', now)) do
    redis.call('ZREM', heartbeats, w)
    redis.call('ZREM', queue, w)
  end
  return expired, dead_holders, dead_waiters, dead
end
