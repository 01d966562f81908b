-- Give back a permit, or leave the queue. KEYS: 1 holders, 2 queue, 3 heartbeats. ARGV: 1 id.
-- Returns 1 when a permit was held.
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return redis.call('ZREM', KEYS[1], ARGV[1])
