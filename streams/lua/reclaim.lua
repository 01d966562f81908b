-- Claim entries idle past the lease (their worker died); report their delivery counts and
-- started attempts (read here, in the claiming step: no extra round trip, no race).
-- KEYS: stream, attempts hash
-- ARGV: group, consumer, min idle ms, cursor, count
-- Returns {next cursor, {id, fields, deliveries, attempts marker ('' if none), ...}}
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
    table.insert(out, redis.call('HGET', KEYS[2], ARGV[1] .. ':' .. entry[1]) or '')
  end
end
return {res[1], out}
