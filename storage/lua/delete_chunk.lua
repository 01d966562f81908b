-- KEYS[1] conversation, KEYS[2] chunks zset, KEYS[3] chunk hash. ARGV[1] chunk_id.
-- Returns {'deleted', finalizable} | {'unknown_chunk'}
-- The chunk set changes as when a chunk is listed: a finalized conversation re-opens (its
-- stored transcript still holds this chunk) and is finalized again; final_gen moves on.
local listed = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not listed then return {'unknown_chunk'} end
local status = redis.call('HGET', KEYS[3], 'status')
if status and not END_STATES[status] then
  redis.call('HINCRBY', KEYS[1], 'open_chunks', -1)
end
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[2], ARGV[1])
local now = now_ms()
list_new_chunk(KEYS[1], redis.call('HGET', KEYS[1], 'finalized_ms'), now)
redis.call('HSET', KEYS[1], 'updated_ms', now)
return {'deleted', finalizable(KEYS[1])}
