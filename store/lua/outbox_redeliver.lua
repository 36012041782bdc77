-- Make one event due now (outbox_redis.go): a dead letter goes back to the
-- end of its tenant's queue; a queued event waiting for a retry is due at
-- once.
-- KEYS[1] event hash, KEYS[2] tenant queue, KEYS[3] due zset, KEYS[4]
-- queued zset, KEYS[5] dead zset.
-- ARGV[1] id, ARGV[2] now (ms).
-- Returns 1 when moved, 0 when queued but nothing to do (leased, or
-- already due, or behind another event), -1 when neither queued nor dead.
if redis.call('ZSCORE', KEYS[5], ARGV[1]) then
  redis.call('ZREM', KEYS[5], ARGV[1])
  redis.call('HSET', KEYS[1], 'a', 0, 'n', ARGV[2], 'd', 0, 'e', '')
  redis.call('HDEL', KEYS[1], 'k')
  redis.call('RPUSH', KEYS[2], ARGV[1])
  redis.call('ZADD', KEYS[4], redis.call('HGET', KEYS[1], 'c'), ARGV[1])
  if redis.call('LLEN', KEYS[2]) == 1 then
    redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
  end
  return 1
end
if redis.call('ZSCORE', KEYS[4], ARGV[1]) then
  local s = redis.call('ZSCORE', KEYS[3], ARGV[1])
  if s and not redis.call('HGET', KEYS[1], 'k') and tonumber(s) > tonumber(ARGV[2]) then
    redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
    redis.call('HSET', KEYS[1], 'n', ARGV[2])
    return 1
  end
  return 0
end
return -1
