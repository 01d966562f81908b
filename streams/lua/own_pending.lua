-- On start: take this consumer's own pending entries again, counting a new delivery.
-- KEYS: stream
-- ARGV: group, consumer, count
-- Returns {id, fields, deliveries, ...}
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', tonumber(ARGV[3]), ARGV[2])
local out = {}
for _, p in ipairs(pending) do
  local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, p[1])
  if #claimed == 1 and type(claimed[1]) == 'table' and claimed[1][2] then
    table.insert(out, p[1])
    table.insert(out, claimed[1][2])
    table.insert(out, p[4] + 1)
  end
end
return out
