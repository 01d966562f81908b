-- Prepended to every conversation-store script (see storage/store_core.py).
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local END_STATES = {transcribed = true, failed = true}
local function hset_pairs(key, argv, first)
  if #argv >= first then
    redis.call('HSET', key, unpack(argv, first))
  end
end
-- finished, no chunk still on its way, not yet finalized
local function finalizable(conv)
  local v = redis.call('HMGET', conv, 'is_finished', 'open_chunks', 'finalized_ms')
  return (v[1] == '1' and (tonumber(v[2]) or 0) <= 0 and not v[3]) and 1 or 0
end
-- A chunk is being listed (or deleted: delete_chunk.lua): a finalized conversation re-opens
-- (it is finalized again once the chunk ends, or at once after a deletion), and final_gen
-- moves on, so a finalizer that read an older set of chunks cannot commit
-- (finalize_commit.lua). was_finalized: the conversation's
-- finalized_ms as read by the caller.
local function list_new_chunk(conv, was_finalized, now)
  if was_finalized then
    redis.call('HDEL', conv, 'finalized_ms')
    redis.call('HSET', conv, 'is_all_chunks_transcribed', '0', 'reopened_ms', now)
  end
  redis.call('HINCRBY', conv, 'final_gen', 1)
end
