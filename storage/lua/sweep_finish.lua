-- End a sweep run: record it and free the lease, only for the holder of the newest token.
-- KEYS[1] lease, KEYS[2] state hash, KEYS[3] runs list (newest first).
-- ARGV[1] token, ARGV[2] the run's record (JSON object; finished_ms is added here),
-- ARGV[3] runs kept, ARGV[4..] state field, value...
-- Returns {1, now_ms} | {0} (fenced out)
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0} end
if redis.call('HGET', KEYS[2], 'token') ~= ARGV[1] then return {0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local record = cjson.decode(ARGV[2])
record['finished_ms'] = now
redis.call('LPUSH', KEYS[3], cjson.encode(record))
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[3]) - 1)
if #ARGV >= 4 then redis.call('HSET', KEYS[2], unpack(ARGV, 4)) end
redis.call('HSET', KEYS[2], 'last_success_ms', now)
redis.call('DEL', KEYS[1])
return {1, now}
