-- A fenced write of the sweep's state: only the lease holder with the newest token may write,
-- and writing renews its lease (storage/sweep_lease.py).
-- KEYS[1] lease, KEYS[2] state hash. ARGV[1] token, ARGV[2] lease_ms, ARGV[3..] field, value...
-- Returns 1 (written) | 0 (fenced out: the lease expired or another sweep holds a newer token)
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[2], 'token') ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if #ARGV >= 3 then redis.call('HSET', KEYS[2], unpack(ARGV, 3)) end
return 1
