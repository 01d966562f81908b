-- Take a permit of the cluster-wide semaphore, or join / keep a place in the FIFO queue.
-- Runs after permits_reap.lua (now_ms, reap).
-- KEYS: 1 holders, 2 queue, 3 heartbeats, 4 tickets, 5 pause_until, 6 processes
-- ARGV: 1 id, 2 limit, 3 lease_ms, 4 waiter_ttl_ms
-- Returns {granted 0|1, pause_left_ms, rank, holders, waiters,
--          expired_leases, dead_holders, dead_waiters, dead_processes}.
local now = now_ms()
local id = ARGV[1]
local limit = tonumber(ARGV[2])
local lease_ms = tonumber(ARGV[3])
local ttl_ms = tonumber(ARGV[4])

-- Dead processes' permits and places go first, then expired leases and silent waiters.
local expired, dead_holders, dead_waiters, dead = reap(KEYS[1], KEYS[2], KEYS[3], KEYS[6], now)
local function reply(granted, pause_left_ms, rank, holders, waiters)
  return {granted, pause_left_ms, rank, holders, waiters, expired, dead_holders, dead_waiters, dead}
end

-- A retried acquire whose earlier reply was lost: it already holds the permit.
if redis.call('ZSCORE', KEYS[1], id) then
  redis.call('ZADD', KEYS[1], now + lease_ms, id)
  return reply(1, 0, 0, redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]))
end

if not redis.call('ZSCORE', KEYS[2], id) then
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), id)
end
redis.call('ZADD', KEYS[3], now + ttl_ms, id)

local holders = redis.call('ZCARD', KEYS[1])
local waiters = redis.call('ZCARD', KEYS[2])
local rank = redis.call('ZRANK', KEYS[2], id)

local pause_until = tonumber(redis.call('GET', KEYS[5]) or '0') or 0
if pause_until > now then
  return reply(0, pause_until - now, rank, holders, waiters)
end

-- First come, first served: only the first (limit - holders) waiters may take a permit.
if rank < limit - holders then
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZADD', KEYS[1], now + lease_ms, id)
  return reply(1, 0, 0, holders + 1, waiters - 1)
end
return reply(0, 0, rank, holders, waiters)
