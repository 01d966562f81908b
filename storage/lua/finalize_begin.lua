-- Claim the finalization of a conversation (storage/lua/_prelude.lua is prepended).
-- KEYS[1] conversation hash. ARGV[1] token (the finalize event's stream entry id: stable
-- across its redeliveries), ARGV[2] claim_ms.
-- Returns {'claimed', gen} | {'busy', gen} (another live claim) | {'done', gen, done_token,
--   summary_requested_gen} | {'not_ready', gen} | {'no_conversation'}
local v = redis.call('HMGET', KEYS[1], 'id', 'finalized_ms', 'final_gen', 'final_claim',
  'final_claim_until_ms', 'final_done_token', 'summary_requested_gen', 'final_done_gen')
if not v[1] then return {'no_conversation'} end
local gen = tonumber(v[3]) or 0
if v[2] then return {'done', tonumber(v[8]) or gen, v[6] or '', v[7] or ''} end
if finalizable(KEYS[1]) == 0 then return {'not_ready', gen} end
local now = now_ms()
if v[4] and v[4] ~= ARGV[1] and (tonumber(v[5]) or 0) > now then return {'busy', gen} end
redis.call('HSET', KEYS[1], 'final_claim', ARGV[1], 'final_claim_until_ms',
  now + tonumber(ARGV[2]))
return {'claimed', gen}
