-- Take an idle-set entry for one sweep: move its score to ARGV[3] only if it is still
-- ARGV[2] (what this sweeper read), so concurrent sweepers never take the same entry
-- at once. The new score hides it from every sweep until the taker forgets it (after
-- publishing) or, if the taker failed, until the retry time comes.
-- KEYS[1] idle zset. ARGV[1] conversation id, ARGV[2] score read, ARGV[3] new score.
-- Returns 1 (taken) | 0 (moved or removed meanwhile)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
