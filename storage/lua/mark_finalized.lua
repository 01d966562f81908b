-- KEYS[1] conversation. ARGV: field, value, ... (merged_transcript, summary).
-- Returns {'ok'} | {'already'} | {'not_ready'} | {'no_conversation'}
local v = redis.call('HMGET', KEYS[1], 'id', 'finalized_ms')
if not v[1] then return {'no_conversation'} end
if v[2] then return {'already'} end
if finalizable(KEYS[1]) == 0 then return {'not_ready'} end
local now = now_ms()
hset_pairs(KEYS[1], ARGV, 1)
redis.call('HSET', KEYS[1], 'is_all_chunks_transcribed', '1', 'finalized_ms', now,
  'updated_ms', now)
return {'ok'}
