-- Lease one due event (outbox_redis.go). Only a tenant's first queued
-- event is in the due zset; its score is when it is due, or when the
-- current lease ends.
-- KEYS[1] due zset, KEYS[2] event hash.
-- ARGV[1] id, ARGV[2] now (ms), ARGV[3] lease end (ms), ARGV[4] claim token.
-- Returns the event hash's fields and values, or false when it is no
-- longer due (another caller claimed it first) or gone.
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s or tonumber(s) > tonumber(ARGV[2]) then
  return false
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return false
end
redis.call('HSET', KEYS[2], 'k', ARGV[4])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return redis.call('HGETALL', KEYS[2])
