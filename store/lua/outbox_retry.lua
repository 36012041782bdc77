-- Record a failed attempt and schedule the next (outbox_redis.go).
-- KEYS[1] event hash, KEYS[2] due zset.
-- ARGV[1] id, ARGV[2] claim token, ARGV[3] next attempt (ms), ARGV[4]
-- last error.
-- Returns 1, or 0 when the caller's claim is no longer the event's.
if redis.call('HGET', KEYS[1], 'k') ~= ARGV[2] then
  return 0
end
redis.call('HINCRBY', KEYS[1], 'a', 1)
redis.call('HSET', KEYS[1], 'n', ARGV[3], 'e', ARGV[4])
redis.call('HDEL', KEYS[1], 'k')
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
