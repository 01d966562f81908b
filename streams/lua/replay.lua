-- Replay one dead letter: re-publish its event to its stream and delete the letter, atomically.
-- KEYS: stream, dead-letter stream (one hash tag: one slot)
-- ARGV: dead-letter id, stream maxlen (safety cap)
-- Returns the new entry id; 0 if there is no such dead letter (never replayed twice);
-- -1 if the letter holds no event (its entry was gone when it was dead-lettered).
local letter = redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[1])
if #letter == 0 then return 0 end
local fields = {}
local flat = letter[1][2]
for i = 1, #flat, 2 do
  local name, value = flat[i], flat[i + 1]
  if string.sub(name, 1, 5) ~= 'dead_' then
    -- A fresh run: the deferral count of the run that ended starts again from 0.
    if name == 'attempt' then value = '0' end
    table.insert(fields, name)
    table.insert(fields, value)
  end
end
if #fields == 0 then return -1 end
local new_id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(fields))
redis.call('XDEL', KEYS[2], ARGV[1])
return new_id
