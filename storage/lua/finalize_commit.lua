-- Commit a finalization: only the claim holder, only if nothing changed since it read the
-- chunks (same final_gen, still finished, no open chunk). storage/lua/_prelude.lua is prepended.
-- KEYS[1] conversation hash. ARGV[1] token, ARGV[2] gen, then field, value, ...
-- Returns {'ok', finalized_ms} | {'stale', gen_now} | {'lost'} | {'done'} | {'no_conversation'}
local v = redis.call('HMGET', KEYS[1], 'id', 'finalized_ms', 'final_gen', 'final_claim')
if not v[1] then return {'no_conversation'} end
if v[4] ~= ARGV[1] then return {'lost'} end
if v[2] then
  redis.call('HDEL', KEYS[1], 'final_claim', 'final_claim_until_ms')
  return {'done'}
end
local gen = tonumber(v[3]) or 0
if finalizable(KEYS[1]) == 0 or gen ~= tonumber(ARGV[2]) then
  redis.call('HDEL', KEYS[1], 'final_claim', 'final_claim_until_ms')
  return {'stale', gen}
end
local now = now_ms()
hset_pairs(KEYS[1], ARGV, 3)
redis.call('HSET', KEYS[1], 'is_all_chunks_transcribed', '1', 'finalized_ms', now,
  'updated_ms', now, 'final_done_gen', gen, 'final_done_token', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'finalizations', 1)
redis.call('HDEL', KEYS[1], 'final_claim', 'final_claim_until_ms')
return {'ok', now}
