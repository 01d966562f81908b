-- Holders, waiters and pause left, after the clean-up every reader does (so a report never
-- counts a dead process's permits). Runs after permits_reap.lua (now_ms, reap).
-- KEYS: 1 holders, 2 queue, 3 heartbeats, 4 processes, 5 pause_until.
-- Returns {holders, waiters, pause_left_ms, expired_leases, dead_holders, dead_waiters,
--          dead_processes}.
local now = now_ms()
local expired, dead_holders, dead_waiters, dead = reap(KEYS[1], KEYS[2], KEYS[3], KEYS[4], now)
local pause_until = tonumber(redis.call('GET', KEYS[5]) or '0') or 0
return {
  redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]), math.max(0, pause_until - now),
  expired, dead_holders, dead_waiters, dead,
}
