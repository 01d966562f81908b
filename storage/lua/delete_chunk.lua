-- KEYS[1] conversation, KEYS[2] chunks zset, KEYS[3] chunk hash. ARGV[1] chunk_id.
-- Returns {'deleted', finalizable} | {'unknown_chunk'}
local listed = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not listed then return {'unknown_chunk'} end
local status = redis.call('HGET', KEYS[3], 'status')
if status and not END_STATES[status] then
  redis.call('HINCRBY', KEYS[1], 'open_chunks', -1)
end
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'updated_ms', now_ms())
redis.call('HINCRBY', KEYS[1], 'final_gen', 1)  -- the chunk set changed
return {'deleted', finalizable(KEYS[1])}
