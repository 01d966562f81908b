-- Ack an entry and schedule its next attempt in the delayed set, atomically.
-- KEYS: stream, delayed sorted set, errors hash, attempts hash
-- ARGV: group, entry id, consumer, delay ms, member (JSON array of fields), errors field
-- Returns 1 if scheduled, 0 if the entry is no longer ours.
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #pending == 0 or pending[1][2] ~= ARGV[3] then return 0 end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[4]), ARGV[5])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[6])
redis.call('HDEL', KEYS[4], ARGV[6])
return 1
