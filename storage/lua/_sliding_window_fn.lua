-- Sliding-log rate limit as a function, shared by sliding_window.lua and
-- issue_chunk_limited.lua: at most `limit` grants in any `window_us` window.
-- Returns {allowed (0|1), remaining, reset_us, retry_after_us}. Redis TIME only;
-- a refused attempt writes nothing, so it does not consume quota.
local function sliding_window(key, limit, window_us, member_suffix)
  local t = redis.call('TIME')
  local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now_us - window_us)
  local count = redis.call('ZCARD', key)
  local allowed = 0
  if count < limit then
    redis.call('ZADD', key, now_us, now_us .. ':' .. member_suffix)
    redis.call('PEXPIRE', key, math.ceil(window_us / 1000) + 1000)
    count = count + 1
    allowed = 1
  end
  local reset_us = 0
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if oldest[2] then
    reset_us = tonumber(oldest[2]) + window_us - now_us
  end
  local retry_after_us = 0
  if allowed == 0 then retry_after_us = reset_us end
  return {allowed, limit - count, reset_us, retry_after_us}
end
