-- Remove a delivered (ARGV[4] "done") or buried ("bury") event and make
-- its tenant's next event due (outbox_redis.go).
-- KEYS[1] event hash, KEYS[2] tenant queue, KEYS[3] due zset, KEYS[4]
-- queued zset, KEYS[5] dead zset, KEYS[6] the tenant's recent outcomes.
-- ARGV[1] id, ARGV[2] claim token, ARGV[3] now (ms), ARGV[4] mode,
-- ARGV[5] last error (bury), ARGV[6] the outcome record, ARGV[7] how many
-- outcomes to keep.
-- Returns 1, or 0 when the caller's claim is no longer the event's.
if redis.call('HGET', KEYS[1], 'k') ~= ARGV[2] then
  return 0
end
if ARGV[4] == 'bury' then
  redis.call('HINCRBY', KEYS[1], 'a', 1)
  redis.call('HSET', KEYS[1], 'd', ARGV[3], 'e', ARGV[5])
  redis.call('HDEL', KEYS[1], 'k')
  redis.call('ZADD', KEYS[5], ARGV[3], ARGV[1])
else
  redis.call('DEL', KEYS[1])
end
redis.call('LREM', KEYS[2], 1, ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('LPUSH', KEYS[6], ARGV[6])
redis.call('LTRIM', KEYS[6], 0, tonumber(ARGV[7]) - 1)
local head = redis.call('LINDEX', KEYS[2], 0)
if head then
  redis.call('ZADD', KEYS[3], 'NX', ARGV[3], head)
end
return 1
