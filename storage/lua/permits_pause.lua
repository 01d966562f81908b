-- Push the shared "pause until" to now + delay_ms unless it is already later.
-- KEYS: 1 pause_until. ARGV: 1 delay_ms. Returns the pause left (ms) after the call.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wanted = now + math.floor(tonumber(ARGV[1]))
local current = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if wanted > current then
  redis.call('SET', KEYS[1], wanted, 'PX', math.max(1, wanted - now))
  return wanted - now
end
return current - now
