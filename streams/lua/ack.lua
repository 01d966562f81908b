-- The acker's batch in one step: record handler starts, ack finished entries, clean their
-- companion fields.
-- KEYS: stream, errors hash, attempts hash
-- ARGV: group, consumer, number of starts S, number of acks A,
--       then S pairs (id, attempts marker), then A ids to ack,
--       then the ids whose errors and attempts fields go (the rest of ARGV)
-- A start is recorded only for an entry still pending and ours, so an entry acked or
-- claimed by another consumer meanwhile leaves no orphan field.
-- Returns the number of entries acked.
local group = ARGV[1]
local starts, acks = tonumber(ARGV[3]), tonumber(ARGV[4])
local i = 5
for _ = 1, starts do
  local id = ARGV[i]
  local pending = redis.call('XPENDING', KEYS[1], group, id, id, 1)
  if #pending == 1 and pending[1][2] == ARGV[2] then
    redis.call('HSET', KEYS[3], group .. ':' .. id, ARGV[i + 1])
  end
  i = i + 2
end
local acked = 0
local batch = {}
for _ = 1, acks do
  table.insert(batch, ARGV[i])
  i = i + 1
  if #batch == 500 then
    acked = acked + redis.call('XACK', KEYS[1], group, unpack(batch))
    batch = {}
  end
end
if #batch > 0 then acked = acked + redis.call('XACK', KEYS[1], group, unpack(batch)) end
local fields = {}
while i <= #ARGV do
  table.insert(fields, group .. ':' .. ARGV[i])
  i = i + 1
  if #fields == 500 or i > #ARGV then
    redis.call('HDEL', KEYS[2], unpack(fields))
    redis.call('HDEL', KEYS[3], unpack(fields))
    fields = {}
  end
end
return acked
