-- Prepended to every conversation-store script (see storage/conversations.py).
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local END_STATES = {transcribed = true, failed = true}
local function hset_pairs(key, argv, first)
  if #argv >= first then
    redis.call('HSET', key, unpack(argv, first))
  end
end
-- finished, no chunk still on its way, not yet finalized
local function finalizable(conv)
  local v = redis.call('HMGET', conv, 'is_finished', 'open_chunks', 'finalized_ms')
  return (v[1] == '1' and (tonumber(v[2]) or 0) <= 0 and not v[3]) and 1 or 0
end
