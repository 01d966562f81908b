-- Take entries this consumer owns for another delivery (a retry): counts a delivery.
-- KEYS: stream, attempts hash
-- ARGV: group, consumer, id...
-- Returns {id, fields, deliveries, attempts marker ('' if none), ...} for the entries still ours.
local out = {}
for i = 3, #ARGV do
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #pending == 1 and pending[1][2] == ARGV[2] then
    local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i])
    if #claimed == 1 and type(claimed[1]) == 'table' and claimed[1][2] then
      table.insert(out, ARGV[i])
      table.insert(out, claimed[1][2])
      table.insert(out, pending[1][4] + 1)
      table.insert(out, redis.call('HGET', KEYS[2], ARGV[1] .. ':' .. ARGV[i]) or '')
    end
  end
end
return out
