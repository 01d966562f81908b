-- Before each transcript write: is the claim still ours and the generation unchanged? If so
-- renew the claim, so that no other finalizer can claim (and write) while this write runs.
-- storage/lua/_prelude.lua is prepended.
-- KEYS[1] conversation hash. ARGV[1] token, ARGV[2] gen, ARGV[3] claim_ms.
-- Returns {'ok'} | {'stale', gen_now} (claim released) | {'lost'} | {'done'}
--   | {'no_conversation'}
local v = redis.call('HMGET', KEYS[1], 'id', 'finalized_ms', 'final_gen', 'final_claim')
if not v[1] then return {'no_conversation'} end
if v[4] ~= ARGV[1] then return {'lost'} end
if v[2] then return {'done'} end
local gen = tonumber(v[3]) or 0
if finalizable(KEYS[1]) == 0 or gen ~= tonumber(ARGV[2]) then
  -- Released as finalize_commit.lua does: the finalizer of the new generation must not
  -- find this claim busy.
  redis.call('HDEL', KEYS[1], 'final_claim', 'final_claim_until_ms')
  return {'stale', gen}
end
redis.call('HSET', KEYS[1], 'final_claim_until_ms', now_ms() + tonumber(ARGV[3]))
return {'ok'}
