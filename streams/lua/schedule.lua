-- Schedule an event: add it to the delayed set, due in ARGV[1] ms (server clock).
-- KEYS: delayed sorted set
-- ARGV: delay ms, member (JSON array of fields)
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[1]), ARGV[2])
