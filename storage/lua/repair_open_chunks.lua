-- Recount a conversation's open_chunks (listed chunks not in an end state) from its chunks,
-- for the stuck-work sweeper, when the listing is still the one the caller read.
-- KEYS[1] conversation, KEYS[2] chunks zset, KEYS[3..] the listed chunks' hashes;
-- ARGV[1..] their ids, in the same order.
-- Returns {'ok', old, new, finalizable} | {'listing_changed'} | {'no_conversation'}
if redis.call('EXISTS', KEYS[1]) == 0 then return {'no_conversation'} end
if redis.call('ZCARD', KEYS[2]) ~= #ARGV then return {'listing_changed'} end
local open = 0
for i = 1, #ARGV do
  if not redis.call('ZSCORE', KEYS[2], ARGV[i]) then return {'listing_changed'} end
  local status = redis.call('HGET', KEYS[i + 2], 'status')
  if status and not END_STATES[status] then open = open + 1 end
end
local old = tonumber(redis.call('HGET', KEYS[1], 'open_chunks')) or 0
if old ~= open then
  redis.call('HSET', KEYS[1], 'open_chunks', open, 'updated_ms', now_ms())
end
return {'ok', old, open, finalizable(KEYS[1])}
