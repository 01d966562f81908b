-- Trim a stream without ever removing an entry some group has not acknowledged.
-- The new first id is the smallest of: every group's oldest pending entry, every
-- group's first undelivered entry (last-delivered-id + 1), and now - max age.
-- KEYS: stream
-- ARGV: max age of acknowledged entries, ms
-- Returns the number of entries removed.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local ams, aseq = parse(a)
  local bms, bseq = parse(b)
  return ams < bms or (ams == bms and aseq < bseq)
end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return 0 end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local minid = string.format('%d-0', math.max(0, now_ms - tonumber(ARGV[1])))
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local ms, seq = parse(info['last-delivered-id'])
  local undelivered = string.format('%d-%d', ms, seq + 1)
  if less(undelivered, minid) then minid = undelivered end
  local summary = redis.call('XPENDING', KEYS[1], info['name'])
  if tonumber(summary[1]) > 0 and less(summary[2], minid) then minid = summary[2] end
end
return redis.call('XTRIM', KEYS[1], 'MINID', minid)
