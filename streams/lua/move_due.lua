-- Move due deferred events into their stream, atomically (ZREM + XADD together).
-- KEYS: delayed sorted set, stream
-- ARGV: max entries to move, stream maxlen (safety cap)
-- Returns the number moved.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do
  local ok, fields = pcall(cjson.decode, member)
  if ok and type(fields) == 'table' and #fields > 0 then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(fields))
  else
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'undecodable', member)
  end
  redis.call('ZREM', KEYS[1], member)
end
return #due
