-- Move one pending entry to the dead letters and ack it, atomically.
-- KEYS: stream, dead-letter stream, errors hash, attempts hash
-- ARGV: group, entry id, consumer ('' = any owner), reason ('' = last recorded error),
--       dead-letter maxlen, errors/attempts field, started attempts,
--       last error ('' = the recorded one), '1' to append the last error to the reason
-- Returns 1 if moved, 0 if the entry is no longer pending (or owned by another consumer).
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #pending == 0 then return 0 end
if ARGV[3] ~= '' and pending[1][2] ~= ARGV[3] then return 0 end
local last_error = ARGV[8]
if last_error == '' then last_error = redis.call('HGET', KEYS[3], ARGV[6]) or '' end
local reason = ARGV[4]
if reason == '' then
  reason = last_error
  if reason == '' then reason = 'no error recorded (worker died?)' end
elseif ARGV[9] == '1' then
  if last_error == '' then reason = reason .. 'no error recorded' else reason = reason .. last_error end
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local fields = {
  'dead_stream', KEYS[1], 'dead_id', ARGV[2], 'dead_group', ARGV[1],
  'dead_deliveries', tostring(pending[1][4]), 'dead_attempts', ARGV[7], 'dead_reason', reason,
  'dead_last_error', last_error, 'dead_ms', string.format('%d', now_ms),
}
local entry = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #entry > 0 then
  for _, v in ipairs(entry[1][2]) do table.insert(fields, v) end
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', unpack(fields))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[6])
redis.call('HDEL', KEYS[4], ARGV[6])
return 1
