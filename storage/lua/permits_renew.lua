-- Extend a held lease. KEYS: 1 holders. ARGV: 1 id, 2 lease_ms.
-- Returns 1, or 0 when the lease was already gone (expired or reclaimed): the permit is lost.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '0') or 0
if score <= now then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 1
