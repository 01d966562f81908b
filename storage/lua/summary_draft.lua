-- Keep a generation's summary as soon as the model produced it, before its S3 copy is
-- written, so that a redelivery after a failed write reuses it rather than calling the model
-- again (storage/lua/_prelude.lua is prepended; nothing of it is used).
-- KEYS: 1 conversation hash. ARGV: 1 generation, 2 summary, 3 provider, 4 model,
--   5 created_at (epoch seconds).
-- Returns {'ok', summary, provider, model, created_at}: the draft now kept for the generation
-- (an earlier draft of the same generation wins, so every writer writes the same summary);
-- or {'already'} (the generation has its summary), {'stale'} or {'no_conversation'}.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'no_conversation'}
end
local v = redis.call('HMGET', KEYS[1], 'final_gen', 'summary_gen', 'summary_draft_gen',
  'summary_draft', 'summary_draft_provider', 'summary_draft_model', 'summary_draft_created_at')
if (v[1] or '0') ~= ARGV[1] then
  return {'stale'}
end
if v[2] == ARGV[1] then
  return {'already'}
end
if v[3] == ARGV[1] then
  return {'ok', v[4] or '', v[5] or '', v[6] or '', v[7] or '0'}
end
redis.call('HSET', KEYS[1], 'summary_draft_gen', ARGV[1], 'summary_draft', ARGV[2],
  'summary_draft_provider', ARGV[3], 'summary_draft_model', ARGV[4],
  'summary_draft_created_at', ARGV[5])
return {'ok', ARGV[2], ARGV[3], ARGV[4], ARGV[5]}
