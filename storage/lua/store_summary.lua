-- Store a conversation's summary if it is for the conversation's current generation, and drop
-- the draft it was kept as (storage/lua/summary_draft.lua) if it is of this generation or an
-- older one (storage/lua/_prelude.lua is prepended; nothing of it is used).
-- KEYS: 1 conversation hash. ARGV: 1 generation, 2 summary, 3 provider, 4 model, 5 s3 key.
-- Returns 'ok', 'already' (this generation has its summary), 'stale' or 'no_conversation'.
local function drop_draft()
  local draft = tonumber(redis.call('HGET', KEYS[1], 'summary_draft_gen'))
  if draft and draft <= tonumber(ARGV[1]) then
    redis.call('HDEL', KEYS[1], 'summary_draft_gen', 'summary_draft', 'summary_draft_provider',
      'summary_draft_model', 'summary_draft_created_at')
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 'no_conversation'
end
local current = redis.call('HGET', KEYS[1], 'final_gen') or '0'
if current ~= ARGV[1] then
  return 'stale'
end
if redis.call('HGET', KEYS[1], 'summary_gen') == ARGV[1] then
  drop_draft()
  return 'already'
end
redis.call('HSET', KEYS[1], 'summary', ARGV[2], 'summary_gen', ARGV[1],
  'summary_provider', ARGV[3], 'summary_model', ARGV[4], 'summary_key', ARGV[5])
drop_draft()
return 'ok'
