-- KEYS[1] a hash. ARGV: field, value, ... Returns 1 when updated, 0 when the hash is missing.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
hset_pairs(KEYS[1], ARGV, 1)
return 1
