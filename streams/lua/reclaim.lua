-- Claim entries idle past the lease (their worker died) and report their delivery counts.
-- KEYS: stream
-- ARGV: group, consumer, min idle ms, cursor, count
-- Returns {next cursor, {id, fields, deliveries, ...}}
local res = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local out = {}
for _, entry in ipairs(res[2]) do
  if type(entry) == 'table' and entry[2] then
    local pending = redis.call('XPENDING', KEYS[1], ARGV[1], entry[1], entry[1], 1)
    local deliveries = 1
    if #pending == 1 then deliveries = pending[1][4] end
    table.insert(out, entry[1])
    table.insert(out, entry[2])
    table.insert(out, deliveries)
  end
end
return {res[1], out}
