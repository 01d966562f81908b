-- Keep one process's liveness record, after the clean-up every reader does.
-- Runs after permits_reap.lua (now_ms, reap). If this process's own record had already
-- expired, reap() has just dropped its permits and places like any dead process's: they
-- are lost, and the record starts afresh.
-- KEYS: 1 holders, 2 queue, 3 heartbeats, 4 processes. ARGV: 1 process id, 2 liveness_ms.
-- Returns {expired_leases, dead_holders, dead_waiters, dead_processes, this process's holders}.
local now = now_ms()
local expired, dead_holders, dead_waiters, dead = reap(KEYS[1], KEYS[2], KEYS[3], KEYS[4], now)
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[2]), ARGV[1])
local mine = {}
for _, h in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if string.match(h, '^(.*):') == ARGV[1] then
    mine[#mine + 1] = h
  end
end
return {expired, dead_holders, dead_waiters, dead, mine}
