-- KEYS[1]: sorted set of grant times (score = Redis TIME in us, member unique).
-- ARGV[1]: limit, ARGV[2]: window in microseconds, ARGV[3]: unique member suffix.
-- (storage/ratelimit.py prepends _sliding_window_fn.lua.)
return sliding_window(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3])
