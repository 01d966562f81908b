-- Renew the lease of entries this consumer still owns (set their idle time), or release
-- them (idle = the lease, so any live consumer reclaims them at once).
-- KEYS: stream
-- ARGV: group, consumer, idle ms (0 to renew), id...
-- Returns the ids that are no longer ours (acked elsewhere or claimed by another consumer).
local lost = {}
for i = 4, #ARGV do
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #pending == 1 and pending[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', ARGV[3], 'JUSTID')
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
