-- Move a listed chunk to ARGV[1] if its status is one of ARGV[2] (comma-separated).
-- KEYS[1] conversation, KEYS[2] chunk hash. ARGV[3..]: field, value, ... to set with it.
-- Entering an end state (transcribed | failed) decrements the conversation's open_chunks.
-- Returns {'ok', from, finalizable} | {'same', from, finalizable} | {'invalid', from}
--   | {'unknown_chunk'}
local from = redis.call('HGET', KEYS[2], 'status')
if not from then return {'unknown_chunk'} end
local to = ARGV[1]
if from == to then return {'same', from, finalizable(KEYS[1])} end
local allowed = false
for s in string.gmatch(ARGV[2], '[^,]+') do
  if s == from then allowed = true end
end
if not allowed then return {'invalid', from} end
local now = now_ms()
hset_pairs(KEYS[2], ARGV, 3)
redis.call('HSET', KEYS[2], 'status', to, 'updated_ms', now)
if END_STATES[to] and not END_STATES[from] then
  redis.call('HINCRBY', KEYS[1], 'open_chunks', -1)
  redis.call('HSET', KEYS[1], 'updated_ms', now)
end
return {'ok', from, finalizable(KEYS[1])}
