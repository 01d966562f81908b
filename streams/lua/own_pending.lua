-- On start: take this consumer's own pending entries again, counting a new delivery.
-- Paged: the next call starts after the last id this one looked at.
-- KEYS: stream, attempts hash
-- ARGV: group, consumer, start ('-' or '(' .. id), count
-- Returns {last id looked at ('' when there was none), {id, fields, deliveries,
--          attempts marker ('' if none), ...}}
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], '+', tonumber(ARGV[4]), ARGV[2])
local out = {}
local last = ''
for _, p in ipairs(pending) do
  last = p[1]
  local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, p[1])
  if #claimed == 1 and type(claimed[1]) == 'table' and claimed[1][2] then
    table.insert(out, p[1])
    table.insert(out, claimed[1][2])
    table.insert(out, p[4] + 1)
    table.insert(out, redis.call('HGET', KEYS[2], ARGV[1] .. ':' .. p[1]) or '')
  end
end
return {last, out}
