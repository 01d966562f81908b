-- Record a failed handler run of an entry this consumer owns: its error and its started
-- attempts (with the failure), atomically.
-- KEYS: stream, errors hash, attempts hash
-- ARGV: group, entry id, consumer, errors/attempts field, error, attempts marker
-- Returns 1 if recorded, 0 if the entry is no longer ours.
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #pending == 0 or pending[1][2] ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
redis.call('HSET', KEYS[3], ARGV[4], ARGV[6])
return 1
